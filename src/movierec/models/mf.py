"""Biased matrix factorization with fused features and a social regulariser.

    r̂(u, i) = μ + b_u + b_i + (p_u + W x_u) · (q_i + V y_i)

x_u, y_i are the fused user and item feature vectors; the social regulariser pulls p_u
toward the strength-weighted mean of the user's neighbours' factors. Two trainers fit
the same parameters: ``sgd`` (per-rating SGD compiled with numba) and ``adam``
(mini-batch Adam in TensorFlow). Both save the same ``.npz`` format, which
:meth:`MatrixFactorization.load` reads without TensorFlow.

Unknown users or items (index -1) fall back to the biases that are known (for an
unknown user: μ + b_i), and :meth:`predict` flags them (Surprise's ``was_impossible``).

Why one module of this size: it is the estimator (fit, predict, rank vectors, save/load) and
its parameters; the trainers (``_sgd``, ``_adam``), EASE (``_ease``), tracking and pseudo-
ratings already live beside it, and what remains reads and writes the same fitted arrays.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, fields, replace
from typing import NamedTuple
from pathlib import Path

import numpy as np

from movierec._lazy import sp
from movierec._npz import npz_mapped, savez
from movierec.config import EngineConfig, ModelConfig
from movierec.errors import ModelError
from movierec.models._tracking import EpochTracker, History
from movierec.models.train_data import PartsTrainData, TrainData

log = logging.getLogger(__name__)

#: the .npz layout; 2: implicit and watch (ranking) arrays always present; 3: the EASE ranker's
#: arrays (empty for other rankings); 4: the review content maps (empty without review content).
#: Another format is refused with a clear error (no arrays are back-filled).
FORMAT_VERSION = 4


_PIPELINE_ONLY = ("trust_implicit", "shuffle_social")


def check_trainer(mcfg: "ModelConfig | MatrixFactorization") -> None:
    """Fail before any stage runs when the configured trainer's library is not installed
    (TensorFlow for ``optimizer: adam`` is an extra: ``movierec[adam]``). Looks it up without
    importing it."""
    if mcfg.optimizer == "adam":
        import importlib.util

        if importlib.util.find_spec("tensorflow") is None:
            from movierec.errors import ConfigError

            raise ConfigError("model.optimizer: adam trains with TensorFlow, which is not installed: "
                              "pip install 'movierec[adam]' (or set model.optimizer: sgd, the default)")


def _user_by_user(rows: np.ndarray, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``rows`` grouped user by user (in user order), each user's in a random order: a shuffle
    then a counting sort by user (10x faster than a lexsort on a random key)."""
    from movierec.models._kernels import group_rows

    shuffled = np.array(rows, dtype=np.int64)
    rng.shuffle(shuffled)  # rows[rng.permutation(len(rows))], without the index array
    return group_rows(shuffled, users, int(users.max(initial=-1)) + 1)


def _ranges(counts: np.ndarray, k: int) -> np.ndarray:
    """Bounds of ``k`` ranges of consecutive indices holding about equal shares of ``counts``
    (an index goes to the range its count's midpoint falls in, so a range holds at most its
    share plus the largest count); ``bounds[c]:bounds[c + 1]`` is range ``c``."""
    counts = np.asarray(counts, np.int64)
    cum = np.cumsum(counts)
    total = int(cum[-1]) if len(cum) else 0
    label = np.minimum((2 * cum - counts) * k // max(2 * total, 1), k - 1)
    return np.searchsorted(label, np.arange(k + 1), side="left").astype(np.int64)


def _range_of(bounds: np.ndarray) -> np.ndarray:
    """Each index's range (int32) under :func:`_ranges`' ``bounds``."""
    return np.repeat(np.arange(len(bounds) - 1, dtype=np.int32), np.diff(bounds))


def _block_layout(rows: np.ndarray, data: TrainData, threads: int, n_blocks: int,
                  rng: np.random.Generator) -> tuple:
    """``rows`` laid out for :func:`~movierec.models._sgd.sgd_epoch_blocks`: the viewers in
    ``threads`` parts and the movies in ``n_blocks`` blocks, each a range of consecutive
    indices with about equal ratings; the ratings grouped by (viewer, block), each group in a
    random order. Returns (group starts, movies, ratings, the parts' bounds, ``n_blocks``).

    Ranges, not random sets: neighbouring biases (16 to a cache line) and the ends of
    neighbouring factor rows share cache lines, so two threads writing interleaved indices
    would pass those lines back and forth on nearly every rating (measured: an epoch at the
    2M-rating benchmark's shape 67 ms with random blocks, 44 ms with ranges, 73 ms on one
    thread)."""
    from movierec.models._kernels import group_rows

    block = _range_of(_ranges(np.bincount(data.items[rows], minlength=data.n_items), n_blocks))
    groups = data.n_users * n_blocks
    key = data.users.astype(np.int32 if groups < 2**31 else np.int64) * n_blocks + block[data.items]
    shuffled = np.array(rows, dtype=np.int64)
    rng.shuffle(shuffled)
    srt = group_rows(shuffled, key, groups)
    b_ptr = np.zeros(groups + 1, np.int64)
    np.cumsum(np.bincount(key[rows], minlength=groups), out=b_ptr[1:])
    parts = _ranges(np.bincount(data.users[rows], minlength=data.n_users), threads)
    return b_ptr, data.items[srt], data.ratings[srt], parts, n_blocks


#: movie blocks per thread of the block-by-block pass (more: smaller blocks, but each viewer's
#: factor row fetched once per block; on 2 threads an epoch at the 2M benchmark's shape took
#: 50 / 51 / 61 / 67 ms with 1 / 2 / 4 / 8 blocks a thread, at the 20M shape 2 was the best)
BLOCKS_PER_THREAD = 2

#: rows per block of :meth:`MatrixFactorization._predict_idx`
PREDICT_BLOCK = 8192


class ScoreVectors(NamedTuple):
    """What a top-N list is ordered by: rank score(u, i) = ``constant`` + ``user_bias[u]`` +
    ``item_bias[i]`` + ``user[u]`` · ``item[i]`` (float32, contiguous: one BLAS call per
    block of users). The model's (:meth:`MatrixFactorization.rank_vectors`), a baseline's and
    a peer's in the benchmark all take this form."""

    constant: np.float32
    user_bias: np.ndarray
    item_bias: np.ndarray
    user: np.ndarray
    item: np.ndarray

    @classmethod
    def of(cls, constant, user_bias, item_bias, user, item) -> "ScoreVectors":
        return cls(np.float32(constant), user_bias, item_bias, np.ascontiguousarray(user, np.float32),
                   np.ascontiguousarray(item, np.float32))


def fit_parts(models: list, datas: list) -> None:
    """Fit ``models`` on ``datas`` (:class:`PartsTrainData`: ratings in parts, Adam on Ray)
    one after the other in one Ray Train run, its workers started once. A second model is
    the first's refit: it trains for the first's best epoch + 1 (the workers know it when the
    first ends; the driver sets ``epochs`` to it afterwards), without a validation slice."""
    from movierec.models._adam_ray import fit_adam_ray_parts

    begun = [m._parts_begin(d) for m, d in zip(models, datas)]
    fitted = fit_adam_ray_parts(list(zip(models, begun)), models[0].engine)
    for m, b, (hist, seconds) in zip(models, begun, fitted):
        m._parts_end(b, hist, seconds)
    if len(models) > 1:
        models[1].epochs = int(models[0].history_.best_epoch) + 1


def fit_together(models: list, datas: list) -> None:
    """Fit ``models`` on ``datas`` (:class:`TrainData`: the driver's arrays) with Adam on Ray,
    one after the other in one Ray Train run, its workers and TensorFlow started once (the
    ``train`` stage's holdout fit and refit; each fit's ratings a Ray Dataset of their own). A
    second model is the first's refit: it trains for the first's best epoch + 1 (the workers
    know it when the first ends; the driver sets ``epochs`` to it afterwards). Each model ends
    as its own ``fit`` would leave it (the same seeds, the same numbers)."""
    from movierec.models._adam_ray import fit_adam_ray_fits

    for m in models:
        if m.optimizer != "adam" or m.engine is None or m.engine.kind != "ray" or m.ensemble > 1:
            raise ModelError("fits run together only with model.optimizer adam on engine.kind ray, no ensemble")
    begun = []
    for m, d in zip(models, datas):
        scaled, unit, scale = m._in_units(d)
        val_mask, rng = m._fit_begin(scaled)
        begun.append((scaled, val_mask, rng, unit, scale))
    fitted = fit_adam_ray_fits([(m, b[0], b[1], b[2]) for m, b in zip(models, begun)], models[0].engine)
    for m, (scaled, val_mask, _, unit, scale), (hist, seconds) in zip(models, begun, fitted):
        m.history_ = hist
        m._fit_end(scaled, val_mask, seconds)
        m._from_units(unit, scale)
    if len(models) > 1:
        models[1].epochs = int(models[0].history_.best_epoch) + 1


class MatrixFactorization:
    """Estimator: hyperparameters in ``__init__``, ``fit`` returns self, state ends in ``_``."""

    #: fields of ModelConfig that the pipeline reads, not the estimator
    PIPELINE_ONLY = _PIPELINE_ONLY
    #: the hyperparameters: every other ModelConfig field (declared, with its default and its
    #: documentation, once: in movierec.config.ModelConfig)
    PARAMS = tuple(f.name for f in fields(ModelConfig) if f.name not in _PIPELINE_ONLY)

    def __init__(self, config: ModelConfig | None = None, *, engine: EngineConfig | None = None, **params) -> None:
        """``config`` (default: ModelConfig's defaults), with ``params`` overriding fields.
        ``engine``: where the Adam trainer runs (``kind: ray``: Ray Train); not a hyperparameter:
        the fitted model is the same kind of model wherever it was fitted."""
        unknown = sorted(set(params) - set(self.PARAMS))
        if unknown:
            raise TypeError(f"MatrixFactorization: unknown hyperparameter(s) {', '.join(unknown)}")
        self.config = replace(config if config is not None else ModelConfig(), **params)
        self.engine = engine

    def __getattr__(self, name: str):
        # hyperparameters are read from the config (``self.factors`` is ``self.config.factors``)
        if name in MatrixFactorization.PARAMS and "config" in self.__dict__:
            return getattr(self.__dict__["config"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_config(cls, cfg: ModelConfig, engine: EngineConfig | None = None) -> "MatrixFactorization":
        return cls(cfg, engine=engine)

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.PARAMS}

    # ------------------------------------------------------------------ fitting
    def _init_state(self, data: TrainData, rng: np.random.Generator, draw: bool = True) -> None:
        """The model's starting state for ``data``; ``draw=False``: all but the random
        factors (a fit from parts: the Ray workers draw them from the seed, see
        :meth:`_draw_factors`)."""
        k = self.factors
        du = data.user_features.shape[1] if self.use_features else 0
        di = data.item_features.shape[1] if self.use_features else 0
        self.global_mean_ = 0.0  # set by the fit: the mean of the ratings it trains on
        self.user_bias_ = np.zeros(data.n_users, np.float32)
        self.item_bias_ = np.zeros(data.n_items, np.float32)
        if draw:
            self._draw_factors(data.n_users, data.n_items, rng)
        self.user_weights_ = np.zeros((k, du), np.float32)
        self.item_weights_ = np.zeros((k, di), np.float32)
        self.user_features_ = (data.user_features if du else np.zeros((data.n_users, 0))).astype(np.float32)
        self.item_features_ = (data.item_features if di else np.zeros((data.n_items, 0))).astype(np.float32)
        if self.implicit:
            # one row per column of the implicit matrix: movies, then (TrustSVD-style) trusted users
            self.item_implicit_ = rng.normal(0, self.init_std, (data.implicit().shape[1], k)).astype(np.float32)
            self._implicit_norm = self._normalized(data.implicit())
            self.user_implicit_ = np.asarray(self._implicit_norm @ self.item_implicit_, np.float32)
        else:
            self.item_implicit_ = np.zeros((data.n_items, 0), np.float32)
            self.user_implicit_ = np.zeros((data.n_users, 0), np.float32)
        self.rating_min_, self.rating_max_ = data.rating_range()

    def _draw_factors(self, n_users: int, n_items: int, rng: np.random.Generator) -> None:
        """The random starting factors, drawn in float32 a block of rows at a time: the numbers
        of one float64 draw of the whole table (the same stream, tested), without holding it
        (at 10M viewers x 64 factors, 5 GB)."""
        for name, n in (("user_factors_", n_users), ("item_factors_", n_items)):
            out = np.empty((n, self.factors), np.float32)
            for a in range(0, n, 1 << 16):
                out[a:a + (1 << 16)] = rng.normal(0, self.init_std, (min(1 << 16, n - a), self.factors))
            setattr(self, name, out)

    @staticmethod
    def _normalized(implicit: sp.csr_matrix) -> sp.csr_matrix:
        """Rows scaled by |N(u)|^-1/2 (SVD++'s normalisation)."""
        n = np.asarray(implicit.sum(1)).ravel()
        return sp.diags(1.0 / np.sqrt(np.maximum(n, 1))).astype(np.float32) @ implicit

    #: the arrays a fit learns (what a checkpoint and early stopping's best state keep)
    STATE = ("user_bias_", "item_bias_", "user_factors_", "item_factors_", "user_weights_", "item_weights_",
             "item_implicit_", "user_implicit_")

    def _state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k).copy() for k in self.STATE}

    def _state_views(self) -> dict[str, np.ndarray]:
        """The state's arrays that exist, not copied (to hash; before a fit from parts the
        factors are not drawn yet)."""
        return {k: v for k in self.STATE if (v := getattr(self, k, None)) is not None}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    #: ratings whose scale spans more than this many points are divided down to it inside
    #: the model, so that learning rates and regularisation tuned on star scales (1-5: 4,
    #: 0.5-5: 4.5) hold on 1-10 or 0-100 too; narrower scales are left as they are
    MAX_SPAN = 4.5

    def fit(self, data: TrainData) -> "MatrixFactorization":
        """Fit on ``data``; with early stopping, a validation slice is held out of it.

        With ``ensemble = n > 1``, n models are fitted from seeds seed..seed+n-1 and
        averaged. The average of n factorizations is itself one factorization (factors
        side by side, user side scaled by 1/n, biases averaged), so the result is a single
        model of n x factors dimensions that saves, loads and ranks like any other.
        A wide rating scale is fitted in units of ``rating_unit_`` (see ``MAX_SPAN``) and
        the parameters are scaled back, so predictions are on the data's scale.
        """
        if isinstance(data, PartsTrainData):
            fit_parts([self], [data])
            return self
        scaled, unit, scale = self._in_units(data)
        self._fit(scaled)
        self._from_units(unit, scale)
        return self

    def _in_units(self, data: TrainData) -> tuple[TrainData, float, tuple[float, float]]:
        """``data`` with its ratings in the model's units (see ``MAX_SPAN``), the unit and the
        ratings' range; what :meth:`_from_units` takes back after the fit."""
        if len(data.ratings) == 0:
            raise ModelError("cannot fit a model on zero ratings")
        lo, hi = data.rating_range()
        unit = self._scale_unit(lo, hi)
        if unit != 1.0:
            data = replace(data, ratings=data.ratings / np.float32(unit))
        return data, unit, (lo, hi)

    def _from_units(self, unit: float, scale: tuple[float, float]) -> None:
        """A fit in units (:meth:`_in_units`) -> the parameters on the ratings' own scale."""
        if unit != 1.0:
            self._unscale(unit)
            self.rating_min_, self.rating_max_ = scale
        self.rating_unit_ = unit

    def _scale_unit(self, lo: float, hi: float) -> float:
        """What ratings from ``lo`` to ``hi`` are divided by inside the fit (see MAX_SPAN)."""
        span = hi - lo
        return span / self.MAX_SPAN if span > self.MAX_SPAN else 1.0

    def _unscale(self, unit: float, arrays: bool = True) -> None:
        """Parameters fitted on ratings / unit -> parameters on the ratings' own scale: biases
        times unit, each side of every dot product times sqrt(unit). ``arrays=False``: all but
        the parameter arrays (a fit from parts: its workers scaled them, :meth:`_unscale_arrays`)."""
        self.global_mean_ *= unit
        self.rating_min_ *= unit
        self.rating_max_ *= unit
        if arrays:
            self._unscale_arrays(unit)
        hist = self.history_
        hist.train_rmse = [x * unit for x in hist.train_rmse]
        hist.val_rmse = [x * unit for x in hist.val_rmse]

    def _unscale_arrays(self, unit: float) -> None:
        u, root = np.float32(unit), np.float32(np.sqrt(unit))
        self.user_bias_ = self.user_bias_ * u
        self.item_bias_ = self.item_bias_ * u
        for name in ("user_factors_", "item_factors_", "user_weights_", "item_weights_", "item_implicit_",
                     "user_implicit_"):
            setattr(self, name, getattr(self, name) * root)

    def _validation_share(self) -> float:
        """The share of the ratings a fit from parts holds out for early stopping."""
        return float(self.validation_fraction) if self.early_stopping else 0.0

    def _fit(self, data: TrainData) -> "MatrixFactorization":
        if self.ensemble > 1:
            self._fit_ensemble(data)
            self._fit_watch(data)
            self._fit_content(data, np.zeros(len(data.ratings), bool))
            return self
        val_mask, rng = self._fit_begin(data)
        t0 = time.perf_counter()
        if self.optimizer == "adam" and self.engine is not None and self.engine.kind == "ray":
            from movierec.models._adam_ray import fit_adam_ray

            self.history_ = fit_adam_ray(self, data, val_mask, rng, self.engine)
        elif self.optimizer == "adam":
            from movierec.models._adam import fit_adam

            self.history_ = fit_adam(self, data, val_mask, rng)
        elif self.optimizer == "sgd":
            self.history_ = self._fit_sgd(data, val_mask, rng)
        else:
            raise ModelError(f"unknown optimizer {self.optimizer!r} (sgd or adam)")
        self._fit_end(data, val_mask, time.perf_counter() - t0)
        return self

    def _fit_begin(self, data: TrainData) -> tuple[np.ndarray, np.random.Generator]:
        """A fit up to the training itself: the validation slice (True: held out) and the
        generator the training goes on drawing from, the model's starting state set."""
        rng = np.random.default_rng(self.seed)
        n = len(data.ratings)
        val_mask = np.zeros(n, bool)
        real = np.ones(n, bool) if data.weights is None else data.weights >= 1.0
        if self.early_stopping and real.sum() >= 50:
            # validation on real ratings only (pseudo-ratings are never judged against)
            cand = np.flatnonzero(real)
            val_mask[cand[rng.permutation(len(cand))[: max(1, int(len(cand) * self.validation_fraction))]]] = True
        self._init_state(data, rng)
        self._last_log = time.perf_counter()
        # the mean of the real ratings actually trained on
        self.global_mean_ = float(data.ratings[~val_mask & real].mean())
        check_trainer(self)  # also for a model built in Python, not from a config
        return val_mask, rng

    def _fit_end(self, data: TrainData, val_mask: np.ndarray, seconds: float) -> None:
        """What a fit does after the training (:meth:`_fit_begin`, ``history_`` set)."""
        self.fit_seconds_ = seconds
        self.n_train_ = int((~val_mask).sum())
        self._reset_unrated(data, np.bincount(data.users[~val_mask], minlength=data.n_users),
                            np.bincount(data.items[~val_mask], minlength=data.n_items))
        self._fit_watch(data)
        self._fit_content(data, val_mask)

    def _parts_begin(self, data: PartsTrainData) -> dict:
        """A fit whose ratings stay in the cluster's parts (Adam on Ray), up to the training
        itself (:func:`fit_parts`): the validation slice is a hash of (viewer, movie, seed)
        that every worker computes; the driver sets the model up from the parts' figures
        (:meth:`PartsTrainData.summary`). Returns what :meth:`_parts_end` and the workers need."""
        if self.optimizer != "adam" or self.engine is None or self.engine.kind != "ray":
            raise ModelError("ratings in parts train only with model.optimizer adam on engine.kind ray")
        if self.ensemble > 1 or self.implicit or self.ranking != "rating":
            raise ModelError("a fit from parts takes no ensemble, implicit sets or watch model "
                             "(their arrays are O(ratings) in the driver)")
        src = data.summary(self.seed, self._validation_share())
        if src.rated == 0:
            raise ModelError("cannot fit a model on zero ratings")
        lo, hi = data.rating_range()
        unit = self._scale_unit(lo, hi)
        if unit != 1.0:  # (the same parts and figures, read in units)
            from dataclasses import replace

            data = replace(data, unit=unit)
        if src.n_val and src.rated < 50:  # as locally: no validation slice of fewer than 50 ratings
            src = data.summary(self.seed, 0.0)
        rng = np.random.default_rng(self.seed)
        # the random factors are drawn by each worker from the seed (the same numbers): the
        # driver holds no O(viewers x factors) array, nor a copy of one in the object store
        self._init_state(data, rng, draw=False)
        self._last_log = time.perf_counter()
        self.global_mean_ = src.global_mean / data.unit  # the ratings actually trained on
        check_trainer(self)
        # the workers zero the rows of viewers and movies without training ratings before they
        # write the final state, which the driver then maps from the file (it holds no copy)
        zero = self._unrated_rows(data, src.user_counts, src.item_counts)
        return {"data": data, "src": src, "rng": rng, "zero": zero, "unit": unit, "range": (lo, hi)}

    def _parts_end(self, begun: dict, history: History, seconds: float) -> None:
        """What a fit from parts does after the training (:meth:`_parts_begin`)."""
        data, unit = begun["data"], begun["unit"]
        self.history_ = history
        self.fit_seconds_ = seconds
        self.n_train_ = int(begun["src"].n_train)
        self._fit_watch(data)
        self._fit_content(data, None)
        if unit != 1.0:  # (the workers scaled the parameter arrays: the driver holds none)
            self._unscale(unit, arrays=False)
            self.rating_min_, self.rating_max_ = begun["range"]
        self.rating_unit_ = unit

    def _reset_unrated(self, data: TrainData, counts: np.ndarray, item_counts: np.ndarray) -> None:
        """Users without training ratings keep no random factors: their vector is what their
        features, implicit feedback (reviews) and neighbourhood say. Movies without training
        ratings keep none either: their vector is what their features (genres, year) and,
        with review content, their reviews say (:meth:`_fit_content`). ``counts``,
        ``item_counts``: training ratings per user and per movie."""
        self._zero_rows(*self._unrated_rows(data, counts, item_counts))

    def _unrated_rows(self, data: TrainData, counts: np.ndarray, item_counts: np.ndarray) -> tuple:
        """(users, movies) whose rows :meth:`_reset_unrated` zeroes, as int32 indices."""
        nb_rows = np.diff(data.neighbour_arrays()[0]) > 0 if self.social_reg > 0 else np.zeros(data.n_users, bool)
        return (np.flatnonzero((counts == 0) & ~nb_rows).astype(np.int32),
                np.flatnonzero(item_counts == 0).astype(np.int32))

    def _zero_rows(self, users: np.ndarray, movies: np.ndarray) -> None:
        """No factors and no bias for ``users`` and ``movies`` (:meth:`_unrated_rows`)."""
        self.user_factors_[users] = 0.0
        self.user_bias_[users] = 0.0
        self.item_factors_[movies] = 0.0
        self.item_bias_[movies] = 0.0

    def _fit_content(self, data: TrainData, val_mask: np.ndarray) -> None:
        """Review content -> the model, for movies with reviews and no rating (and viewers who
        write but do not rate), by ridge maps (:class:`movierec.models.content.ContentMap`)
        fitted on those with real training ratings:

        - movies: content -> (the movie's mean predicted rating and mean rank score over the
          viewers with ratings, its free factors q_i, its watch vector). A new movie gets the
          factors its reviews predict (it lands near the movies whose reviews read alike, in
          the viewers' taste space; genres and the other features keep their own part, V y_i),
          the watch vector where nobody rated or reviewed it, and then a bias that makes its
          mean predicted rating what its reviews predict, and a rank-score shift
          (``content_rank_bias_``) that does the same for its mean rank score: how far up lists
          a movie comes is mostly how many watch it, which its reviews (how many, how warm) say
          more about than its genres (benchmarks/results/cold_start.md);
        - viewers: content -> (bias, free factors p_u, watch vector), for those whose vector
          nothing else set (no ratings, no trusted neighbours).

        Each output has its own L2 weight (leave-one-out): an output the content does not
        predict gets the mean of those with ratings. The maps are kept in the model
        (``item_content_map_``, ``user_content_map_``)."""
        self.item_content_map_ = np.zeros((0, 0), np.float32)
        self.user_content_map_ = np.zeros((0, 0), np.float32)
        self.content_rank_bias_ = np.zeros(data.n_items, np.float32)
        c = data.content
        if c is None:
            return
        real = ~val_mask if data.weights is None else (~val_mask & (data.weights >= 1.0))
        n_i = np.bincount(data.items[real], minlength=data.n_items)
        n_u = np.bincount(data.users[real], minlength=data.n_users)
        raters = n_u > 0 if (n_u > 0).any() else np.ones(data.n_users, bool)

        def means() -> np.ndarray:  # per movie: mean predicted rating, mean rank score (over raters)
            rating = self.item_bias_ + self.item_vectors() @ self.user_vectors()[raters].mean(0)
            return np.column_stack([rating, self._mean_rank_scores(raters)])

        touched = np.asarray(data.implicit()[:, :data.n_items].sum(0)).ravel() > 0
        self.item_content_map_, placed = self._content_side(
            c.item, c.item_has, n_i, [means(), self.item_factors_, self.watch_item_], "movies")
        if placed is not None:
            cold = c.item_has & (n_i == 0)
            self.item_factors_ = placed[1]
            blind = cold & ~touched  # BPR gave these no watch vector
            self.watch_item_[blind] = placed[2][blind]
            self.item_bias_[cold] += placed[0][cold, 0] - means()[cold, 0]
            # the rank score moved with the bias (the rankings weigh the rating): measured after it
            self.content_rank_bias_[cold] = placed[0][cold, 1] - means()[cold, 1]
        empty = ~np.abs(self.user_factors_).any(1)
        self.user_content_map_, placed = self._content_side(
            c.user, c.user_has & empty, n_u, [self.user_bias_[:, None], self.user_factors_, self.watch_user_],
            "viewers", fit_on=c.user_has)
        if placed is not None:
            self.user_bias_, self.user_factors_, self.watch_user_ = placed[0][:, 0].copy(), placed[1], placed[2]

    def _mean_rank_scores(self, users: np.ndarray) -> np.ndarray:
        """Each movie's rank score averaged over ``users`` (a mask): the score is linear in the
        user's vectors, so the mean user's score, without a users x movies matrix."""
        v = self._rank_vectors()
        users = np.flatnonzero(users) if users.any() else np.arange(len(v.user_bias))
        out = v.constant + v.user_bias[users].mean() + v.item_bias + v.item @ v.user[users].mean(0)
        ii = self.item_item()
        if ii is not None:
            out = out + np.asarray(ii[0][users].mean(0)).ravel() @ ii[1]
        return np.asarray(out, np.float32)

    def _content_side(self, content: np.ndarray, has: np.ndarray, counts: np.ndarray, parts: list[np.ndarray],
                      what: str, fit_on: np.ndarray | None = None, min_fit: int = 20):
        """Fit the content map on one side (movies or viewers): from the content of those with
        ratings (and content; ``fit_on`` if given) to ``parts``, weighted by how many ratings
        back their vectors; the rows of those in ``has`` without ratings are replaced by the
        map's prediction. Returns the map as an array and the new parts (None: none placed)."""
        from movierec.models.content import ContentMap

        warm = (has if fit_on is None else fit_on) & (counts > 0)
        cold = has & (counts == 0)
        if warm.sum() < min_fit:
            log.info("review content: %d %s with ratings and reviews (< %d); no content map", int(warm.sum()),
                     what, min_fit)
            return np.zeros((0, 0), np.float32), None
        widths = np.cumsum([0] + [p.shape[1] for p in parts])
        T = np.hstack(parts).astype(np.float32)
        cmap = ContentMap(self.content_reg).fit(content[warm], T[warm], counts[warm] / (counts[warm] + 10.0))
        log.info("review content: map fitted on %d %s (alpha %.3g); %d %s without ratings placed by their reviews",
                 int(warm.sum()), what, cmap.alpha_, int(cold.sum()), what)
        if not cold.any():
            return cmap.as_array(), None
        T[cold] = cmap.predict(content[cold])
        return cmap.as_array(), [T[:, widths[i]: widths[i + 1]].copy() for i in range(len(parts))]

    def _fit_watch(self, data: TrainData) -> None:
        """The ranking side: BPR on which movies users rated or reviewed (own factors).

        A model trained only to predict ratings ranks poorly (an obscure film predicted
        at 4.6 is rarely watched). Top-N lists rank by ``watch score + rank_rating_weight
        * (predicted rating - μ)``; rating predictions themselves are untouched.
        """
        n_users, n_items = data.n_users, data.n_items
        kw = self.watch_factors if self.ranking == "hybrid" else 0
        self.ranking_fit_seconds_ = 0.0
        self.ease_item_ = np.zeros((0, 0), np.float32)
        self.__dict__.pop("ease_history_", None)  # an EASE ranker's only (a loaded model keeps none either)
        if self.ranking == "ease":
            from movierec.models._ease import ease_weights

            t0 = time.perf_counter()
            hist = data.implicit()[:, :n_items].tocsr()  # movies only (trusted users may follow)
            self.ease_item_ = ease_weights(hist, self.ease_lambda, self.ease_max_items)
            self.ease_history_ = hist.astype(np.float32)
            self.ranking_fit_seconds_ = time.perf_counter() - t0
        rng = np.random.default_rng(self.seed + 7919)
        self.watch_user_ = rng.normal(0, 0.1, (n_users, kw)).astype(np.float32)
        self.watch_item_ = rng.normal(0, 0.1, (n_items, kw)).astype(np.float32)
        self.watch_bias_ = np.zeros(n_items if kw else 0, np.float32)
        if not kw:
            return
        from movierec.models._sgd import bpr_epoch

        pos = data.implicit()[:, :n_items].tocsr()  # movies only (trusted users may follow)
        pos.sort_indices()
        users = np.repeat(np.arange(n_users, dtype=np.int32), np.diff(pos.indptr))
        items = pos.indices.astype(np.int32)
        ptr, idx = pos.indptr.astype(np.int64), pos.indices.astype(np.int32)
        t0 = time.perf_counter()
        for epoch in range(self.watch_epochs):
            loss = bpr_epoch(users, items, rng.permutation(len(users)), ptr, idx, self.watch_user_,
                             self.watch_item_, self.watch_bias_, np.float32(self.watch_learning_rate),
                             np.float32(self.watch_reg), int(rng.integers(1 << 31)))
            log.debug("watch epoch %d: BPR loss %.4f", epoch + 1, loss / max(1, len(users)))
        self.ranking_fit_seconds_ = time.perf_counter() - t0

    def _fit_ensemble(self, data: TrainData) -> "MatrixFactorization":
        members = []
        for s in range(self.ensemble):
            params = dict(self.get_params(), ensemble=1, seed=self.seed + s, ranking="rating")
            log.info("ensemble: member %d/%d", s + 1, self.ensemble)
            # the content map is fitted once, on the average
            members.append(MatrixFactorization(engine=self.engine, **params).fit(replace(data, content=None)))
        n = float(self.ensemble)
        first = members[0]
        self.global_mean_ = first.global_mean_
        self.rating_min_, self.rating_max_ = first.rating_min_, first.rating_max_
        self.user_bias_ = np.mean([m.user_bias_ for m in members], 0).astype(np.float32)
        self.item_bias_ = np.mean([m.item_bias_ for m in members], 0).astype(np.float32)
        self.user_factors_ = np.hstack([m.user_factors_ for m in members]) / np.float32(n)
        self.item_factors_ = np.hstack([m.item_factors_ for m in members])
        self.user_weights_ = np.vstack([m.user_weights_ for m in members]) / np.float32(n)
        self.item_weights_ = np.vstack([m.item_weights_ for m in members])
        self.user_features_, self.item_features_ = first.user_features_, first.item_features_
        self.item_implicit_ = np.hstack([m.item_implicit_ for m in members]) / np.float32(n)
        self.user_implicit_ = np.hstack([m.user_implicit_ for m in members]) / np.float32(n)
        self.history_ = first.history_
        self.fit_seconds_ = float(sum(m.fit_seconds_ for m in members))
        self.n_train_ = first.n_train_
        return self

    def _fit_sgd(self, data: TrainData, val_mask: np.ndarray, rng: np.random.Generator) -> History:
        tr_all = np.flatnonzero(~val_mask).astype(np.int64)
        va = np.flatnonzero(val_mask)
        # pseudo-ratings (weight w < 1) take part in an epoch with probability w: in
        # expectation the same as scaling their gradient by w
        if data.weights is not None:
            pseudo = tr_all[data.weights[tr_all] < 1.0]
            tr = tr_all[data.weights[tr_all] >= 1.0]
            p_keep = data.weights[pseudo]
        else:
            tr, pseudo = tr_all, tr_all[:0]
        real_tr = tr
        plan = self._sgd_plan(data, tr, pseudo, rng)
        counts = np.bincount(data.users[tr], minlength=data.n_users)
        # shared projections see every rating: a smaller step keeps them stable
        n_rated = max(1, len(tr))
        tracker = EpochTracker(self, data, va)
        lr = self.learning_rate
        for epoch in range(self.epochs):
            lr_feat = lr * min(1.0, 100.0 / np.sqrt(n_rated)) * plan["feat_scale"]
            if len(pseudo):
                tr = np.concatenate([real_tr, pseudo[rng.random(len(pseudo)) < p_keep]])
                if self.implicit:
                    plan["r_ptr"][1:] = np.cumsum(np.bincount(data.users[tr], minlength=data.n_users))
            sse = self._sgd_epoch(data, plan, tr, rng, lr, lr_feat)
            if plan["use_feat"] and self.reg_features > 0:
                shrink = np.float32(max(0.0, 1.0 - lr * self.reg_features))
                self.user_weights_ *= shrink
                self.item_weights_ *= shrink
            if self.social_reg > 0:
                from movierec.models._sgd import fill_cold_users

                fill_cold_users(self.user_factors_, self.user_bias_, counts, plan["nb_ptr"], plan["nb_idx"],
                                plan["nb_w"])
            if tracker.end_epoch(epoch, sse, len(tr)):
                break
            lr *= self.lr_decay
        return tracker.finish()

    def _sgd_plan(self, data: TrainData, tr: np.ndarray, pseudo: np.ndarray, rng: np.random.Generator) -> dict:
        """What every SGD epoch reuses: the social graph as CSR arrays, the feature matrices,
        the rating layout (user by user for plain MF) and the feature step's scale."""
        nb_ptr, nb_idx, nb_w = data.neighbour_arrays()
        use_feat = bool(self.use_features and (self.user_weights_.size or self.item_weights_.size))
        X = self.user_features_ if self.user_features_.shape[1] else np.zeros((data.n_users, 0), np.float32)
        Y = self.item_features_ if self.item_features_.shape[1] else np.zeros((data.n_items, 0), np.float32)
        threads = self._threads(len(tr))
        plan = {"nb_ptr": nb_ptr, "nb_idx": nb_idx, "nb_w": nb_w, "use_feat": use_feat, "X": X, "Y": Y,
                "threads": threads,
                # plain MF: user by user (cache-friendly); shared parameters (feature projections,
                # social term) need a rating-level shuffle or their updates come in correlated runs
                "by_user_layout": not self.implicit and not use_feat and self.social_reg == 0 and not len(pseudo)}
        if plan["by_user_layout"] and threads > 1:
            plan["blocks"] = _block_layout(tr, data, threads, BLOCKS_PER_THREAD * threads, rng)
        elif threads > 1 and not self.implicit:
            # shared parameters on several cores: each rating's group (viewer part, movie block)
            m = BLOCKS_PER_THREAD * threads
            part = _range_of(_ranges(np.bincount(data.users[tr], minlength=data.n_users), threads))
            block = _range_of(_ranges(np.bincount(data.items[tr], minlength=data.n_items), m))
            plan["shared_blocks"] = (part[data.users] * m + block[data.items], m)
        elif plan["by_user_layout"]:
            # ratings stored user by user, each user's in a random order
            srt = _user_by_user(tr, data.users, rng)
            by_ptr = np.zeros(data.n_users + 1, np.int64)
            by_ptr[1:] = np.cumsum(np.bincount(data.users[srt], minlength=data.n_users))
            plan["by_user"] = (by_ptr, data.items[srt], data.ratings[srt])
        if self.implicit:
            imp = data.implicit()
            plan["n_ptr"], plan["n_idx"] = imp.indptr.astype(np.int64), imp.indices.astype(np.int32)
            plan["r_ptr"] = np.zeros(data.n_users + 1, np.int64)
            plan["r_ptr"][1:] = np.cumsum(np.bincount(data.users[tr], minlength=data.n_users))
        # a projection step moves a vector by about lr_feat * |x|^2: with many features the
        # step has to shrink or it diverges (8 ~ what MovieLens' demographics + genres give)
        sq = float((X.astype(np.float64) ** 2).sum(1).mean() if X.shape[1] else 0.0) + \
            float((Y.astype(np.float64) ** 2).sum(1).mean() if Y.shape[1] else 0.0)
        plan["feat_scale"] = min(1.0, 8.0 / sq) if sq > 0 else 1.0
        return plan

    def _sgd_epoch(self, data: TrainData, plan: dict, tr: np.ndarray, rng: np.random.Generator, lr: float,
                   lr_feat: float) -> float:
        """One epoch in the plan's layout; returns the training squared error."""
        from movierec.models._kernels import group_rows, sgd_epoch_blocks, sgd_epoch_by_user

        p = plan
        # plain MF, on one core or several: without importing numba (movierec.models._kernels)
        if "by_user" in p:
            bu = p["by_user"]
            return sgd_epoch_by_user(
                rng.permutation(data.n_users).astype(np.int32), bu[0], bu[1], bu[2],
                np.float32(self.global_mean_), self.user_bias_, self.item_bias_,
                self.user_factors_, self.item_factors_, np.float32(lr), np.float32(self.reg),
                np.float32(self.reg_bias))
        if "blocks" in p:  # plain MF on several cores: the users' parts by the movies' blocks
            b_ptr, items, vals, parts, n_blocks = p["blocks"]
            # each part's viewers (a range of indices) in a new random order
            order = np.concatenate([lo + rng.permutation(hi - lo) for lo, hi in zip(parts[:-1], parts[1:])])
            return sgd_epoch_blocks(
                order.astype(np.int32), parts, b_ptr, items, vals,
                np.float32(self.global_mean_), self.user_bias_, self.item_bias_, self.user_factors_,
                self.item_factors_, np.float32(lr), np.float32(self.reg), np.float32(self.reg_bias), n_blocks)
        from movierec.models import _sgd  # numba: every other layout

        nb = (p["nb_ptr"], p["nb_idx"], p["nb_w"])
        if self.implicit:
            # users in random order; each user's ratings in random order
            by_user = _user_by_user(tr, data.users, rng)
            sse = _sgd.sgd_epoch_grouped(
                rng.permutation(data.n_users).astype(np.int32), p["r_ptr"], data.items[by_user],
                data.ratings[by_user], p["n_ptr"], p["n_idx"], np.float32(self.global_mean_),
                self.user_bias_, self.item_bias_, self.user_factors_, self.item_factors_,
                self.item_implicit_, self.user_weights_, self.item_weights_, p["X"], p["Y"], *nb,
                np.float32(lr), np.float32(lr_feat), np.float32(self.reg), np.float32(self.reg_bias),
                np.float32(self.reg_implicit), np.float32(self.social_reg), p["use_feat"],
            )
            self.user_implicit_ = np.asarray(self._implicit_norm @ self.item_implicit_, np.float32)
            return sse
        if "shared_blocks" in p:
            key, m = p["shared_blocks"]
            groups = p["threads"] * m
            g_ptr = np.zeros(groups + 1, np.int64)
            np.cumsum(np.bincount(key[tr], minlength=groups), out=g_ptr[1:])
            return _sgd.sgd_epoch_blocks_shared(
                data.users, data.items, data.ratings, group_rows(tr[rng.permutation(len(tr))], key, groups),
                g_ptr, m, np.float32(self.global_mean_), self.user_bias_, self.item_bias_, self.user_factors_,
                self.item_factors_, self.user_weights_, self.item_weights_, p["X"], p["Y"], *nb,
                np.float32(lr), np.float32(lr_feat), np.float32(self.reg), np.float32(self.reg_bias),
                np.float32(self.social_reg), p["use_feat"])
        return _sgd.sgd_epoch_shuffled(
            data.users, data.items, data.ratings, tr[rng.permutation(len(tr))],
            np.float32(self.global_mean_), self.user_bias_, self.item_bias_, self.user_factors_,
            self.item_factors_, self.user_weights_, self.item_weights_, p["X"], p["Y"], *nb,
            np.float32(lr), np.float32(lr_feat), np.float32(self.reg), np.float32(self.reg_bias),
            np.float32(self.social_reg), p["use_feat"])

    def _threads(self, n_ratings: int) -> int:
        """Cores for SGD: all of them from 1M ratings up (``threads=0``), else one.

        One thread is bit-for-bit deterministic under a seed, and so are several (block by
        block) unless the social term is on (it reads neighbours' factors that another
        thread may be writing).
        """
        if self.threads == 1 or (self.threads == 0 and n_ratings < 1_000_000):
            return 1
        from movierec.models._kernels import threads_available

        return max(1, self.threads or threads_available())

    def _record_validation(self, hist: History, data: TrainData, va: np.ndarray, epoch: int,
                           val_sse: float | None = None) -> None:
        """``val_sse``: the validation squared error when the caller summed it (Ray workers,
        each over its share of ``va``), else computed here over ``va``."""
        from movierec._faults import failpoint

        failpoint("train")
        if len(va) and val_sse is not None:
            hist.val_rmse.append(float(np.sqrt(val_sse / len(va))))
        elif len(va):
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
        """Effective user factors p_u + W x_u + |N(u)|^-1/2 sum y_j (n_users x k)."""
        U = self.user_factors_
        if self.user_weights_.size:
            U = U + self.user_features_ @ self.user_weights_.T
        if self.user_implicit_.size:
            U = U + self.user_implicit_
        return U

    def item_vectors(self) -> np.ndarray:
        """Effective item factors q_i + V y_i (n_items x k)."""
        Q = self.item_factors_
        if self.item_weights_.size:
            Q = Q + self.item_features_ @ self.item_weights_.T
        return Q

    def rank_vectors(self) -> ScoreVectors:
        """The rank score's vectors: c + b_u[u] + b_i[i] + U[u]·Q[i] orders the top-N lists.

        With ``ranking='hybrid'``: watch score + β (predicted rating - μ), β =
        rank_rating_weight, as one dot product ([βU, X_w] · [Q, Z_w]). A movie placed by its
        reviews (no ratings) has its scores shifted by ``content_rank_bias_`` (see
        :meth:`_fit_content`).
        """
        v = self._rank_vectors()
        shift = getattr(self, "content_rank_bias_", None)  # absent before the first fit ends
        if shift is not None and shift.any():
            v = v._replace(item_bias=(v.item_bias + shift).astype(np.float32))
        return v

    def _rank_vectors(self) -> ScoreVectors:
        U, Q = self.user_vectors(), self.item_vectors()
        if self.ranking == "ease" and self.ease_item_.size:
            # EASE score (added by item_item()) + w_u (b_i + U_u . Q_i): the rating model's taste,
            # weighted by how much the user has rated (ease_rating_weight, ease_activity_half)
            from movierec.models._ease import activity_weight

            w = activity_weight(np.diff(self.ease_history_.indptr), self.ease_rating_weight,
                                self.ease_activity_half)[:, None] / np.float32(self._unit())
            return ScoreVectors.of(0.0, np.zeros(len(U), np.float32), np.zeros(len(Q), np.float32),
                                   np.hstack([w * U, w]), np.hstack([Q, self.item_bias_[:, None]]))
        if not getattr(self, "watch_user_", np.zeros((0, 0))).size:
            return ScoreVectors.of(self.global_mean_, self.user_bias_, self.item_bias_, U, Q)
        b = np.float32(self.rank_rating_weight / self._unit())
        return ScoreVectors.of(
            b * np.float32(self.global_mean_),
            b * self.user_bias_,
            b * self.item_bias_ + self.watch_bias_,
            np.hstack([b * U, self.watch_user_]).astype(np.float32),
            np.hstack([Q, self.watch_item_]).astype(np.float32),
        )

    def _unit(self) -> float:
        """Ratings per unit of the rank score's rating part: the weights of the rating model in
        a rank score (rank_rating_weight, ease_rating_weight) are per star of a 1-5 scale,
        whatever the data's scale (see MAX_SPAN)."""
        return float(getattr(self, "rating_unit_", 1.0) or 1.0)

    def item_item(self) -> tuple[sp.csr_matrix, np.ndarray] | None:
        """(users x movies history, movies x movies weights) of an item-item ranker (EASE):
        its rank score adds history_u @ weights to the dot product of :meth:`rank_vectors`."""
        if self.ranking == "ease" and self.ease_item_.size:
            return self.ease_history_, self.ease_item_
        return None

    def _predict_idx(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        U, Q = self.user_vectors(), self.item_vectors()
        out = self.global_mean_ + self.user_bias_[users] + self.item_bias_[items]
        # in blocks: gathering U[users] and Q[items] whole is two fresh (n x k) arrays (320 MB for
        # 400k test ratings at k = 100), ten times slower than blocks that stay in cache. The
        # same arithmetic as the served bundle's (evaluation.evaluate.bundle_recommender), to the last bit.
        for s in range(0, len(users), PREDICT_BLOCK):
            out[s: s + PREDICT_BLOCK] += np.einsum("ij,ij->i", U[users[s: s + PREDICT_BLOCK]],
                                                   Q[items[s: s + PREDICT_BLOCK]])
        return out

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
              "item_weights_", "user_features_", "item_features_", "item_implicit_", "user_implicit_",
              "watch_user_", "watch_item_", "watch_bias_", "ease_item_", "item_content_map_", "user_content_map_",
              "content_rank_bias_")

    def save(self, path: str | Path) -> None:
        """Write the model to ``path`` (an .npz file); round-trips exactly through load."""
        meta = {
            "format_version": FORMAT_VERSION,
            "params": self.get_params(),
            "global_mean": self.global_mean_,
            "rating_min": self.rating_min_,
            "rating_max": self.rating_max_,
            "fit_seconds": getattr(self, "fit_seconds_", None),
            "ranking_fit_seconds": getattr(self, "ranking_fit_seconds_", None),
            "n_train": getattr(self, "n_train_", None),
            "rating_unit": getattr(self, "rating_unit_", 1.0),
            "history": asdict(self.history_) if hasattr(self, "history_") else None,
        }
        arrays = {k: getattr(self, k) for k in self.ARRAYS}
        hist = getattr(self, "ease_history_", None)
        if hist is None:  # (as an empty scipy matrix is saved, without importing scipy)
            # (zeros without an array of them: written a chunk at a time)
            arrays.update(ease_history_indptr=np.broadcast_to(np.int32(0), (len(self.user_bias_) + 1,)),
                          ease_history_indices=np.zeros(0, np.int32),
                          ease_history_shape=np.array([len(self.user_bias_), 0]))
        else:
            arrays.update(ease_history_indptr=hist.indptr, ease_history_indices=hist.indices,
                          ease_history_shape=np.array(hist.shape))
        # np.savez's file; an array mapped from a file (a fit on Ray: the workers' final state)
        # is copied from that file, not read through the driver's memory
        with open(path, "wb") as fh:
            savez(fh, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "MatrixFactorization":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format_version") != FORMAT_VERSION:
                    raise ModelError(f"{path}: model format {meta.get('format_version')} is not supported "
                                     f"(this movierec reads format {FORMAT_VERSION}); train a new model")
                # memory-mapped, read-only (a version's files never change): a command reads the
                # pages it uses, and a Ray task handed an array maps the file (movierec._npz)
                mapped = npz_mapped(path) or z
                arrays = {k: mapped[k] for k in cls.ARRAYS}
                shape = tuple(int(x) for x in z["ease_history_shape"])
                if shape[1]:  # an EASE ranker's history (others keep none: no scipy to load them)
                    arrays["ease_history_"] = sp.csr_matrix(
                        (np.ones(len(z["ease_history_indices"]), np.float32), z["ease_history_indices"],
                         z["ease_history_indptr"]), shape=shape)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: not a readable movierec model ({exc})") from exc
        m = cls(**meta["params"])
        for k, v in arrays.items():
            setattr(m, k, v)
        m.global_mean_ = meta["global_mean"]
        m.rating_min_ = meta["rating_min"]
        m.rating_max_ = meta["rating_max"]
        m.fit_seconds_ = meta["fit_seconds"]
        m.ranking_fit_seconds_ = meta.get("ranking_fit_seconds") or 0.0
        if meta.get("n_train") is not None:
            m.n_train_ = int(meta["n_train"])
        m.rating_unit_ = float(meta.get("rating_unit") or 1.0)
        if meta.get("history"):
            m.history_ = History(**meta["history"])
        return m
