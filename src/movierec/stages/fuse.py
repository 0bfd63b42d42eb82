"""fuse: user and item feature vectors for the factorization model.

User vector: demographics (one-hot / scaled), sentiment profile (mean, spread and count
of the user's review sentiment), social graph features, activity. Item vector: genres
(multi-hot), year, crowd sentiment, popularity. Statistics come from the training part
only: reviews on (user, movie) pairs of the test part are left out, so no test rating
leaks through its review. scikit-learn transformers are fitted here and returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer, OneHotEncoder, StandardScaler

from movierec.config import FeaturesConfig


@dataclass
class FuseResult:
    user_features: np.ndarray  # n_users x d_u, float32
    item_features: np.ndarray  # n_items x d_i, float32
    user_names: list[str]
    item_names: list[str]
    transformers: dict


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
        key = test_pairs["user_idx"].astype(np.int64) * (1 << 32) + test_pairs["movie_idx"].astype(np.int64)
        rk = rs["user_idx"].astype(np.int64) * (1 << 32) + rs["movie_idx"].astype(np.int64)
        rs = rs[~rk.isin(set(key.to_numpy()))]
    return rs


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
) -> FuseResult:
    """Build the feature matrices; see the module docstring for what goes in."""
    n_users, n_items = len(users), len(movies)
    rs = _visible_reviews(review_sentiment, test_pairs) if cfg.use_sentiment else None

    # ---- users
    u = pd.DataFrame({"user_idx": np.arange(n_users)})
    parts: list[tuple] = []
    cnt = np.bincount(train["user_idx"], minlength=n_users)
    u["activity"] = np.log1p(cnt)
    num_cols = ["activity"]
    if cfg.use_demographics:
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
    if rs is not None:
        g = rs.groupby("user_idx")["sentiment"]
        prof = pd.DataFrame({"sent_mean": g.mean(), "sent_std": g.std().fillna(0.0), "sent_count": np.log1p(g.size())})
        u = u.merge(prof, left_on="user_idx", right_index=True, how="left")
        u[["sent_std", "sent_count"]] = u[["sent_std", "sent_count"]].fillna(0.0)
        u["sent_mean"] = u["sent_mean"].fillna(0.0)
        num_cols += ["sent_mean", "sent_std", "sent_count"]
    if cfg.use_social and social_features is not None and len(social_features):
        sf = social_features.set_index("user_idx").reindex(u["user_idx"])
        u["soc_in"] = np.log1p(sf["in_degree"].to_numpy())
        u["soc_out"] = np.log1p(sf["out_degree"].to_numpy())
        u["soc_pagerank"] = np.log(sf["pagerank"].clip(lower=1e-6).to_numpy())
        u["soc_clustering"] = sf["clustering"].to_numpy()
        u["soc_community"] = sf["community"].astype(str).to_numpy()
        num_cols += ["soc_in", "soc_out", "soc_pagerank", "soc_clustering"]
        parts.append(("community", OneHotEncoder(handle_unknown="ignore", max_categories=cfg.max_categories,
                                                 sparse_output=False), ["soc_community"]))
    user_ct = ColumnTransformer([_scaled(num_cols), *parts], remainder="drop", sparse_threshold=0.0)
    X = user_ct.fit_transform(u).astype(np.float32)

    # ---- items
    m = pd.DataFrame({"movie_idx": np.arange(n_items)})
    m["popularity"] = np.log1p(np.bincount(train["movie_idx"], minlength=n_items))
    item_num = ["popularity"]
    mlb = None
    genre_mat = np.zeros((n_items, 0), dtype=np.float32)
    if cfg.use_genres:
        m["year"] = pd.to_numeric(movies["year"], errors="coerce").to_numpy()
        if m["year"].notna().any():
            item_num.append("year")
        genres = movies["genres"].fillna("").map(lambda g: [x for x in g.split("|") if x])
        if genres.map(len).sum():
            mlb = MultiLabelBinarizer()
            genre_mat = mlb.fit_transform(genres).astype(np.float32)
    if rs is not None:
        g = rs.groupby("movie_idx")["sentiment"]
        crowd = pd.DataFrame({"crowd_sentiment": g.mean(), "crowd_count": np.log1p(g.size())})
        m = m.merge(crowd, left_on="movie_idx", right_index=True, how="left")
        m["crowd_count"] = m["crowd_count"].fillna(0.0)
        item_num += ["crowd_sentiment", "crowd_count"]
    item_ct = ColumnTransformer([_scaled(item_num)], remainder="drop", sparse_threshold=0.0)
    Y = np.hstack([item_ct.fit_transform(m).astype(np.float32), genre_mat])

    item_names = list(item_ct.get_feature_names_out()) + [f"genre_{g}" for g in (mlb.classes_ if mlb is not None else [])]
    return FuseResult(
        user_features=np.nan_to_num(X),
        item_features=np.nan_to_num(Y),
        user_names=list(user_ct.get_feature_names_out()),
        item_names=item_names,
        transformers={"user": user_ct, "item": item_ct, "genres": mlb},
    )
