"""What a trainer fits on: :class:`TrainData`, the ratings as dense indices with their side
data. Its own module so that every trainer (:mod:`movierec.models.mf`'s own, and the Ray one
in :mod:`movierec.models._adam_ray`) can build one without importing the estimator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from movierec._lazy import sp

from movierec.errors import ModelError


@dataclass
class TrainData:
    """Everything a trainer needs, as dense integer indices and float32 arrays."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    n_users: int
    n_items: int
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    neighbours: sp.csr_matrix | None = None  # n_users x n_users, rows sum to 1 (None: no graph)
    implicit_items: sp.csr_matrix | None = None  # n_users x n_items: movies a user rated or reviewed
    #: per-rating weight in (0, 1]: 1 for real ratings, less for pseudo-ratings (None: all 1)
    weights: np.ndarray | None = None
    #: what reviews say about movies and viewers (movierec.models.content.ReviewContent)
    content: object | None = None

    def __post_init__(self) -> None:
        if self.weights is not None:
            self.weights = np.asarray(self.weights, dtype=np.float32)
            if len(self.weights) != len(self.ratings):
                raise ModelError("TrainData: one weight per rating is needed")
            if (self.weights >= 1.0).all():
                self.weights = None
        self.users = np.asarray(self.users, dtype=np.int32)
        self.items = np.asarray(self.items, dtype=np.int32)
        self.ratings = np.asarray(self.ratings, dtype=np.float32)
        if self.user_features is None:
            self.user_features = np.zeros((self.n_users, 0), np.float32)
        if self.item_features is None:
            self.item_features = np.zeros((self.n_items, 0), np.float32)

    def neighbour_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The trust graph as CSR arrays (row starts, neighbours, weights); empty ones without
        a graph (a model without one never imports scipy for it)."""
        if self.neighbours is None:
            return np.zeros(self.n_users + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
        nb = self.neighbours.tocsr()
        return nb.indptr.astype(np.int64), nb.indices.astype(np.int32), nb.data.astype(np.float32)

    def implicit(self) -> sp.csr_matrix:
        """Binary users x movies matrix of implicit feedback (built on first use: at 20M
        ratings it costs hundreds of MB that a plain model never needs)."""
        if self.implicit_items is None:
            self.implicit_items = sp.csr_matrix(
                (np.ones(len(self.users), np.float32), (self.users, self.items)), shape=(self.n_users, self.n_items))
        m = self.implicit_items.tocsr()
        m.sum_duplicates()
        m.data[:] = 1.0
        self.implicit_items = m
        return m

    def rating_range(self) -> tuple[float, float]:
        return float(self.ratings.min()), float(self.ratings.max())


@dataclass
class PartsTrainData:
    """Training ratings that stay in the cluster (``ratings_clean`` in parts, engine ray):
    the trainer's workers read them (:mod:`movierec.data.parts_train`); the driver holds
    their figures and the side data, which is O(viewers + movies)."""

    source: object  # movierec.data.parts_train.PartsRatings
    engine: object  # EngineConfig: where the summary's tasks run
    n_users: int
    n_items: int
    user_features: np.ndarray | None = None
    item_features: np.ndarray | None = None
    neighbours: sp.csr_matrix | None = None
    #: ratings are divided by this inside the fit (a wide scale: MatrixFactorization.MAX_SPAN)
    unit: float = 1.0
    weights = None  # no pseudo-ratings, review content or implicit sets on this path
    content = None
    implicit_items = None

    def __post_init__(self) -> None:
        if self.user_features is None:
            self.user_features = np.zeros((self.n_users, 0), np.float32)
        if self.item_features is None:
            self.item_features = np.zeros((self.n_items, 0), np.float32)

    neighbour_arrays = TrainData.neighbour_arrays

    def summary(self, seed: int, fraction: float):
        """The parts' figures with a validation slice of ``fraction`` chosen with ``seed``
        (counted once by Ray tasks, then kept)."""
        s = self.source
        if s.seed != int(seed) or s.fraction != float(fraction) or s.user_counts.shape != (self.n_users,):
            from movierec.data.parts_train import summarize
            from movierec.data.ray_tables import Tasks
            from movierec.engine import session

            with session(self.engine) as ray:
                summarize(s, Tasks(ray, self.engine.cpus_per_worker), seed, fraction)
        return s

    def rating_range(self) -> tuple[float, float]:
        s = self.source
        return s.rating_min / self.unit, s.rating_max / self.unit
