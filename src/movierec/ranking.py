"""Top-N lists: one user or all users, seen movies excluded, unknown users via popularity.

Scoring is blocked: a block of users' vectors times all item vectors (one BLAS call),
seen items masked, ``argpartition`` for the top N. No users x movies matrix is ever held
whole. This module imports neither TensorFlow nor torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from movierec.errors import DataError, ModelError
from movierec.models.mf import MatrixFactorization


def top_n_from_scores(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-n indices (best first) and their scores; -inf entries sort last."""
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    part_scores = np.take_along_axis(scores, part, 1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, 1), np.take_along_axis(part_scores, order, 1)


def top_n(
    model_vectors: tuple,
    users: np.ndarray,
    n: int,
    seen: sp.csr_matrix | None = None,
    block: int = 2048,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n items for each of ``users``, excluding ``seen`` items; blocked over users.

    Per block: one float32 BLAS product (users x factors times factors x movies), the item
    biases added in place, seen movies masked, and a compiled parallel top-n per row. The
    user's own constant (μ + b_u) does not change the order; it is added to the n scores
    kept. Memory: one block of scores (block x movies floats) at a time.
    """
    mu, bu, bi, U, Q = model_vectors
    users = np.asarray(users, dtype=np.int64)
    n_items = Q.shape[0]
    n = min(n, n_items)
    U = np.ascontiguousarray(U, dtype=np.float32)
    Qt = np.ascontiguousarray(np.asarray(Q, dtype=np.float32).T)
    bi = np.asarray(bi, dtype=np.float32)
    items = np.zeros((len(users), n), dtype=np.int64)
    scores = np.zeros((len(users), n), dtype=np.float32)
    bar = None
    if progress:
        from movierec.progress import Progress

        bar = Progress(len(users), "recommend", unit="user")
    for start in range(0, len(users), block):
        ub = users[start : start + block]
        s = U[ub] @ Qt
        s += bi
        if seen is not None:
            sub = seen[ub]
            rows = np.repeat(np.arange(len(ub)), np.diff(sub.indptr))
            s[rows, sub.indices] = -np.inf
        it, sc = _topk_rows(s, n)
        items[start : start + len(ub)] = it
        scores[start : start + len(ub)] = sc + (np.asarray(bu, np.float32)[ub] + np.float32(mu))[:, None]
        if bar is not None:
            bar.update(len(ub))
    if bar is not None:
        bar.close()
    return items, scores


def _topk_rows(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    from movierec._topk import topk_rows

    return topk_rows(s, n)


@dataclass
class ModelBundle:
    """A saved model directory: the model, id maps, catalogue, seen items, popularity."""

    path: Path
    model: MatrixFactorization
    user_ids: pd.Index
    movie_ids: pd.Index
    movies: pd.DataFrame
    seen: sp.csr_matrix
    popularity: np.ndarray
    meta: dict
    rated: sp.csr_matrix | None = None  # users x movies training ratings

    @classmethod
    def load(cls, path: str | Path) -> "ModelBundle":
        path = Path(path)
        if not (path / "model.npz").exists():
            raise ModelError(f"{path}: no model.npz here; run `movierec train` first")
        model = MatrixFactorization.load(path / "model.npz")
        users = pd.read_parquet(path / "user_ids.parquet")
        movies = pd.read_parquet(path / "movies.parquet")
        with np.load(path / "seen.npz") as z:
            seen = sp.csr_matrix((np.ones(len(z["indices"]), np.float32), z["indices"], z["indptr"]),
                                 shape=(len(users), len(movies)))
            popularity = z["popularity"]
            # the training ratings themselves (models saved before they were kept: none)
            rated = sp.csr_matrix((z["ratings"], z["indices"], z["indptr"]), shape=seen.shape) \
                if "ratings" in z.files else None
        meta = json.loads((path / "meta.json").read_text())
        return cls(path, model, pd.Index(users["user_id"].astype(str)), pd.Index(movies["movie_id"].astype(str)),
                   movies, seen, popularity, meta, rated)

    @property
    def vectors(self) -> tuple:
        """Vectors of the rank score (what top-N lists are ordered by)."""
        if not hasattr(self, "_vectors"):
            mu, bu, bi, U, Q = self.model.rank_vectors()
            self._vectors = (np.float32(mu), bu, bi, np.ascontiguousarray(U, dtype=np.float32),
                             np.ascontiguousarray(Q, dtype=np.float32))
        return self._vectors

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
        loc = self.user_ids.get_indexer([str(user_id).strip()])[0]
        return int(loc)

    def _rows(self, items: np.ndarray, scores: np.ndarray, predicted: np.ndarray | None = None) -> list[dict]:
        """Output rows: ``score`` orders the list; ``predicted_rating`` is on the rating scale."""
        mv = self.movies
        out = []
        for k, (it, sc) in enumerate(zip(items, scores)):
            if not np.isfinite(sc):
                continue
            row = mv.iloc[int(it)]
            out.append({
                "movie_id": str(row["movie_id"]),
                "title": str(row["title"]),
                "year": None if pd.isna(row.get("year")) else int(row["year"]),
                "genres": str(row.get("genres", "")),
                "score": round(float(sc), 4),
                "predicted_rating": None if predicted is None else round(float(predicted[k]), 4),
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

    def recommend_user(self, user_id: str, n: int, exclude_seen: bool = True) -> dict:
        """Top-n for one user id; an unknown user gets the popularity fallback, flagged."""
        u = self.user_index(user_id)
        if u < 0:
            items, scores = self.popular(n)
            return {"user_id": str(user_id), "fallback": "popularity", "items": self._rows(items, scores.astype(np.float32))}
        items, scores = top_n(self.vectors, np.array([u]), n, self.seen if exclude_seen else None)
        _, bu, _, U, _ = self.rating_vectors
        pred = self._predicted(U[u], bu[u], items[0])
        # a known user without training ratings is scored from features, reviews and friends
        fallback = None if self.seen.indptr[u + 1] > self.seen.indptr[u] else "features"
        return {"user_id": str(user_id), "fallback": fallback, "items": self._rows(items[0], scores[0], pred)}

    def recommend_ratings(self, user_id: str, ratings: pd.DataFrame, n: int, reg: float | None = None) -> dict:
        """Fold in a user the model has not seen, from their (movie_id, rating) rows."""
        idx = self.movie_ids.get_indexer(ratings["movie_id"].astype(str).str.strip())
        known = idx >= 0
        if not known.any():
            items, scores = self.popular(n)
            return {"user_id": str(user_id), "fallback": "popularity", "items": self._rows(items, scores.astype(np.float32))}
        r = pd.to_numeric(ratings["rating"], errors="coerce").to_numpy(np.float64)[known]
        if np.isnan(r).any():
            raise DataError("--ratings: every rating must be a number")
        mu, bu, bi, U, Q = self.rating_vectors
        items_r = idx[known]
        b, p = self.fold_in(items_r, r, reg)
        s = (Q @ p + bi + mu + b).astype(np.float32)
        rating = np.clip(s, self.model.rating_min_, self.model.rating_max_)
        m = self.model
        if getattr(m, "watch_user_", np.zeros((0, 0))).size:
            # watch taste of a new user: the mean watch factors of the movies they liked
            # (rated at or above their own mean; a 1-star film was watched, not wanted)
            liked = items_r[r >= r.mean()] if len(np.unique(r)) > 1 else items_r
            xw = m.watch_item_[np.unique(liked)].mean(0)
            # a mean of item vectors is shorter than a fitted user vector: give it a typical
            # user's length, or the movies' popularity (watch bias) drowns the taste
            typical = float(np.linalg.norm(m.watch_user_, axis=1).mean())
            norm = float(np.linalg.norm(xw))
            if norm > 0:
                xw = xw * (typical / norm)
            s = m.rank_rating_weight * (s - mu) + m.watch_bias_ + m.watch_item_ @ xw
        s[items_r] = -np.inf
        it, sc = top_n_from_scores(s[None, :], n)
        return {"user_id": str(user_id), "fallback": "fold-in", "items": self._rows(it[0], sc[0], rating[it[0]])}

    def fold_in(self, items: np.ndarray, ratings: np.ndarray, reg: float | None = None) -> tuple[float, np.ndarray]:
        """A user's bias and factor vector from their ratings alone, the model's movies fixed:
        ridge least squares for both together (SVD++ models add the rated movies' y_j)."""
        mu, _, bi, _, Q = self.rating_vectors
        lam = self.model.reg if reg is None else reg
        resid = np.asarray(ratings, np.float64) - mu - bi[items]
        Qi = Q[items].astype(np.float64)
        imp = np.zeros(Q.shape[1])
        if self.model.item_implicit_.size and len(items):  # SVD++: the rated movies themselves say something
            uniq = np.unique(items)
            imp = self.model.item_implicit_[uniq].sum(0) / np.sqrt(len(uniq))
        A = np.hstack([np.ones((len(items), 1)), Qi])
        ridge = np.r_[max(self.model.reg_bias, 1e-6), np.full(Q.shape[1], lam)] * max(len(items), 1)
        sol = np.linalg.solve(A.T @ A + np.diag(ridge), A.T @ (resid - Qi @ imp))
        return float(sol[0]), sol[1:] + imp

    def recommend_all(self, n: int, exclude_seen: bool = True) -> pd.DataFrame:
        users = np.arange(len(self.user_ids))
        items, scores = top_n(self.vectors, users, n, self.seen if exclude_seen else None, progress=True)
        k = items.shape[1]
        return pd.DataFrame({
            "user_id": np.repeat(self.user_ids.to_numpy(), k),
            "rank": np.tile(np.arange(1, k + 1), len(users)),
            "movie_id": self.movie_ids.to_numpy()[items.ravel()],
            "score": scores.ravel(),
        })
