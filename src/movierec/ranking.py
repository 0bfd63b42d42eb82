"""Top-N lists: one user or all users, seen movies excluded, unknown users via popularity.

Scoring is blocked: a block of users' vectors times all item vectors (one BLAS call),
seen items masked, ``argpartition`` for the top N. No users x movies matrix is ever held
whole. This module imports neither TensorFlow nor torch.

Why one module of this size: the served bundle and the blocked top-N it serves (one user,
all users, fold-in, feedback since training) share the same vectors and masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from movierec._lazy import is_frame, pd, sp
from movierec._npz import file_view, npz_arrays, remap
from movierec.errors import DataError, ModelError
from movierec.models.mf import MatrixFactorization, ScoreVectors
from movierec.version_layout import GENRE_SENTIMENT, META, MOVIES, NEIGHBOURS, SEEN, USER_IDS


def top_n_from_scores(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-n indices (best first) and their scores; -inf entries sort last."""
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    part_scores = np.take_along_axis(scores, part, 1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, 1), np.take_along_axis(part_scores, order, 1)


#: the most memory one block of users x movies scores may take in :func:`top_n`
BLOCK_BYTES = 1 << 28


def top_n(
    model_vectors: tuple,
    users: np.ndarray,
    n: int,
    seen=None,
    block: int = 2048,
    progress: bool = False,
    item_item: tuple | None = None,
    exclude: list[np.ndarray] | None = None,
    item_t: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n items for each of ``users``, excluding ``seen`` items (a users x movies CSR
    matrix, or anything with its ``indptr`` and ``indices``); blocked over users.

    Per block: one float32 BLAS product (users x factors times factors x movies), the item
    biases added in place, seen movies masked, and a compiled parallel top-n per row. The
    user's own constant (μ + b_u) does not change the order; it is added to the n scores
    kept. ``item_item`` (history, weights): an item-item ranker's part, history[users] @
    weights, added to the block (EASE). Memory: one block of scores (block x movies floats,
    at most :data:`BLOCK_BYTES`) at a time. ``exclude``: instead of ``seen``, the movie
    indices to leave out, one array per user; ``item_t``: ``Q`` transposed, float32 and
    contiguous, when the caller keeps it (a service asks for one list at a time).
    """
    mu, bu, bi, U, Q = model_vectors
    users = np.asarray(users, dtype=np.int64)
    n_items = Q.shape[0]
    n = min(n, n_items)
    # a block's scores stay under BLOCK_BYTES (2048 users x 1M movies would be 8 GB)
    block = max(16, min(block, BLOCK_BYTES // (4 * max(n_items, 1))))
    U = np.ascontiguousarray(U, dtype=np.float32)
    Qt = item_t if item_t is not None else np.ascontiguousarray(np.asarray(Q, dtype=np.float32).T)
    bi = np.asarray(bi, dtype=np.float32)
    items = np.zeros((len(users), n), dtype=np.int64)
    scores = np.zeros((len(users), n), dtype=np.float32)
    bar = None
    if progress:
        from movierec.progress import Progress

        bar = Progress(len(users), "recommend", unit="user")
    # one block of scores, reused: a fresh 64 MB array per block costs its page faults again
    # (20k users x 8k movies: 0.2 s of 0.5)
    buf = np.empty((min(block, len(users)), Qt.shape[1]), dtype=np.float32)
    by_numpy = _numpy_ranks(len(users) * n_items)
    for start in range(0, len(users), block):
        ub = users[start : start + block]
        s = np.matmul(U[ub], Qt, out=buf[: len(ub)])
        s += bi
        if item_item is not None:
            s += np.asarray(item_item[0][ub] @ item_item[1], dtype=np.float32)
        if exclude is not None:
            for r, k in enumerate(range(start, start + len(ub))):
                s[r, exclude[k]] = -np.inf
        elif seen is not None:  # a scipy matrix or CSR arrays alike: each row's seen movies
            for part in (seen.parts() if hasattr(seen, "parts") else (seen,)):
                lo, hi = part.indptr[ub].astype(np.int64), part.indptr[ub + 1].astype(np.int64)
                rows = np.repeat(np.arange(len(ub)), hi - lo)
                at = np.arange(len(rows)) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo) + np.repeat(lo, hi - lo)
                s[rows, part.indices[at]] = -np.inf
        it, sc = _topk_rows(s, n, by_numpy)
        items[start : start + len(ub)] = it
        scores[start : start + len(ub)] = sc + (np.asarray(bu, np.float32)[ub] + np.float32(mu))[:, None]
        if bar is not None:
            bar.update(len(ub))
    if bar is not None:
        bar.close()
    return items, scores


#: score blocks up to this many entries are ranked by numpy (one viewer's list: loading the
#: compiled kernel, 0.3 s with numba's start-up, would cost 100x the ranking itself)
SMALL_BLOCK = 1 << 18
#: a whole ranking up to this many scores (viewers x movies) is ranked by numpy: 2.5-10 ns a
#: score (10-40 ms at this size), about what loading the compiled kernel costs where nothing
#: loaded llvmlite yet (MovieLens-100K's 459 test viewers x 1,682 movies: 8 ms)
NUMPY_RANKING = 1 << 22


def _numpy_ranks(scores: int) -> bool:
    """Whether numpy ranks every block of a ranking of ``scores`` scores in all (the same
    lists as the compiled kernel)."""
    return scores <= NUMPY_RANKING


def _top_of_row(row: np.ndarray, n: int) -> np.ndarray:
    """``np.argsort(-row, kind="stable")[:n]`` without sorting the whole row: every column
    scoring at least the n-th best score (ties included, in column order) is a candidate, and
    only the candidates are sorted (stably, so ties keep the lower column first)."""
    neg = -row
    kth = np.partition(neg, n - 1)[n - 1]
    cand = np.flatnonzero(neg <= kth)
    return cand[np.argsort(neg[cand], kind="stable")][:n]


def _topk_rows(s: np.ndarray, n: int, by_numpy: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``n`` best columns, best first (ties: lower column first; -inf last, in
    column order) and their scores: by numpy for a small block (or ``by_numpy``), else by the
    compiled kernel."""
    if by_numpy or s.size <= SMALL_BLOCK:
        if 4 * n >= s.shape[1]:
            idx = np.argsort(-s, axis=1, kind="stable")[:, :n]
        else:  # the n best of each row without sorting the row: the same order, ties included
            idx = np.stack([_top_of_row(row, n) for row in s]) if len(s) else np.zeros((0, n), np.int64)
        return idx.astype(np.int64), np.take_along_axis(s, idx, 1).astype(np.float32)
    from movierec.models._kernels import topk_rows  # compiled, numba's or its kept machine code

    return topk_rows(s, n)


def _missing(v) -> bool:
    """None, NaN or pandas' NA (a year the catalogue does not give)."""
    if v is None:
        return True
    try:
        return bool(v != v)
    except TypeError:  # pandas.NA compares to NA, which has no truth value
        return True


def _number(v) -> float:
    """A rating from an event (None, text or a missing value: NaN)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _numbers(col: pd.Series) -> np.ndarray:
    """A column as float64 (text that is not a number: NaN)."""
    if pd.api.types.is_float_dtype(col.dtype):
        return col.to_numpy(np.float64)
    return pd.to_numeric(col, errors="coerce").to_numpy(np.float64)


class ModelBundle:
    """A model version loaded for serving: the model, id maps, catalogue, seen items,
    popularity (all read from the version folder; see :mod:`movierec.registry`).

    A bundle read by :meth:`load` keeps its ids, catalogue and seen movies as plain lists and
    CSR arrays; the pandas and scipy forms (``user_ids``, ``movie_ids``, ``movies``,
    ``seen``, ``rated``) are built on first use. One viewer's list needs none of them, so
    ``movierec recommend --user`` imports neither library."""

    def __init__(self, path: Path | None, model: MatrixFactorization, user_ids: pd.Index | None,
                 movie_ids: pd.Index | None, movies: pd.DataFrame | None, seen: sp.csr_matrix | None,
                 popularity: np.ndarray, meta: dict, rated: sp.csr_matrix | None = None) -> None:
        self.path, self.model, self.popularity, self.meta = path, model, popularity, meta
        self._user_ids, self._movie_ids, self._movies, self._seen, self._rated = \
            user_ids, movie_ids, movies, seen, rated
        self._raw: dict = {}  # what load read: id lists, catalogue columns, CSR parts

    @classmethod
    def load(cls, path: str | Path, model_file: str = "model.npz") -> "ModelBundle":
        """Read a version folder (use :meth:`movierec.registry.Registry.load`, which checks
        the format first)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if not (path / model_file).exists():
            raise ModelError(f"{path}: no {model_file} here; run `movierec train` first")
        model = MatrixFactorization.load(path / model_file)
        try:
            n_users = pq.ParquetFile(path / USER_IDS).metadata.num_rows  # the ids: read on first use
            movies = pq.ParquetFile(path / MOVIES).read()
            cat = {c: movies.column(c).to_pylist() for c in ("movie_id", "title", "genres", "year")
                   if c in movies.column_names}
            csr = npz_arrays(path / SEEN)
            csr = {k: csr[k] for k in ("ratings", "indices", "indptr", "watched_indices", "watched_indptr",
                                       "popularity")}
            popularity = np.asarray(csr.pop("popularity"))
            meta = json.loads((path / META).read_text())
        except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
            raise ModelError(f"model version {path.name}: incomplete or unreadable ({exc})") from exc
        n_movies = len(cat["movie_id"])
        if len(csr["indptr"]) != n_users + 1 or len(csr["watched_indptr"]) != n_users + 1:
            raise ModelError(f"model version {path.name}: incomplete or unreadable (seen movies of "
                             f"{len(csr['indptr']) - 1} users, {n_users} user ids)")
        bundle = cls(path, model, None, None, None, None, popularity, meta)
        bundle._raw = {"catalogue": cat, "csr": csr, "shape": (n_users, n_movies)}
        return bundle

    def _user_list(self) -> list[str]:
        """The version's user ids by dense index, read on first use (``recommend --all`` on Ray
        reads none here: its tasks read their blocks' ids, :class:`IdColumn`)."""
        if "users" not in self._raw:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                ids = pq.ParquetFile(self.path / USER_IDS).read(columns=["user_id"]).column(0).to_pylist()
            except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
                raise ModelError(f"model version {self.path.name}: {USER_IDS} unreadable ({exc})") from exc
            if len(ids) != self._raw["shape"][0]:
                raise ModelError(f"model version {self.path.name}: {USER_IDS} holds {len(ids)} ids, "
                                 f"its metadata {self._raw['shape'][0]}")
            self._raw["users"] = [str(u) for u in ids]
        return self._raw["users"]

    # ------------------------------------------------------------------ ids, catalogue, seen
    @property
    def user_ids(self) -> pd.Index:
        if self._user_ids is None:
            self._user_ids = pd.Index(pd.Series(self._user_list(), dtype=object).astype(str))
        return self._user_ids

    @property
    def movie_ids(self) -> pd.Index:
        if self._movie_ids is None:
            ids = self._raw["catalogue"]["movie_id"]
            self._movie_ids = pd.Index(pd.Series(ids, dtype=object).astype(str))
        return self._movie_ids

    @property
    def movies(self) -> pd.DataFrame:
        if self._movies is None:
            self._movies = pd.read_parquet(self.path / MOVIES)
        return self._movies

    @property
    def rated(self) -> sp.csr_matrix | None:
        """users x movies: every rating."""
        if self._rated is None and self._raw:
            z = self._raw["csr"]
            self._rated = sp.csr_matrix((z["ratings"], z["indices"], z["indptr"]), shape=self._raw["shape"])
        return self._rated

    @rated.setter
    def rated(self, value: sp.csr_matrix | None) -> None:
        self._rated = value

    @property
    def seen(self) -> sp.csr_matrix:
        """users x movies: rated (any part of the data) or reviewed."""
        if self._seen is None:
            z = self._raw["csr"]
            watched = sp.csr_matrix((np.ones(len(z["watched_indices"]), np.float32), z["watched_indices"],
                                     z["watched_indptr"]), shape=self._raw["shape"])
            seen = self.rated.copy()  # by structure: a rating of 0 (0-10 scales) is a rating too
            seen.data = np.ones_like(seen.data)
            seen = seen + watched
            seen.data[:] = 1.0
            self._seen = seen.tocsr()
        return self._seen

    @seen.setter
    def seen(self, value: sp.csr_matrix) -> None:
        self._seen = value

    def _rated_parts(self) -> tuple | None:
        """(indptr, indices, data) of every rating, without building a sparse matrix."""
        r = self._rated
        if r is None and self._raw:
            z = self._raw["csr"]
            return z["indptr"], z["indices"], z["ratings"]
        return None if r is None else (r.indptr, r.indices, r.data)

    def seen_movies(self, u: int) -> np.ndarray:
        """The movies user ``u`` rated or reviewed (sorted)."""
        if self._seen is None and self._raw:
            z = self._raw["csr"]
            return np.union1d(z["indices"][z["indptr"][u]: z["indptr"][u + 1]],
                              z["watched_indices"][z["watched_indptr"][u]: z["watched_indptr"][u + 1]])
        return self.seen.indices[self.seen.indptr[u]: self.seen.indptr[u + 1]]

    def neighbours(self) -> pd.DataFrame | None:
        """The social neighbourhood the version was trained with (user_idx, neighbour_idx, strength)."""
        p = None if self.path is None else self.path / NEIGHBOURS
        return pd.read_parquet(p) if p is not None and p.exists() else None

    def genre_sentiment(self) -> pd.DataFrame | None:
        """Each user's mean review sentiment per genre (user_idx, genre, mean_sentiment, reviews)."""
        p = None if self.path is None else self.path / GENRE_SENTIMENT
        return pd.read_parquet(p) if p is not None and p.exists() else None

    @property
    def vectors(self) -> ScoreVectors:
        """Vectors of the rank score (what top-N lists are ordered by)."""
        if not hasattr(self, "_vectors"):
            self._vectors = self.model.rank_vectors()
        return self._vectors

    @property
    def item_item(self) -> tuple | None:
        """(history, weights) of an item-item ranker (EASE), or None."""
        return self.model.item_item()

    def _history_with(self, pairs: pd.DataFrame) -> tuple | None:
        """The item-item part with feedback movies added to the users' histories."""
        return self._history_plus(pairs["u"].to_numpy(np.int64), pairs["m"].to_numpy(np.int64))

    def _history_plus(self, us: np.ndarray, ms: np.ndarray) -> tuple | None:
        """The item-item part with movies ``ms`` added to users ``us``'s histories."""
        ii = self.item_item
        if ii is None or not len(us):
            return ii
        add = sp.csr_matrix((np.ones(len(us), np.float32), (us, ms)), shape=ii[0].shape)
        h = (ii[0] + add).tocsr()
        h.data[:] = 1.0
        return h, ii[1]

    @property
    def rating_vectors(self) -> tuple:
        """Vectors of the predicted rating."""
        m = self.model
        if not hasattr(self, "_rating_vectors"):
            self._rating_vectors = (np.float32(m.global_mean_), m.user_bias_, m.item_bias_,
                                    np.ascontiguousarray(m.user_vectors(), dtype=np.float32),
                                    np.ascontiguousarray(m.item_vectors(), dtype=np.float32))
        return self._rating_vectors

    def user_index(self, user_id: str) -> int:
        """The dense index of a user id (-1: unknown); a dict lookup, built once."""
        if not hasattr(self, "_user_pos"):
            self._user_pos = {u: k for k, u in enumerate(self._user_list() if self._raw else self.user_ids)}
        return self._user_pos.get(str(user_id).strip(), -1)

    def movie_index(self, movie_ids) -> np.ndarray:
        """Dense indices of movie ids (-1: not in the catalogue); dict lookups, built once."""
        if not hasattr(self, "_movie_pos"):
            ids = self._catalogue[0]
            self._movie_pos = {m: k for k, m in enumerate(ids)}
        pos = self._movie_pos
        return np.fromiter((pos.get(str(m).strip(), -1) for m in movie_ids), np.int64, len(movie_ids))

    @property
    def _catalogue(self) -> tuple:
        """The output columns of every movie as plain Python values, built once (a list row is
        then a few lookups, not a pandas row)."""
        if not hasattr(self, "_cat_cols"):
            cat = self._raw["catalogue"] if self._raw else {c: self.movies[c].tolist() for c in self.movies.columns}
            n = len(cat["movie_id"])
            years, genres = cat.get("year", [None] * n), cat.get("genres", [""] * n)
            self._cat_cols = ([str(v) for v in cat["movie_id"]], [str(v) for v in cat["title"]],
                              [None if _missing(y) else int(y) for y in years], [str(v) for v in genres])
        return self._cat_cols

    def _rows(self, items: np.ndarray, scores: np.ndarray, predicted: np.ndarray | None = None) -> list[dict]:
        """Output rows: ``rank_score`` orders the list (for the popularity fallback: how many
        viewers rated the movie); ``predicted_rating`` is on the data's rating scale."""
        ids, titles, years, genres = self._catalogue
        out = []
        for k, (it, sc) in enumerate(zip(items, scores)):
            if not np.isfinite(sc):
                continue
            i = int(it)
            out.append({
                "movie_id": ids[i],
                "title": titles[i],
                "year": years[i],
                "genres": genres[i],
                "predicted_rating": None if predicted is None else round(float(predicted[k]), 4),
                "rank_score": round(float(sc), 4),
            })
        return out

    def _predicted(self, user_vec: np.ndarray, user_bias: float, items: np.ndarray) -> np.ndarray:
        mu, _, bi, _, Q = self.rating_vectors
        p = mu + user_bias + bi[items] + Q[items] @ user_vec
        return np.clip(p, self.model.rating_min_, self.model.rating_max_)

    def popular(self, n: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pop = self.popularity.astype(np.float64).copy()
        if exclude is not None and len(exclude):
            pop[exclude] = -np.inf
        order = np.argsort(-pop, kind="stable")[:n]
        return order, pop[order]

    def _popular_rows(self, n: int, exclude: np.ndarray | None = None) -> list[dict]:
        """The popularity fallback: the rank score is the number of ratings; the predicted
        rating is the model's own for a viewer it knows nothing about (mu + b_i)."""
        items, counts = self.popular(n, exclude)
        mu, _, bi, _, _ = self.rating_vectors
        pred = np.clip(mu + bi[items], self.model.rating_min_, self.model.rating_max_)
        return self._rows(items, counts.astype(np.float32), pred)

    # ------------------------------------------------------------------ feedback since training
    def _event_pairs(self, events: pd.DataFrame | None) -> pd.DataFrame:
        """Feedback events as dense (u, m, rating) rows for known users and movies; rating is NaN
        for comments and shares. The latest rating of a pair wins (the log is in time order)."""
        if events is None or not len(events):
            if not hasattr(self, "_no_events"):
                self._no_events = pd.DataFrame({"u": pd.Series(dtype=np.int64), "m": pd.Series(dtype=np.int64),
                                                "rating": pd.Series(dtype=float)})
            return self._no_events
        u = self.user_ids.get_indexer(events["user_id"].astype(str).str.strip())
        m = self.movie_ids.get_indexer(events["movie_id"].astype(str).str.strip())
        r = pd.to_numeric(events["rating"], errors="coerce").to_numpy(np.float64) if "rating" in events.columns \
            else np.full(len(events), np.nan)
        ok = (u >= 0) & (m >= 0)
        return pd.DataFrame({"u": u[ok], "m": m[ok], "rating": r[ok]})

    def _event_arrays(self, events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feedback events as (u, m, rating) arrays for known users and movies (rating NaN for
        comments and shares), in log order; ``events`` a frame or a list of event dicts (what
        a service keeps: no frame is built for one viewer's few events)."""
        if events is None or not len(events):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        if is_frame(events):
            users, movies = events["user_id"].tolist(), events["movie_id"].tolist()
            r = _numbers(events["rating"]) if "rating" in events.columns else np.full(len(events), np.nan)
        else:
            users, movies = [e.get("user_id") for e in events], [e.get("movie_id") for e in events]
            r = np.array([_number(e.get("rating")) for e in events], np.float64)
        self.user_index("")  # the id dict, built once
        pos = self._user_pos
        u = np.fromiter((pos.get(str(x).strip(), -1) for x in users), np.int64, len(users))
        m = self.movie_index(movies)
        ok = (u >= 0) & (m >= 0)
        return u[ok], m[ok], r[ok]

    def _user_ratings(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        parts = self._rated_parts()
        if parts is None:
            return np.zeros(0, np.int64), np.zeros(0)
        indptr, indices, data = parts
        lo, hi = indptr[u], indptr[u + 1]
        return indices[lo:hi].astype(np.int64), data[lo:hi].astype(np.float64)

    def _watch_taste(self, liked: np.ndarray) -> np.ndarray:
        """Watch factors of a taste given by liked movies: their mean watch vector, given a
        typical user's length (a mean of item vectors is shorter than a fitted user vector, and
        the movies' popularity, the watch bias, would drown the taste)."""
        m = self.model
        xw = m.watch_item_[np.unique(liked)].mean(0)
        typical = float(np.linalg.norm(m.watch_user_, axis=1).mean())
        norm = float(np.linalg.norm(xw))
        return xw * (typical / norm) if norm > 0 else xw

    @property
    def _unit(self) -> float:
        """Ratings per unit of the rank score's rating part (1 on star scales; see MAX_SPAN)."""
        return float(getattr(self.model, "rating_unit_", 1.0) or 1.0)

    @property
    def _has_watch(self) -> bool:
        return bool(getattr(self.model, "watch_user_", np.zeros((0, 0))).size)

    def adapted_user(self, u: int, items: np.ndarray, ratings: np.ndarray,
                     weight: float = 1.0) -> tuple[float, np.ndarray, float, np.ndarray]:
        """User ``u`` after new ratings (``items``, ``ratings``; latest per movie), the movies fixed.

        Rating side: the change that fold-in (ridge least squares for bias and factors) makes
        when the new ratings join the user's own, added to the trained bias and vector, so no
        new rating leaves the list exactly as trained. Watch side: the user's watch vector
        moved toward the liked new movies in proportion to their share of what the user has
        watched. Each new rating counts ``weight`` times an old one (recent taste counts more;
        on the demo, 3 five-star ratings of one genre raise that genre's share of the top 10
        for 45% of users at weight 1, 59% at 3, 77% at 10, and lower it for 2%, 4%, 8%).
        Returns (rating bias, rating vector, rank bias, rank vector).
        """
        _, bu, _, U, _ = self.rating_vectors
        js, rs = self._user_ratings(u)
        merged = dict(zip(js.tolist(), rs.tolist()))
        merged.update(zip(np.asarray(items).tolist(), np.asarray(ratings, np.float64).tolist()))
        mj = np.fromiter(merged.keys(), np.int64, len(merged))
        mr = np.fromiter(merged.values(), np.float64, len(merged))
        mw = np.where(np.isin(mj, np.asarray(items)), weight, 1.0)
        b0, p0 = self.fold_in(js, rs)
        b1, p1 = self.fold_in(mj, mr, weights=mw)
        b, p = float(bu[u]) + b1 - b0, (U[u] + (p1 - p0)).astype(np.float32)
        _, _, _, RU, _ = self.vectors
        if self.item_item is not None:  # EASE: [w U_u, w] with w from the user's new count
            from movierec.models._ease import activity_weight

            n_hist = int(self.item_item[0].indptr[u + 1] - self.item_item[0].indptr[u]) + len(items)
            w = float(activity_weight([n_hist], self.model.ease_rating_weight, self.model.ease_activity_half)[0])
            w /= self._unit
            return b, p, 0.0, np.r_[w * p, w].astype(np.float32)
        beta = float(self.model.rank_rating_weight) / self._unit if self._has_watch else 1.0
        rank_u = RU[u].copy()
        rank_u[: len(p)] = beta * p
        if self._has_watch and len(items):
            new_r = np.asarray(ratings, np.float64)
            liked = np.asarray(items)[new_r >= mr.mean()] if len(np.unique(mr)) > 1 else np.asarray(items)
            if len(liked):
                k = len(p)
                n_old = len(self.seen_movies(u))
                n_new = weight * len(items)
                w = (n_old * rank_u[k:] + n_new * self._watch_taste(liked)) / (n_old + n_new)
                rank_u[k:] = w
        return b, p, beta * b, rank_u.astype(np.float32)

    # ------------------------------------------------------------------ lists
    def knows_nothing(self, users: np.ndarray) -> np.ndarray:
        """Per user: no rated or reviewed movie in the version's data (their vector comes from
        features and trust ties alone). Such a viewer gets the popularity list, as in
        evaluation, where those lists scored below popularity (FilmTrust NDCG@10 0.210 against
        0.220; level on CiaoDVD)."""
        users = np.asarray(users, np.int64)
        if self._seen is None and self._raw:
            z = self._raw["csr"]
            return (z["indptr"][users + 1] == z["indptr"][users]) & \
                (z["watched_indptr"][users + 1] == z["watched_indptr"][users])
        return self.seen.indptr[users + 1] == self.seen.indptr[users]

    def recommend_user(self, user_id: str, n: int, exclude_seen: bool = True,
                       events: pd.DataFrame | list | None = None, feedback_weight: float = 3.0) -> dict:
        """Top-n for one user id; ``events``: feedback recorded since the version was trained, a
        frame or a list of event dicts (their movies are excluded; their ratings refit the user
        as fold-in does). An unknown
        user gets the popularity fallback, flagged (or fold-in from their feedback ratings)."""
        u = self.user_index(user_id)
        if u < 0:
            if events is not None and not is_frame(events):
                events = pd.DataFrame(events) if len(events) else None
            mine = events[events["user_id"].astype(str).str.strip() == str(user_id).strip()] \
                if events is not None and len(events) else None
            if mine is not None and "rating" in mine.columns and pd.to_numeric(mine["rating"], errors="coerce").notna().any():
                rows = mine[pd.to_numeric(mine["rating"], errors="coerce").notna()][["movie_id", "rating"]]
                out = self.recommend_ratings(user_id, rows.drop_duplicates("movie_id", keep="last"), n,
                                             exclude=self.movie_ids.get_indexer(mine["movie_id"].astype(str)))
                out["feedback_events"] = int(len(mine))
                return out
            return {"user_id": str(user_id), "fallback": "popularity", "items": self._popular_rows(n)}
        evu, evm, evr = self._event_arrays(events)
        mine_ = evu == u
        evm, evr = evm[mine_], evr[mine_]
        rv = self.vectors
        _, bu, _, U, _ = self.rating_vectors
        if not len(evm) and self.knows_nothing(np.array([u]))[0]:
            # no rated or reviewed movie and no feedback: the list evaluation gives such a viewer
            # (``evaluate.unseen_users: fallback``), the model's own predicted ratings beside it
            items, counts = self.popular(n)
            return {"user_id": str(user_id), "fallback": "popularity",
                    "items": self._rows(items, counts.astype(np.float32), self._predicted(U[u], float(bu[u]), items))}
        rated = ~np.isnan(evr)
        new_m, new_r = evm[rated], evr[rated]
        if len(new_m):  # the latest rating of each movie, in log order
            _, last = np.unique(new_m[::-1], return_index=True)
            keep = np.sort(len(new_m) - 1 - last)
            new_m, new_r = new_m[keep], new_r[keep]
        if len(new_m):
            b, p, rank_b, rank_u = self.adapted_user(u, new_m, new_r, feedback_weight)
        else:
            b, p, rank_b, rank_u = float(bu[u]), U[u], float(rv[1][u]), rv[3][u]
        vectors = (rv[0], np.array([rank_b], np.float32), rv[2], np.asarray(rank_u, np.float32)[None, :], rv[4])
        ii = self._history_plus(np.full(len(evm), u, np.int64), evm)
        if ii is not None:
            ii = (ii[0][[u]], ii[1])
        exclude = None
        if exclude_seen:  # what the user rated or reviewed, and the movies of their feedback since
            mine = self.seen_movies(u)
            exclude = [np.concatenate([mine, evm]) if len(evm) else mine]
        if not hasattr(self, "_rank_item_t"):
            self._rank_item_t = np.ascontiguousarray(np.asarray(rv[4], dtype=np.float32).T)
        items, scores = top_n(vectors, np.array([0]), n, item_item=ii, exclude=exclude, item_t=self._rank_item_t)
        pred = self._predicted(p, b, items[0])
        # a known user without ratings is scored from features, reviews and friends
        parts = self._rated_parts()
        has_ratings = parts is not None and parts[0][u + 1] > parts[0][u]
        fallback = None if has_ratings or len(new_m) else "features"
        out = {"user_id": str(user_id), "fallback": fallback, "items": self._rows(items[0], scores[0], pred)}
        if len(evm):
            out["feedback_events"] = int(len(evm))
        return out

    def check_ratings(self, ratings: pd.DataFrame, where: str = "--ratings") -> pd.DataFrame:
        """Ratings given at recommend time, checked against the model: on its rating scale and
        naming movies it knows (unknown ones are dropped with a warning; none known is an error).

        Raises:
            DataError: a rating outside the scale, or not one movie of the catalogue.
        """
        r = _numbers(ratings["rating"])
        lo, hi = self.model.rating_min_, self.model.rating_max_
        bad = ~(np.isfinite(r) & (r >= lo) & (r <= hi))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: row {k + 1}: rating {ratings['rating'].iloc[k]} is outside the model's "
                            f"rating scale {lo:g}..{hi:g}")
        idx = self.movie_index(ratings["movie_id"].tolist())
        if not (idx >= 0).any():
            raise DataError(f"{where}: none of the {len(ratings)} movies is in the model's catalogue "
                            f"(e.g. {ratings['movie_id'].iloc[0]!r}); use the movie ids of movies.csv")
        if (idx < 0).any():
            import logging

            logging.getLogger("movierec").warning(
                "recommend: %d of %d movies of %s are not in the model's catalogue and are ignored (e.g. %r)",
                int((idx < 0).sum()), len(ratings), where, str(ratings["movie_id"].iloc[int(np.flatnonzero(idx < 0)[0])]))
            return ratings[idx >= 0]
        return ratings

    def recommend_ratings(self, user_id: str, ratings: pd.DataFrame, n: int, reg: float | None = None,
                          exclude: np.ndarray | None = None) -> dict:
        """Fold in a user the model has not seen, from their (movie_id, rating) rows; the rated
        movies (and ``exclude``, movie indices) are left out of the list."""
        idx = self.movie_index(ratings["movie_id"].tolist())
        known = idx >= 0
        if not known.any():
            return {"user_id": str(user_id), "fallback": "popularity", "items": self._popular_rows(n)}
        r = _numbers(ratings["rating"])[known]
        if np.isnan(r).any():
            raise DataError("--ratings: every rating must be a number")
        mu, bu, bi, U, Q = self.rating_vectors
        items_r = idx[known]
        b, p = self.fold_in(items_r, r, reg)
        s = (Q @ p + bi + mu + b).astype(np.float32)
        rating = np.clip(s, self.model.rating_min_, self.model.rating_max_)
        m = self.model
        if self._has_watch:
            # watch taste of a new user: the movies they liked (rated at or above their own
            # mean; a 1-star film was watched, not wanted)
            liked = items_r[r >= r.mean()] if len(np.unique(r)) > 1 else items_r
            s = (m.rank_rating_weight / self._unit) * (s - mu) + m.watch_bias_ + m.watch_item_ @ self._watch_taste(liked)
        elif self.item_item is not None:
            from movierec.models._ease import activity_weight

            w = activity_weight([len(np.unique(items_r))], m.ease_rating_weight, m.ease_activity_half)[0] / self._unit
            s = self.item_item[1][np.unique(items_r)].sum(0) + w * (s - mu - b)
        s[items_r] = -np.inf
        if exclude is not None:
            ex = np.asarray(exclude)
            s[ex[ex >= 0]] = -np.inf
        it, sc = top_n_from_scores(s[None, :], n)
        return {"user_id": str(user_id), "fallback": "fold-in", "items": self._rows(it[0], sc[0], rating[it[0]])}

    def fold_in(self, items: np.ndarray, ratings: np.ndarray, reg: float | None = None,
                weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """A user's bias and factor vector from their ratings alone, the model's movies fixed:
        ridge least squares for both together (SVD++ models add the rated movies' y_j).
        ``weights``: how much each rating counts (default 1 each)."""
        mu, _, bi, _, Q = self.rating_vectors
        lam = self.model.reg if reg is None else reg
        items = np.asarray(items, np.int64)
        w = np.ones(len(items)) if weights is None else np.asarray(weights, np.float64)
        resid = np.asarray(ratings, np.float64) - mu - bi[items]
        Qi = Q[items].astype(np.float64)
        imp = np.zeros(Q.shape[1])
        if self.model.item_implicit_.size and len(items):  # SVD++: the rated movies themselves say something
            uniq = np.unique(items)
            imp = self.model.item_implicit_[uniq].sum(0) / np.sqrt(len(uniq))
        A = np.hstack([np.ones((len(items), 1)), Qi])
        ridge = np.r_[max(self.model.reg_bias, 1e-6), np.full(Q.shape[1], lam)] * max(float(w.sum()), 1.0)
        sol = np.linalg.solve((A * w[:, None]).T @ A + np.diag(ridge), (A * w[:, None]).T @ (resid - Qi @ imp))
        return float(sol[0]), sol[1:] + imp

    def recommend_all(self, n: int, exclude_seen: bool = True, events: pd.DataFrame | None = None,
                      feedback_weight: float = 3.0) -> pd.DataFrame:
        """Top-n for every user of the version, with feedback ``events`` since training folded
        in as :meth:`recommend_user` does (the same lists)."""
        plan = self.all_lists_plan(exclude_seen, events, feedback_weight)
        return lists_for_users(plan, np.arange(plan.n_users), n, progress=True)

    def all_lists_plan(self, exclude_seen: bool = True, events: pd.DataFrame | None = None,
                       feedback_weight: float = 3.0, lazy_seen: bool = False) -> AllLists:
        """What every user's list is computed from, feedback since training folded in: the
        same for any block of users (the Ray engine ships it to its workers once).
        ``lazy_seen``: the seen movies as :class:`SeenRows` and the user ids as :class:`IdColumn`
        (each block's rows read where the block is listed) instead of a matrix of every rating
        and a list of every id built here; with the model's arrays memory-mapped, the plan
        pickles them as the file's name (:meth:`AllLists.__reduce__`)."""
        vectors = self.vectors
        ev = self._event_pairs(events)
        lazy = lazy_seen and exclude_seen and self._seen is None and bool(self._raw)
        seen = None if lazy or not exclude_seen else self.seen
        if lazy:
            shape = self._raw["shape"]
            seen = SeenRows(self.path / SEEN, shape, sp.csr_matrix(
                (np.ones(len(ev), np.float32), (ev["u"], ev["m"])), shape=shape) if len(ev) else None)
        mu, bu, bi, U, Q = self.rating_vectors
        if len(ev):
            c, bu_r, bi_r, U_r, Q_r = vectors
            bu_r, U_r = np.array(bu_r, np.float32, copy=True), np.array(U_r, np.float32, copy=True)
            bu, U = np.array(bu, np.float32, copy=True), np.array(U, np.float32, copy=True)
            for u, grp in ev.groupby("u"):
                new = grp[grp["rating"].notna()].drop_duplicates("m", keep="last")
                if len(new):
                    # the adapted users' ranking and rating sides
                    bu[u], U[u], bu_r[u], U_r[u] = self.adapted_user(int(u), new["m"].to_numpy(),
                                                                     new["rating"].to_numpy(), feedback_weight)
            vectors = (c, bu_r, bi_r, U_r, Q_r)
            if seen is not None and not lazy:
                seen = (seen + sp.csr_matrix((np.ones(len(ev), np.float32), (ev["u"], ev["m"])),
                                             shape=seen.shape)).tocsr()
        # viewers with nothing of their own, feedback included, get the popularity list
        n_users = self._raw["shape"][0] if self._raw else len(self.user_ids)
        blank = self.knows_nothing(np.arange(n_users))
        if len(ev):
            blank[ev["u"].to_numpy()] = False
        popular = None
        if blank.any():
            order, counts = self.popular(len(self.popularity))
            popular = (blank, order.astype(np.int64), counts.astype(np.float32))
        ids = IdColumn(self.path / USER_IDS, n_users) if lazy else self.user_ids.to_numpy()
        return AllLists(vectors, seen, self._history_with(ev), (mu, bu, bi, U, Q),
                        float(self.model.rating_min_), float(self.model.rating_max_),
                        ids, self.movie_ids.to_numpy(), popular)


class SeenRows:
    """What each viewer's list leaves out, read from a version's ``seen.npz`` where it is used:
    the rated and the reviewed movies (memory-mapped), and movies from feedback since training
    (few: kept here). Pickled as the file's path, so a Ray task that lists a block of viewers
    reads only that block's rows, and the driver never reads them all."""

    def __init__(self, path: str | Path, shape: tuple[int, int], events: sp.csr_matrix | None = None) -> None:
        self.path, self.shape, self.events = str(path), shape, events
        self._parts = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "shape": self.shape, "events": self.events}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["shape"], state["events"])

    def parts(self) -> list:
        """The CSR sources, each with ``indptr`` and ``indices``: a viewer's seen movies are their union."""
        if self._parts is None:
            z = npz_arrays(self.path)
            self._parts = [_Csr(z["indptr"], z["indices"]), _Csr(z["watched_indptr"], z["watched_indices"])] + \
                ([self.events] if self.events is not None else [])
        return self._parts


class _Csr(NamedTuple):
    indptr: np.ndarray
    indices: np.ndarray


class AllLists(NamedTuple):
    """Inputs of every user's list (see :meth:`ModelBundle.all_lists_plan`)."""
    vectors: tuple  # ranking vectors (c, b_u, b_i, U, Q)
    seen: sp.csr_matrix | SeenRows | None  # movies left out per user (None: none)
    item_item: tuple | None  # EASE's (history, weights)
    rating_vectors: tuple  # (mu, b_u, b_i, U, Q) of the predicted rating
    rating_min: float
    rating_max: float
    user_ids: np.ndarray | IdColumn
    movie_ids: np.ndarray
    popular: tuple | None = None  # (per-user mask, movies by popularity, their counts): who gets that list

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def __reduce__(self):
        """Pickled with the vectors that are ranges of a memory-mapped model file as the file's
        name and place (:func:`movierec._npz.file_view`): a Ray task maps them itself, and the
        driver neither copies every viewer's vectors nor holds them in the object store."""
        return type(self), (_by_name(self.vectors), *self[1:3], _by_name(self.rating_vectors), *self[4:])


class _Mapped:
    """An array that pickles as where it lies in a file: unpickled, the file mapped again."""

    def __init__(self, where: tuple) -> None:
        self.where = where

    def __reduce__(self):
        return remap, self.where


def _by_name(vectors: tuple) -> tuple:
    """``vectors`` (a tuple, or a named one) with each array that lies in a mapped file as a :class:`_Mapped`."""
    items = [_Mapped(w) if (w := file_view(v)) is not None else v for v in vectors]
    return type(vectors)(*items) if hasattr(vectors, "_fields") else tuple(items)


class IdColumn:
    """A version's user ids read where they are used: ``ids[users]`` reads the Parquet row
    groups that hold those rows (a Ray task one block's). Pickled as the file's path."""

    def __init__(self, path: str | Path, n: int) -> None:
        self.path, self.n = str(path), int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, users) -> np.ndarray:
        from movierec.data.parts_train import read_row_range

        users = np.asarray(users, np.int64)
        if not len(users):
            return np.zeros(0, object)
        lo, hi = int(users.min()), int(users.max()) + 1
        ids = read_row_range(self.path, lo, hi, ["user_id"]).column(0).to_pylist()
        return np.array([str(u) for u in ids], dtype=object)[users - lo]


def lists_for_users(plan: AllLists, users: np.ndarray, n: int, progress: bool = False) -> pd.DataFrame:
    """Top-n rows (user_id, rank, movie_id, predicted_rating, rank_score) of ``users``: a
    user with fewer unseen movies than n gets a shorter list, never a seen movie."""
    users = np.asarray(users, np.int64)
    items, scores = top_n(plan.vectors, users, n, plan.seen, progress=progress, item_item=plan.item_item)
    k = items.shape[1]
    if plan.popular is not None:  # they have nothing seen to leave out: the same list for all
        mask, order, counts = plan.popular
        rows = np.flatnonzero(mask[users])
        if len(rows):
            m = min(k, len(order))
            items[rows, :m], scores[rows, :m] = order[:m], counts[:m]
            scores[rows, m:] = -np.inf
    # predicted ratings of the listed movies (n per user: one small product per block)
    mu, bu, bi, U, Q = plan.rating_vectors
    pred = np.empty(items.shape, np.float32)
    for start in range(0, len(users), 4096):
        blk, ub = items[start:start + 4096], users[start:start + 4096]
        pred[start:start + 4096] = mu + bu[ub, None] + bi[blk] + np.einsum("uk,unk->un", U[ub], Q[blk])
    pred = np.clip(pred, plan.rating_min, plan.rating_max)
    out = pd.DataFrame({
        "user_id": np.repeat(plan.user_ids[users], k),
        "rank": np.tile(np.arange(1, k + 1), len(users)),
        "movie_id": plan.movie_ids[items.ravel()],
        "predicted_rating": pred.ravel().round(4),
        "rank_score": scores.ravel(),
    })
    return out[np.isfinite(out["rank_score"].to_numpy())].reset_index(drop=True)
