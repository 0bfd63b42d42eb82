"""Biased matrix factorization with fused features and a social regulariser.

    r̂(u, i) = μ + b_u + b_i + (p_u + W x_u) · (q_i + V y_i)

x_u, y_i are the fused user and item feature vectors; the social regulariser pulls p_u
toward the strength-weighted mean of the user's neighbours' factors. Two trainers fit
the same parameters: ``sgd`` (per-rating SGD compiled with numba) and ``adam``
(mini-batch Adam in TensorFlow). Both save the same ``.npz`` format, which
:meth:`MatrixFactorization.load` reads without TensorFlow.

Unknown users or items (index -1) fall back to the biases that are known (for an
unknown user: μ + b_i), and :meth:`predict` flags them (Surprise's ``was_impossible``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from movierec.config import ModelConfig
from movierec.errors import ModelError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MIN_EPOCHS = 10


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
    neighbours: sp.csr_matrix | None = None  # n_users x n_users, rows sum to 1

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users, dtype=np.int32)
        self.items = np.asarray(self.items, dtype=np.int32)
        self.ratings = np.asarray(self.ratings, dtype=np.float32)
        if self.user_features is None:
            self.user_features = np.zeros((self.n_users, 0), np.float32)
        if self.item_features is None:
            self.item_features = np.zeros((self.n_items, 0), np.float32)
        if self.neighbours is None:
            self.neighbours = sp.csr_matrix((self.n_users, self.n_users), dtype=np.float32)


@dataclass
class History:
    train_rmse: list[float] = field(default_factory=list)
    val_rmse: list[float] = field(default_factory=list)
    best_epoch: int = 0


class MatrixFactorization:
    """Estimator: hyperparameters in ``__init__``, ``fit`` returns self, state ends in ``_``."""

    def __init__(
        self,
        factors: int = 32,
        epochs: int = 30,
        optimizer: str = "sgd",
        learning_rate: float = 0.02,
        reg: float = 0.05,
        reg_bias: float = 0.02,
        reg_features: float = 0.1,
        social_reg: float = 0.0,
        use_features: bool = True,
        early_stopping: bool = True,
        patience: int = 4,
        validation_fraction: float = 0.05,
        init_std: float = 0.1,
        lr_decay: float = 0.97,
        batch_size: int = 4096,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.epochs = epochs
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.reg = reg
        self.reg_bias = reg_bias
        self.reg_features = reg_features
        self.social_reg = social_reg
        self.use_features = use_features
        self.early_stopping = early_stopping
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.init_std = init_std
        self.lr_decay = lr_decay
        self.batch_size = batch_size
        self.seed = seed

    PARAMS = (
        "factors", "epochs", "optimizer", "learning_rate", "reg", "reg_bias", "reg_features",
        "social_reg", "use_features", "early_stopping", "patience", "validation_fraction",
        "init_std", "lr_decay", "batch_size", "seed",
    )

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "MatrixFactorization":
        d = asdict(cfg)
        return cls(**{k: d[k] for k in cls.PARAMS})

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.PARAMS}

    # ------------------------------------------------------------------ fitting
    def _init_state(self, data: TrainData, rng: np.random.Generator) -> None:
        k = self.factors
        du = data.user_features.shape[1] if self.use_features else 0
        di = data.item_features.shape[1] if self.use_features else 0
        self.global_mean_ = float(data.ratings.mean())
        self.user_bias_ = np.zeros(data.n_users, np.float32)
        self.item_bias_ = np.zeros(data.n_items, np.float32)
        self.user_factors_ = rng.normal(0, self.init_std, (data.n_users, k)).astype(np.float32)
        self.item_factors_ = rng.normal(0, self.init_std, (data.n_items, k)).astype(np.float32)
        self.user_weights_ = np.zeros((k, du), np.float32)
        self.item_weights_ = np.zeros((k, di), np.float32)
        self.user_features_ = (data.user_features if du else np.zeros((data.n_users, 0))).astype(np.float32)
        self.item_features_ = (data.item_features if di else np.zeros((data.n_items, 0))).astype(np.float32)
        self.rating_min_ = float(data.ratings.min())
        self.rating_max_ = float(data.ratings.max())

    def _state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).copy() for k in (
            "user_bias_", "item_bias_", "user_factors_", "item_factors_", "user_weights_", "item_weights_")}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def fit(self, data: TrainData) -> "MatrixFactorization":
        """Fit on ``data``; with early stopping, a validation slice is held out of it."""
        if len(data.ratings) == 0:
            raise ModelError("cannot fit a model on zero ratings")
        rng = np.random.default_rng(self.seed)
        n = len(data.ratings)
        val_mask = np.zeros(n, bool)
        if self.early_stopping and n >= 50:
            val_mask[rng.permutation(n)[: max(1, int(n * self.validation_fraction))]] = True
        self._init_state(data, rng)
        self._last_log = time.perf_counter()
        # the mean of the part actually trained on
        self.global_mean_ = float(data.ratings[~val_mask].mean())
        t0 = time.perf_counter()
        if self.optimizer == "adam":
            from movierec.models._adam import fit_adam

            self.history_ = fit_adam(self, data, val_mask, rng)
        elif self.optimizer == "sgd":
            self.history_ = self._fit_sgd(data, val_mask, rng)
        else:
            raise ModelError(f"unknown optimizer {self.optimizer!r} (sgd or adam)")
        self.fit_seconds_ = time.perf_counter() - t0
        self.n_train_ = int((~val_mask).sum())
        return self

    def _fit_sgd(self, data: TrainData, val_mask: np.ndarray, rng: np.random.Generator) -> History:
        from movierec.models._sgd import fill_cold_users, sgd_epoch

        tr = np.flatnonzero(~val_mask).astype(np.int64)
        va = np.flatnonzero(val_mask)
        nb = data.neighbours.tocsr()
        nb_ptr = nb.indptr.astype(np.int64)
        nb_idx = nb.indices.astype(np.int32)
        nb_w = nb.data.astype(np.float32)
        counts = np.bincount(data.users[tr], minlength=data.n_users)
        use_feat = bool(self.use_features and (self.user_weights_.size or self.item_weights_.size))
        X = self.user_features_ if self.user_features_.shape[1] else np.zeros((data.n_users, 0), np.float32)
        Y = self.item_features_ if self.item_features_.shape[1] else np.zeros((data.n_items, 0), np.float32)
        # shared projections see every rating: a smaller step keeps them stable
        n_rated = max(1, len(tr))
        hist = History()
        best, best_state, bad = np.inf, None, 0
        lr = self.learning_rate
        for epoch in range(self.epochs):
            order = tr[rng.permutation(len(tr))]
            lr_feat = lr * min(1.0, 100.0 / np.sqrt(n_rated))
            sse = sgd_epoch(
                data.users, data.items, data.ratings, order, np.float32(self.global_mean_),
                self.user_bias_, self.item_bias_, self.user_factors_, self.item_factors_,
                self.user_weights_, self.item_weights_, X, Y, nb_ptr, nb_idx, nb_w,
                np.float32(lr), np.float32(lr_feat), np.float32(self.reg), np.float32(self.reg_bias),
                np.float32(self.social_reg), use_feat,
            )
            if use_feat and self.reg_features > 0:
                shrink = np.float32(max(0.0, 1.0 - lr * self.reg_features))
                self.user_weights_ *= shrink
                self.item_weights_ *= shrink
            if self.social_reg > 0:
                fill_cold_users(self.user_factors_, self.user_bias_, counts, nb_ptr, nb_idx, nb_w)
            hist.train_rmse.append(float(np.sqrt(sse / max(1, len(tr)))))
            self._record_validation(hist, data, va, epoch)
            if len(va):
                v = hist.val_rmse[-1]
                if v < best - 1e-5:
                    best, best_state, bad, hist.best_epoch = v, self._state(), 0, epoch
                else:
                    bad += 1
                    # factors start small and validation RMSE can plateau before it falls:
                    # never stop in the first few epochs
                    if bad >= self.patience and epoch + 1 >= MIN_EPOCHS:
                        log.info("early stopping after epoch %d (best %d, val RMSE %.4f)", epoch + 1, hist.best_epoch + 1, best)
                        break
            else:
                hist.best_epoch = epoch
            lr *= self.lr_decay
        if best_state is not None:
            self._restore(best_state)
        return hist

    def _record_validation(self, hist: History, data: TrainData, va: np.ndarray, epoch: int) -> None:
        from movierec._faults import failpoint

        failpoint("train")
        if len(va):
            pred = self._predict_idx(data.users[va], data.items[va])
            hist.val_rmse.append(float(np.sqrt(np.mean((data.ratings[va] - pred) ** 2))))
        # progress: a line per epoch when epochs are slow (cron logs), else at debug level
        now = time.perf_counter()
        slow = now - getattr(self, "_last_log", 0.0) > 5.0
        if slow:
            self._last_log = now
        log.log(logging.INFO if slow else logging.DEBUG, "epoch %d/%d: train RMSE %.4f%s", epoch + 1, self.epochs,
                hist.train_rmse[-1], f", validation RMSE {hist.val_rmse[-1]:.4f}" if len(va) else "")

    # ------------------------------------------------------------------ predicting
    def user_vectors(self) -> np.ndarray:
        """Effective user factors p_u + W x_u (n_users x k)."""
        U = self.user_factors_
        if self.user_weights_.size:
            U = U + self.user_features_ @ self.user_weights_.T
        return U

    def item_vectors(self) -> np.ndarray:
        """Effective item factors q_i + V y_i (n_items x k)."""
        Q = self.item_factors_
        if self.item_weights_.size:
            Q = Q + self.item_features_ @ self.item_weights_.T
        return Q

    def _predict_idx(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        U, Q = self.user_vectors(), self.item_vectors()
        return self.global_mean_ + self.user_bias_[users] + self.item_bias_[items] + np.einsum(
            "ij,ij->i", U[users], Q[items]
        )

    def predict(self, users: np.ndarray, items: np.ndarray, clip: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Predicted ratings for index pairs; -1 marks an unknown user or item.

        Returns:
            (predictions, impossible): ``impossible`` is True where a fallback was used.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        ku = (users >= 0) & (users < len(self.user_bias_))
        ki = (items >= 0) & (items < len(self.item_bias_))
        both = ku & ki
        out = np.full(len(users), self.global_mean_, dtype=np.float64)
        if both.any():
            out[both] = self._predict_idx(users[both], items[both])
        only_i = ~ku & ki
        out[only_i] += self.item_bias_[items[only_i]]
        only_u = ku & ~ki
        out[only_u] += self.user_bias_[users[only_u]]
        if clip:
            out = np.clip(out, self.rating_min_, self.rating_max_)
        return out, ~both

    # ------------------------------------------------------------------ persistence
    ARRAYS = ("user_bias_", "item_bias_", "user_factors_", "item_factors_", "user_weights_",
              "item_weights_", "user_features_", "item_features_")

    def save(self, path: str | Path) -> None:
        """Write the model to ``path`` (an .npz file); round-trips exactly through load."""
        meta = {
            "format_version": FORMAT_VERSION,
            "params": self.get_params(),
            "global_mean": self.global_mean_,
            "rating_min": self.rating_min_,
            "rating_max": self.rating_max_,
            "fit_seconds": getattr(self, "fit_seconds_", None),
            "history": asdict(self.history_) if hasattr(self, "history_") else None,
        }
        arrays = {k: getattr(self, k) for k in self.ARRAYS}
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "MatrixFactorization":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in cls.ARRAYS}
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable movierec model ({exc})") from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{path}: model format {meta.get('format_version')} is not supported")
        m = cls(**meta["params"])
        for k, v in arrays.items():
            setattr(m, k, v)
        m.global_mean_ = meta["global_mean"]
        m.rating_min_ = meta["rating_min"]
        m.rating_max_ = meta["rating_max"]
        m.fit_seconds_ = meta["fit_seconds"]
        if meta.get("history"):
            m.history_ = History(**meta["history"])
        return m
