"""fuse: user and item feature vectors for the factorization model.

User vector: demographics (one-hot / scaled), sentiment profile (mean, spread and count
of the user's review sentiment; per genre with ``features.sentiment_per_genre``), social
graph features, activity. Item vector: genres (multi-hot), year, crowd sentiment,
popularity. Statistics come from the training part only: reviews on (user, movie) pairs
of the test part are left out, so no test rating leaks through its review. By default
the sentiment features also leave out reviews whose pair has a training rating: such a
review repeats its rating, and a feature that restates a user's few training ratings
is trusted more than it deserves (it cost users with < 5 ratings 0.01 RMSE on the demo, 0.11 on rt-critics,
benchmarks/results/sentiment_ablation.md). scikit-learn transformers are fitted here
and returned as plain numbers (:func:`transformer_spec`: names, medians, means, scales,
categories), never pickled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from movierec.config import FeaturesConfig
from movierec.data.schemas import genre_matrix, pair_key

log = logging.getLogger(__name__)


CLIP = 5.0  # standardised features are clipped to [-CLIP, CLIP]
#: a sentiment feature known for fewer users (items) than this share is left out: standardised,
#: the few who have it get extreme values and everybody else a constant
MIN_COVERAGE = 0.05


@dataclass
class FuseResult:
    user_features: np.ndarray  # n_users x d_u, float32
    item_features: np.ndarray  # n_items x d_i, float32
    user_names: list[str]
    item_names: list[str]
    transformers: dict  # JSON-ready: see transformer_spec


def transformer_spec(ct: ColumnTransformer) -> list[dict]:
    """What a fitted ColumnTransformer learned, as JSON-ready numbers and names (no pickle):
    per block its input columns, the imputer's fill values, the scaler's means and scales,
    and the one-hot encoder's categories (the infrequent ones grouped as one)."""

    def plain(values) -> list:
        out = []
        for v in np.asarray(values, dtype=object).tolist():
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            out.append(v.item() if hasattr(v, "item") else v)
        return out

    blocks = []
    for name, est, cols in ct.transformers_:
        if name == "remainder" or isinstance(est, str) or not len(cols):  # no columns: nothing was fitted
            continue
        entry: dict = {"name": name, "columns": [str(c) for c in cols]}
        for step in getattr(est, "steps", [(name, est)]):
            s = step[1]
            if isinstance(s, SimpleImputer):
                entry["fill"] = plain(s.statistics_)
            elif isinstance(s, StandardScaler):
                entry["mean"], entry["scale"] = plain(s.mean_), plain(s.scale_)
            elif isinstance(s, OneHotEncoder):
                entry["categories"] = [plain(c) for c in s.categories_]
                infrequent = getattr(s, "infrequent_categories_", None)
                if infrequent is not None:
                    entry["infrequent"] = [None if c is None else plain(c) for c in infrequent]
        blocks.append(entry)
    return blocks


def _numeric_like(s: pd.Series) -> bool:
    v = pd.to_numeric(s.dropna(), errors="coerce")
    return len(v) > 0 and v.notna().mean() > 0.95


def _visible_reviews(
    review_sentiment: pd.DataFrame | None, test_pairs: pd.DataFrame | None
) -> pd.DataFrame | None:
    """Review sentiment without reviews on test (user, movie) pairs."""
    if review_sentiment is None or review_sentiment.empty:
        return None
    rs = review_sentiment
    if test_pairs is not None and len(test_pairs):
        rs = rs[~np.isin(pair_key(rs), pair_key(test_pairs))]
    return rs


def per_genre_mean(users: np.ndarray, items: np.ndarray, values: np.ndarray, genre_mat: np.ndarray,
                   n_users: int, prior: np.ndarray | None = None, strength: float = 2.0) -> np.ndarray:
    """users x genres: each user's mean value over the movies of each genre, shrunk toward
    ``prior`` (per user; 0 when absent) with ``strength`` pseudo-observations."""
    import scipy.sparse as sp

    M = sp.csr_matrix((values.astype(np.float64), (users, items)), shape=(n_users, genre_mat.shape[0]))
    C = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, genre_mat.shape[0]))
    sums = np.asarray(M @ genre_mat)
    counts = np.asarray(C @ genre_mat)
    p = np.zeros((n_users, 1)) if prior is None else np.asarray(prior, np.float64).reshape(-1, 1)
    return ((sums + strength * p) / (counts + strength)).astype(np.float32)


def neighbourhood_taste(train: pd.DataFrame, neighbours: pd.DataFrame, genre_mat: np.ndarray,
                        n_users: int) -> np.ndarray:
    """users x genres: how the user's neighbours rate each genre, relative to their own mean
    (strength-weighted over neighbours; training ratings only)."""
    import scipy.sparse as sp

    u = train["user_idx"].to_numpy()
    r = train["rating"].to_numpy(np.float64)
    mean_u = np.bincount(u, weights=r, minlength=n_users) / np.maximum(np.bincount(u, minlength=n_users), 1)
    own = per_genre_mean(u, train["movie_idx"].to_numpy(), (r - mean_u[u]).astype(np.float32), genre_mat, n_users)
    S = sp.csr_matrix((neighbours["strength"].to_numpy(np.float64),
                       (neighbours["user_idx"].to_numpy(), neighbours["neighbour_idx"].to_numpy())),
                      shape=(n_users, n_users))
    return np.asarray(S @ own, dtype=np.float32)


def _informative(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """Numeric columns that vary: scaling a (near-)constant column to unit variance would only
    blow its rounding noise up into a feature (and several such columns move together)."""
    keep = []
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce")
        if v.notna().any() and float(v.std(skipna=True) or 0.0) > 1e-6 * (1.0 + abs(float(v.mean(skipna=True)))):
            keep.append(c)
    return keep


def _robust(df: pd.DataFrame, cols: list[str], what: str) -> tuple[pd.DataFrame, dict]:
    """Numeric feature columns made safe to scale, in place: a non-finite value (inf, or a
    number past float range) becomes missing (imputed like any other), a value beyond the
    column's fence (:func:`_feature_fence`) is clipped to it. Returns the frame
    to fit the scalers on (values beyond the fence missing there, so one absurd age moves
    no other user's scaled age) and the fences, by column."""
    fit = df
    fences: dict[str, list[float]] = {}
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        bad = ~np.isfinite(v) & ~np.isnan(v)
        if bad.any():
            v = np.where(bad, np.nan, v)
            log.warning("fuse: %s feature %s: %d non-finite values treated as missing", what, c, int(bad.sum()))
        lo, hi = _feature_fence(v)
        with np.errstate(invalid="ignore"):
            out = (v < lo) | (v > hi)
        if out.any():
            log.warning("fuse: %s feature %s: %d extreme values clipped to %.6g..%.6g", what, c, int(out.sum()), lo, hi)
            if fit is df:
                fit = df.copy()
            fit[c] = np.where(out, np.nan, v)
            v = np.clip(v, lo, hi)
        elif fit is not df:
            fit[c] = v
        df[c] = v
        if np.isfinite(lo) and np.isfinite(hi):
            fences[c] = [float(lo), float(hi)]
    return fit, fences


def _feature_fence(v: np.ndarray) -> tuple[float, float]:
    """Where a feature's values stop being plausible: ten times the 1%..99% range beyond it.
    Wide on purpose: a feature may be concentrated (most users' review spread is 0) with a
    legitimate tail, and only an absurd value (an age of 1e30) must be stopped; the ratings'
    tighter :func:`~movierec.data.scale.outlier_fence` clipped 13% of the demo's users'
    sentiment spread."""
    v = v[np.isfinite(v)]
    if not len(v):
        return -np.inf, np.inf
    lo, hi = np.quantile(v, [0.01, 0.99])
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return float(lo - 10 * span), float(hi + 10 * span)


def _fit_scaled(ct: ColumnTransformer, df: pd.DataFrame, fit: pd.DataFrame) -> np.ndarray:
    """``ct`` fitted on ``fit`` (the values within the fences), applied to ``df``; clipped to
    [-CLIP, CLIP] standard deviations."""
    X = ct.fit_transform(fit)  # (fit_transform, not fit: a transformer with no columns is skipped alike)
    if fit is not df:
        X = ct.transform(df)
    return np.clip(np.asarray(X, dtype=np.float32), -CLIP, CLIP)


def _scaled(cols: list[str]) -> tuple:
    return ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), cols)


def fuse(
    users: pd.DataFrame,
    movies: pd.DataFrame,
    train: pd.DataFrame,
    review_sentiment: pd.DataFrame | None,
    social_features: pd.DataFrame | None,
    test_pairs: pd.DataFrame | None,
    cfg: FeaturesConfig,
    neighbours: pd.DataFrame | None = None,
) -> FuseResult:
    """Build the feature matrices; see the module docstring for what goes in."""
    n_users, n_items = len(users), len(movies)
    rs = _visible_reviews(review_sentiment, test_pairs) if cfg.use_sentiment else None
    if rs is not None and not cfg.sentiment_from_rated:
        rs = rs[~np.isin(pair_key(rs), pair_key(train))]
    genre_names, genre_mat = genre_matrix(movies) if cfg.use_genres else ([], np.zeros((n_items, 0), np.float32))

    # ---- users
    u = pd.DataFrame({"user_idx": np.arange(n_users)})
    u["activity"] = np.log1p(np.bincount(train["user_idx"], minlength=n_users))
    num_cols = ["activity"]
    parts: list[tuple] = []
    if cfg.use_demographics:
        _demographics(u, users, cfg, num_cols, parts)
    if rs is not None and rs["user_idx"].nunique() >= MIN_COVERAGE * n_users:
        _sentiment_profile(u, rs, genre_names, genre_mat if cfg.sentiment_per_genre else None, num_cols)
    if cfg.use_social and social_features is not None and len(social_features):
        _social_columns(u, social_features, train, neighbours, genre_names, genre_mat, num_cols)
        parts.append(("community", OneHotEncoder(handle_unknown="ignore", max_categories=cfg.max_categories,
                                                 sparse_output=False), ["soc_community"]))
    u_fit, user_fences = _robust(u, num_cols, "user")
    num_cols = _informative(u_fit, num_cols)
    user_ct = ColumnTransformer([_scaled(num_cols), *parts], remainder="drop", sparse_threshold=0.0)
    # standardised values far out (a rare user with a long review history) make huge SGD
    # steps on the projections: winsorise at 5 standard deviations
    X = _fit_scaled(user_ct, u, u_fit)

    # ---- items
    m = pd.DataFrame({"movie_idx": np.arange(n_items)})
    # a movie without training ratings has an unknown popularity (imputed), not a popularity
    # of zero: a new release is not an obscure film, and zero put every new movie's predicted
    # rating 0.7 stars low on MovieLens (cold_items split, benchmarks/results/cold_start.md)
    count = np.bincount(train["movie_idx"], minlength=n_items)
    m["popularity"] = np.where(count > 0, np.log1p(count), np.nan)
    item_num = ["popularity"]
    if cfg.use_genres:
        m["year"] = pd.to_numeric(movies["year"], errors="coerce").to_numpy()
        if m["year"].notna().any():
            item_num.append("year")
    if rs is not None and rs["movie_idx"].nunique() >= MIN_COVERAGE * n_items:
        g = rs.groupby("movie_idx")["sentiment"]
        crowd = pd.DataFrame({"crowd_sentiment": g.mean(), "crowd_count": np.log1p(g.size())})
        m = m.merge(crowd, left_on="movie_idx", right_index=True, how="left")
        m["crowd_count"] = m["crowd_count"].fillna(0.0)
        item_num += ["crowd_sentiment", "crowd_count"]
    m_fit, item_fences = _robust(m, item_num, "item")
    item_ct = ColumnTransformer([_scaled(_informative(m_fit, item_num))], remainder="drop", sparse_threshold=0.0)
    Y = np.hstack([_fit_scaled(item_ct, m, m_fit), genre_mat])

    item_names = list(item_ct.get_feature_names_out()) + [f"genre_{g}" for g in genre_names]
    return FuseResult(
        user_features=np.nan_to_num(X),
        item_features=np.nan_to_num(Y),
        user_names=list(user_ct.get_feature_names_out()),
        item_names=item_names,
        transformers={"user": transformer_spec(user_ct), "item": transformer_spec(item_ct),
                      "user_names": list(user_ct.get_feature_names_out()), "item_names": item_names,
                      "genres": genre_names, "fences": {"user": user_fences, "item": item_fences}},
    )


def _demographics(u: pd.DataFrame, users: pd.DataFrame, cfg: FeaturesConfig, num_cols: list, parts: list) -> None:
    """users.csv columns: numbers as they are, categories one-hot (``parts``)."""
    cols = cfg.user_columns or [c for c in users.columns if c != "user_idx"]
    cat_cols = []
    for c in cols:
        if c not in users.columns:
            continue
        if _numeric_like(users[c]):
            u[f"demo_{c}"] = pd.to_numeric(users[c], errors="coerce").to_numpy()
            num_cols.append(f"demo_{c}")
        else:
            u[f"demo_{c}"] = users[c].fillna("missing").astype(str).to_numpy()
            cat_cols.append(f"demo_{c}")
    if cat_cols:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", max_categories=cfg.max_categories,
                                           sparse_output=False), cat_cols))


def _sentiment_profile(u: pd.DataFrame, rs: pd.DataFrame, genre_names: list, genre_mat: np.ndarray | None,
                       num_cols: list) -> None:
    """Each user's review sentiment: mean, spread, count (and per genre, with ``genre_mat``)."""
    g = rs.groupby("user_idx")["sentiment"]
    prof = pd.DataFrame({"sent_mean": g.mean(), "sent_std": g.std().fillna(0.0), "sent_count": np.log1p(g.size())})
    merged = u.merge(prof, left_on="user_idx", right_index=True, how="left")
    for c in ("sent_mean", "sent_std", "sent_count"):
        u[c] = merged[c].fillna(0.0).to_numpy()
    num_cols += ["sent_mean", "sent_std", "sent_count"]
    if genre_mat is not None and genre_mat.shape[1]:
        per_genre = per_genre_mean(rs["user_idx"].to_numpy(), rs["movie_idx"].to_numpy(),
                                   rs["sentiment"].to_numpy(np.float32), genre_mat, len(u),
                                   prior=u["sent_mean"].to_numpy(np.float32))
        cols = [f"sent_genre_{g}" for g in genre_names]
        u[cols] = per_genre
        num_cols += cols


def _social_columns(u: pd.DataFrame, social_features: pd.DataFrame, train: pd.DataFrame,
                    neighbours: pd.DataFrame | None, genre_names: list, genre_mat: np.ndarray, num_cols: list) -> None:
    """Graph features (degrees, PageRank, clustering, community, two-hop trust) and the
    neighbourhood's genre taste."""
    sf = social_features.set_index("user_idx").reindex(u["user_idx"])
    u["soc_in"] = np.log1p(sf["in_degree"].to_numpy())
    u["soc_out"] = np.log1p(sf["out_degree"].to_numpy())
    u["soc_pagerank"] = np.log(sf["pagerank"].clip(lower=1e-6).to_numpy())
    u["soc_clustering"] = sf["clustering"].to_numpy()
    u["soc_community"] = sf["community"].astype(str).to_numpy()
    num_cols += ["soc_in", "soc_out", "soc_pagerank", "soc_clustering"]
    if "trust_2hop" in sf.columns:
        u["soc_trust_2hop"] = np.log1p(sf["trust_2hop"].to_numpy())
        u["soc_reach_2hop"] = np.log1p(sf["reach_2hop"].to_numpy())
        num_cols += ["soc_trust_2hop", "soc_reach_2hop"]
    if neighbours is not None and len(neighbours) and genre_mat.shape[1]:
        cols = [f"nb_taste_{g}" for g in genre_names]
        u[cols] = neighbourhood_taste(train, neighbours, genre_mat, len(u))
        num_cols += cols
