"""clean: dedupe, normalise, map ids to dense integers, assign the train/test split.

The split is stored as a ``fold`` column on the ratings: for ``kfold`` it is the fold
number (0..folds-1); otherwise test rows have fold 0 and training rows fold -1 (with
``none`` every row is training). :func:`train_test` selects the parts for one fold.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from movierec.config import Config
from movierec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class CleanResult:
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)


def _dedupe(frame: pd.DataFrame, n_items: int) -> tuple[pd.DataFrame, int]:
    """Latest rating of a (user, movie) wins: by timestamp, then by position in the file.

    Works on the integer codes; a file without duplicates (the usual case) costs one hash
    table of the (user, movie) keys (half a sort's time).
    """
    key = frame["user_idx"].to_numpy(np.int64) * n_items + frame["movie_idx"].to_numpy(np.int64)
    if pd.Index(key).is_unique:
        return frame, 0
    pos = np.arange(len(frame))
    if "timestamp" in frame.columns:
        ts = frame["timestamp"].to_numpy(np.float64)
        order = np.lexsort((pos, np.where(np.isnan(ts), -np.inf, ts), key))
    else:
        order = np.lexsort((pos, key))
    ks = key[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = ks[1:] != ks[:-1]
    keep = np.sort(order[last])
    return frame.iloc[keep].reset_index(drop=True), len(frame) - len(keep)


def _uniques(s: pd.Series) -> np.ndarray:
    if isinstance(s.dtype, pd.CategoricalDtype):  # 20M rows: look at the categories only
        codes = s.cat.codes.to_numpy()
        used = np.bincount(codes[codes >= 0], minlength=len(s.cat.categories)) > 0
        return np.asarray(s.cat.categories[used].astype(str), dtype=object)
    return np.asarray(s.astype(str).unique(), dtype=object)


def _index(values: list[pd.Series]) -> pd.Index:
    allv = np.concatenate([_uniques(v) for v in values if v is not None])
    return pd.Index(np.sort(pd.unique(allv)), name="id")


class IdCodes:
    """Some ids' dense indices where the whole id index is not at hand (Ray's clean numbers
    the viewers range by range in its workers; the driver knows the dense index of the ids
    its own tables name): ``get_indexer`` as a :class:`pandas.Index`'s, -1 for an unknown id."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray) -> None:
        self.index = pd.Index(np.asarray(ids, dtype=object))
        self.codes = np.asarray(codes, np.int64)

    def get_indexer(self, values) -> np.ndarray:
        at = self.index.get_indexer(values)
        return np.where(at >= 0, self.codes[np.maximum(at, 0)] if len(self.codes) else -1, -1)


def _codes(index: pd.Index | IdCodes, s: pd.Series) -> np.ndarray:
    """Dense integer of each id in ``s`` (categorical: via its categories)."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cat_idx = index.get_indexer(s.cat.categories.astype(str))
        codes = s.cat.codes.to_numpy()
        return np.where(codes >= 0, cat_idx[np.maximum(codes, 0)], -1).astype(np.int32)
    return index.get_indexer(s.astype(str)).astype(np.int32)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of 64-bit integers."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def pair_hash(user_idx: np.ndarray, movie_idx: np.ndarray, user_ids: pd.Index, movie_ids: pd.Index,
              seed: int) -> np.ndarray:
    """A stable 64-bit hash of each (user_id, movie_id) pair under ``seed``.

    Random and k-fold splits are decided by it, so a rating stays in the same part when
    new data arrives: a nightly refresh compares models on a holdout neither trained on.
    The id strings are hashed once each (not once per rating), then combined per rating.
    """
    key = f"movierec{seed:08d}"[-16:]
    hu = pd.util.hash_array(np.asarray(user_ids, dtype=object), hash_key=key)
    hm = pd.util.hash_array(np.asarray(movie_ids, dtype=object), hash_key=key[::-1])
    with np.errstate(over="ignore"):
        return _mix64(hu[user_idx] * np.uint64(0x9E3779B97F4A7C15) ^ hm[movie_idx])


def cold_set(ids: pd.Index, rated: np.ndarray, reviewed: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The dense indices of the *cold* movies (or users) of a cold-start split: about
    ``fraction`` of those that have both ratings and reviews, picked by a seeded hash of their
    id strings, as the random split picks ratings: a movie keeps its part whatever the order of
    the data and as new movies arrive (a nightly gate compares models on a test part neither
    trained on), and a larger fraction takes a superset. At least one is picked."""
    both = np.intersect1d(np.unique(rated), np.unique(reviewed))
    both = both[both >= 0]
    if not len(both):
        raise ConfigError("split.method cold_items / cold_users needs ratings of movies (users) that also have "
                          "reviews; reviews.csv names none of them")
    key = f"movierec-cold{seed:08d}"[-16:]
    h = _mix64(pd.util.hash_array(np.asarray(ids[both], dtype=object), hash_key=key))
    pick = (h % np.uint64(1 << 20)).astype(np.float64) / (1 << 20) < fraction
    return both[pick] if pick.any() else both[[int(np.argmin(h))]]


def assign_folds(ratings: pd.DataFrame, cfg: Config, ids: tuple[pd.Index, pd.Index] | None = None,
                 reviewed: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The ``fold`` column for the configured split method.

    ``ids`` are the user and movie id indexes (position = dense index); random and kfold
    splits hash the id pairs (see :func:`pair_hash`). ``reviewed``: the (user_idx, movie_idx)
    of the reviews, for the cold-start splits (``cold_items``: every rating of a share of the
    reviewed movies is test, so they are new to the model and only their reviews speak for
    them; ``cold_users``: the same for viewers who wrote reviews).
    """
    n = len(ratings)
    sp = cfg.split
    fold = np.full(n, -1, dtype=np.int16)
    if sp.method == "none":
        return fold
    if ids is None:  # no id strings: the dense indices stand in for them
        ids = (pd.Index(np.arange(ratings["user_idx"].max() + 1)), pd.Index(np.arange(ratings["movie_idx"].max() + 1)))
    if sp.method in ("cold_items", "cold_users"):
        col, side = ("movie_idx", 1) if sp.method == "cold_items" else ("user_idx", 0)
        if reviewed is None or not len(reviewed[side]):
            raise ConfigError(f"split.method {sp.method!r} needs reviews (reviews.csv): the new movies (viewers) "
                              "are those that have reviews")
        cold = cold_set(ids[side], ratings[col].to_numpy(), np.asarray(reviewed[side]), sp.cold_fraction, sp.seed)
        fold[np.isin(ratings[col].to_numpy(), cold)] = 0
        return fold
    if sp.method in ("random", "kfold"):
        h = pair_hash(ratings["user_idx"].to_numpy(), ratings["movie_idx"].to_numpy(), ids[0], ids[1], sp.seed)
        if sp.method == "kfold":
            return (h % np.uint64(sp.folds)).astype(np.int16)
        fold[(h % np.uint64(1 << 20)).astype(np.float64) / (1 << 20) < sp.test_fraction] = 0
        return fold
    if sp.method == "temporal":
        if "timestamp" not in ratings.columns or ratings["timestamp"].isna().all():
            raise ConfigError("split.method 'temporal' needs a timestamp column in the ratings")
        ts = ratings["timestamp"].fillna(-np.inf).to_numpy()
        order = np.lexsort((ts, ratings["user_idx"].to_numpy()))
        users = ratings["user_idx"].to_numpy()[order]
        # position of each rating within its user's history, and that user's count
        starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
        counts = np.diff(np.r_[starts, len(users)])
        pos = np.arange(len(users)) - np.repeat(starts, counts)
        cnt = np.repeat(counts, counts)
        n_test = np.floor(cnt * sp.test_fraction).astype(int)
        is_test = pos >= cnt - n_test
        fold[order[is_test]] = 0
        return fold
    raise ConfigError(f"split.method {sp.method!r} is handled at ingest")


def train_test(ratings: pd.DataFrame, fold: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and test parts of the ratings for one fold (None: every rating trains)."""
    if fold is None:
        return ratings.reset_index(drop=True), ratings.iloc[:0].reset_index(drop=True)
    is_test = ratings["fold"].to_numpy() == fold
    return ratings[~is_test].reset_index(drop=True), ratings[is_test].reset_index(drop=True)


def fold_ids(cfg: Config) -> list[int]:
    """The folds that evaluation iterates over."""
    if cfg.split.method == "kfold":
        return list(range(cfg.split.folds))
    if cfg.split.method == "none":
        return []
    return [0]


def split_identity(cfg: Config) -> dict:
    """What decides which ratings are test ratings: a version's holdout model is comparable
    with today's only when this is the same."""
    sp = cfg.split
    out = {"method": sp.method, "fold": sp.fold, "seed": sp.seed, "test_fraction": sp.test_fraction,
           "folds": sp.folds, "train": sp.train, "test": sp.test}
    if sp.method in ("cold_items", "cold_users"):
        out["cold_fraction"] = sp.cold_fraction
    return out


def clean(tables: dict[str, pd.DataFrame], cfg: Config) -> CleanResult:
    """Turn ingested tables into clean, integer-indexed tables with a split.

    Args:
        tables: ingest's output (``ratings`` required; ``test`` with the given split).

    Returns:
        CleanResult with ``ratings``, ``users``, ``movies``, ``reviews``, ``social``,
        ``user_ids`` and ``movie_ids`` tables (absent inputs give absent tables).
    """
    res = CleanResult()
    ratings = tables["ratings"]
    test = tables.get("test")
    users, movies = tables.get("users"), tables.get("movies")
    reviews, social = tables.get("reviews"), tables.get("social")

    uid = _index([
        ratings["user_id"],
        None if test is None else test["user_id"],
        None if reviews is None else reviews["user_id"],
        None if users is None else users["user_id"],
        None if social is None else social["user_id"],
        None if social is None else social["friend_id"],
    ])
    mid = _index([
        ratings["movie_id"],
        None if test is None else test["movie_id"],
        None if reviews is None else reviews["movie_id"],
        None if movies is None else movies["movie_id"],
    ])
    def uidx(s: pd.Series) -> np.ndarray:
        return _codes(uid, s)

    def midx(s: pd.Series) -> np.ndarray:
        return _codes(mid, s)
    def rating_frame(df: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame({
            "user_idx": uidx(df["user_id"]),
            "movie_idx": midx(df["movie_id"]),
            "rating": df["rating"].to_numpy(np.float32),
        })
        if "timestamp" in df.columns:
            out["timestamp"] = df["timestamp"].to_numpy(np.float64)
        return out

    r, dup = _dedupe(rating_frame(ratings), len(mid))
    res.stats["duplicate_ratings_removed"] = dup
    if test is not None:
        t, dup_t = _dedupe(rating_frame(test), len(mid))
        res.stats["duplicate_ratings_removed"] += dup_t
        r["fold"] = np.int16(-1)
        t["fold"] = np.int16(0)
        r = pd.concat([r, t], ignore_index=True)
    else:
        rv = None if reviews is None or not len(reviews) else (uidx(reviews["user_id"]), midx(reviews["movie_id"]))
        r["fold"] = assign_folds(r, cfg, (uid, mid), rv)
    res.tables["ratings"] = r
    res.stats["ratings"] = len(r)
    res.stats["test_ratings"] = int((r["fold"] == 0).sum()) if cfg.split.method != "kfold" else 0

    clean_side_tables(res, users, movies, reviews, social, uid, mid)
    if res.tables["ratings"].empty:
        raise DataError("no ratings left after cleaning")
    return res


def clean_side_tables(res: CleanResult, users, movies, reviews, social, uid: pd.Index | IdCodes, mid: pd.Index,
                      n_users: int | None = None) -> None:
    """The id tables, and the tables beside the ratings with the dense ids of ``uid`` and
    ``mid``, into ``res``. ``uid`` as :class:`IdCodes` (Ray's clean: the ids of these tables
    only) with ``n_users``: the ``user_ids`` table is not made here."""
    if isinstance(uid, pd.Index):
        res.tables["user_ids"] = pd.DataFrame({"user_idx": np.arange(len(uid), dtype=np.int32),
                                               "user_id": uid.to_numpy()})
        n_users = len(uid)
    res.tables["movie_ids"] = pd.DataFrame({"movie_idx": np.arange(len(mid), dtype=np.int32), "movie_id": mid.to_numpy()})

    def uidx(s: pd.Series) -> np.ndarray:
        return _codes(uid, s)

    # users: one row per known user (demographics NaN where users.csv has no row)
    u = pd.DataFrame({"user_idx": np.arange(n_users, dtype=np.int32)})
    if users is not None and len(users):
        demo = users.drop_duplicates("user_id", keep="last").copy()
        demo["user_idx"] = uidx(demo["user_id"])
        demo = demo.drop(columns=["user_id"])
        u = u.merge(demo, on="user_idx", how="left")
    res.tables["users"] = u
    res.tables["movies"] = _clean_movies(movies, mid)
    if reviews is not None and len(reviews):
        res.tables["reviews"] = _clean_reviews(reviews, uid, mid, res.stats)
    if social is not None and len(social):
        res.tables["social"] = _clean_social(social, uid, res.stats)


def _clean_movies(movies: pd.DataFrame | None, mid: pd.Index) -> pd.DataFrame:
    """One row per known movie; the title falls back to the id, the year to the title's."""
    m = pd.DataFrame({"movie_idx": np.arange(len(mid), dtype=np.int32), "movie_id": mid.to_numpy()})
    if movies is not None and len(movies):
        md = movies.drop_duplicates("movie_id", keep="last").copy()
        md["movie_idx"] = _codes(mid, md["movie_id"])
        m = m.merge(md.drop(columns=["movie_id"]), on="movie_idx", how="left")
    if "title" not in m.columns:
        m["title"] = m["movie_id"]
    m["title"] = m["title"].fillna(m["movie_id"]).astype(str)
    if "genres" not in m.columns:
        m["genres"] = ""
    m["genres"] = m["genres"].fillna("").astype(str).map(_norm_genres)
    if "year" not in m.columns:
        m["year"] = np.nan
    from_title = pd.to_numeric(m["title"].str.extract(_YEAR)[0], errors="coerce")
    m["year"] = pd.to_numeric(m["year"], errors="coerce").fillna(from_title)
    return m


def _clean_reviews(reviews: pd.DataFrame, uid: pd.Index | IdCodes, mid: pd.Index, stats: dict) -> pd.DataFrame:
    """Reviews with dense ids and text hashes; the same text twice on a pair counts once."""
    rv = pd.DataFrame({
        "review_id": np.arange(len(reviews), dtype=np.int64),
        "user_idx": _codes(uid, reviews["user_id"]),
        "movie_idx": _codes(mid, reviews["movie_id"]),
        "text_key": _text_keys(reviews),
        "text_rule": _text_rules(reviews),
        "rating": reviews["rating"].to_numpy(np.float32) if "rating" in reviews.columns else np.nan,
    })
    if "timestamp" in reviews.columns:
        rv["timestamp"] = reviews["timestamp"].to_numpy(np.float64)
    before = len(rv)
    rv = rv.drop_duplicates(["user_idx", "movie_idx", "text_key"], keep="last").reset_index(drop=True)
    stats["duplicate_reviews_removed"] = before - len(rv)
    return rv


def _clean_social(social: pd.DataFrame, uid: pd.Index | IdCodes, stats: dict) -> pd.DataFrame:
    """Ties with dense ids (the latest of a pair wins) and clipped trust weights."""
    s = pd.DataFrame({
        "user_idx": _codes(uid, social["user_id"]),
        "friend_idx": _codes(uid, social["friend_id"]),
        "weight": social["weight"].fillna(1.0).to_numpy(np.float64) if "weight" in social.columns else 1.0,
        "text_key": _text_keys(social),
        "text_rule": _text_rules(social),
    })
    s = s.drop_duplicates(["user_idx", "friend_idx"], keep="last").reset_index(drop=True)
    s["weight"], stats["trust_weights_clipped"] = clip_weights(s["weight"].to_numpy(np.float64))
    return s


#: a trust weight above this many times the median weight is clipped to it
WEIGHT_CLIP = 10.0


def clip_weights(w: np.ndarray) -> tuple[np.ndarray, int]:
    """Trust weights on any positive scale, with absurd ones (1e308 among weights near 1) clipped
    to ``WEIGHT_CLIP`` times the median: one tie must not outweigh a whole graph, nor
    overflow the graph algorithms. A scale above 1 is then divided by its largest weight (in
    float64 first: 1e308 is no float32), so weights end in [1e-6, 1] as float32. Returns the
    weights and how many were clipped (logged)."""
    w = np.asarray(w, np.float64)
    if not len(w):
        return w.astype(np.float32), 0
    cap = WEIGHT_CLIP * float(np.median(w))
    over = w > cap
    if over.any():
        log.warning("clean: %d trust weights above %g (%gx the median) clipped to it", int(over.sum()), cap,
                    WEIGHT_CLIP)
        w = np.where(over, cap, w)
    if w.max() > 1.0:
        w = w / w.max()
    # weights a million times below the largest carry nothing; they stay positive (float32 has
    # no 1e-308)
    return np.maximum(w, 1e-6).astype(np.float32), int(over.sum())


def _text_keys(df: pd.DataFrame):
    """The hash standing for each row's text ("" for none); texts are hashed here if given. As
    pandas' Arrow strings (not a Python object per review: 100M reviews)."""
    from movierec.privacy import without_texts

    if "text" in df.columns:
        df = without_texts(df[["text"]])
    if "text_key" in df.columns:
        return df["text_key"].fillna("").astype("str").array
    return np.full(len(df), "", dtype=object)


def _text_rules(df: pd.DataFrame) -> np.ndarray:
    """Each row's rule score (:mod:`movierec.sentiment.signal`: NaN where a model reads the
    text), computed at ingest while the texts are in memory and carried as ``text_rule``."""
    if "text" in df.columns:
        from movierec.sentiment.signal import rule_scores

        return rule_scores(df["text"].fillna("").astype(str).tolist())
    if "text_rule" in df.columns:
        return df["text_rule"].to_numpy(np.float32)
    return np.full(len(df), np.nan, np.float32)


def _norm_genres(g: str) -> str:
    parts = [p.strip() for p in g.split("|")]
    return "|".join(p for p in parts if p and p.lower() not in ("(no genres listed)", "unknown"))
