"""evaluate: score the model on the test part, next to baselines, ablations and groups.

For ``split.method: kfold`` every fold is trained and scored and each figure is the
mean over folds (``folds`` lists each fold's, ``std`` their standard deviations).

Why one module of this size: one evaluation protocol (holdout or k folds, baselines,
ablations, groups, curves, intervals) whose parts share the fold's data and scorer; metrics
and statistics are in ``metrics`` and ``stats``, rendering in ``report``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from movierec._lazy import sp

from movierec.catalog import Catalog
from movierec.config import Config
from movierec.errors import ConfigError
from movierec.evaluation import metrics as M
from movierec.evaluation.stats import UserScores
from movierec.models.mf import ScoreVectors
from movierec.ranking import top_n

log = logging.getLogger(__name__)


class Recommender:
    """What evaluation needs from a model, a baseline or a peer: rating predictions and
    top-K lists (by ``vectors``, shared ``rank_scores``, or any ``rank_fn``).

    Words: a *sentiment score* is what a text scorer gives a review, a *rank score* what a
    list is ordered by, a *metric* what evaluation reports; a ``Recommender`` is the thing
    measured."""

    def __init__(self, predict, vectors=None, rank_scores=None, rank_fn=None, item_item=None, fallback=None):
        self.predict = predict  # (users, items) -> ratings; None: no rating predictions (a top-N peer)
        self.vectors = vectors  # ScoreVectors for blocked ranking
        self.item_item = item_item  # (history, weights) added to the vectors' score (EASE)
        self.rank_scores = rank_scores  # n_items scores shared by all users (popularity)
        self.rank_fn = rank_fn  # (users, k, seen) -> users x k movie indices (any other ranker)
        # (n_users bool mask, n_items scores): the users in the mask are ranked by these scores
        # instead (the popularity list for users without training ratings)
        self.fallback = fallback
        self.fit_seconds: float | None = None  # a peer's fit, reported beside its metrics


def bias_baseline(train: pd.DataFrame, n_users: int, n_items: int, reg_u: float = 15.0,
                  reg_i: float = 10.0, iters: int = 10):
    """μ + b_u + b_i by alternating damped means (Surprise's baseline estimates)."""
    u, i, r = train["user_idx"].to_numpy(), train["movie_idx"].to_numpy(), train["rating"].to_numpy(np.float64)
    mu = r.mean()
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    cu = np.bincount(u, minlength=n_users)
    ci = np.bincount(i, minlength=n_items)
    for _ in range(iters):
        bi = np.bincount(i, r - mu - bu[u], minlength=n_items) / (ci + reg_i)
        bu = np.bincount(u, r - mu - bi[i], minlength=n_users) / (cu + reg_u)
    return mu, bu, bi


def baseline_recommenders(train: pd.DataFrame, n_users: int, n_items: int, names: list[str],
                           cfg: Config | None = None, model=None) -> dict[str, Recommender]:
    """The named baselines fitted on ``train``; the top-N peers (:mod:`movierec.evaluation.peers`)
    with their settings from ``cfg`` (the defaults without one). ``model``: the fold's model,
    whose EASE matrix the ``ease`` peer takes over when it is the same closed form on the
    same interactions with the same lambda (no reviews, no pseudo-ratings)."""
    out = {}
    lo, hi = float(train["rating"].min()), float(train["rating"].max())
    mu = float(train["rating"].mean())
    for name in names:
        if name == "global_mean":
            out[name] = Recommender(lambda us, its, mu=mu: np.full(len(us), mu))
        elif name == "popularity":
            i = train["movie_idx"].to_numpy()
            cnt = np.bincount(i, minlength=n_items)
            item_mean = (np.bincount(i, train["rating"].to_numpy(np.float64) - mu, minlength=n_items)) / (cnt + 10.0) + mu
            out[name] = Recommender(lambda us, its, m=item_mean: m[its], rank_scores=cnt.astype(np.float32))
        elif name == "random":  # the floor: every list a seeded random order of the movies
            out[name] = Recommender(lambda us, its, mu=mu: np.full(len(us), mu), rank_fn=_random_lists)
        elif name == "bias":
            m, bu, bi = bias_baseline(train, n_users, n_items)
            vec = ScoreVectors.of(m, bu.astype(np.float32), bi.astype(np.float32),
                                  np.zeros((n_users, 1), np.float32), np.zeros((n_items, 1), np.float32))
            out[name] = Recommender(lambda us, its, m=m, bu=bu, bi=bi: np.clip(m + bu[us] + bi[its], lo, hi), vectors=vec)
    wanted = [n for n in names if n not in out]
    if wanted:
        from movierec.evaluation import peers

        cfg = cfg or Config()
        X = peers.interactions(train, n_users, n_items)
        for name in wanted:
            log.info("evaluate: fitting the %s peer", name)
            parts = _same_ease(model, X, peers.ease_lambda(cfg)) if name == "ease" else None
            parts = parts or peers.fit_peer(name, X, cfg)
            sec = parts.pop("fit_seconds")
            out[name] = Recommender(None, **parts)
            out[name].fit_seconds = sec
    return {n: out[n] for n in names}


def _same_ease(model, X: sp.csr_matrix, lam: float) -> dict | None:
    """The ease peer's parts from ``model``'s own EASE matrix, when that was fitted on exactly
    ``X`` with ``lam`` (the peer would compute the same matrix again)."""
    ii = model.item_item() if model is not None else None
    if ii is None or float(getattr(model, "ease_lambda", -1)) != lam or ii[0].shape != X.shape or (ii[0] != X).nnz:
        return None
    return {"vectors": ScoreVectors.of(0.0, np.zeros(X.shape[0], np.float32), np.zeros(X.shape[1], np.float32),
                                       np.zeros((X.shape[0], 0), np.float32), np.zeros((X.shape[1], 0), np.float32)),
            "item_item": (X, ii[1]), "fit_seconds": float(getattr(model, "ranking_fit_seconds_", 0.0) or 0.0)}


def _random_lists(users: np.ndarray, k: int, seen: sp.csr_matrix) -> np.ndarray:
    """A random order of the unseen movies for each user (seeded by the user)."""
    out = np.full((len(users), k), -1, np.int64)
    for row, u in enumerate(users):
        s = np.random.default_rng(int(u)).random(seen.shape[1])
        s[seen.indices[seen.indptr[u]: seen.indptr[u + 1]]] = np.inf
        top = np.argsort(s, kind="stable")[:k]
        top = top[np.isfinite(s[top])]
        out[row, : len(top)] = top
    return out


def model_recommender(model) -> Recommender:
    return Recommender(lambda us, its: model.predict(us, its)[0], vectors=model.rank_vectors(),
                  item_item=model.item_item())


def bundle_recommender(bundle, user_ids, movie_ids):
    """A scorer for a saved model over *today's* id space (unknown ids fall back to biases)."""
    um = bundle.user_ids.get_indexer(user_ids)
    mm = bundle.movie_ids.get_indexer(movie_ids)
    ku, km = um >= 0, mm >= 0

    def remap(vectors) -> ScoreVectors:
        mu, bu, bi, U, Q = vectors
        return ScoreVectors(mu, np.where(ku, bu[np.maximum(um, 0)], 0).astype(np.float32),
                np.where(km, bi[np.maximum(mm, 0)], 0).astype(np.float32),
                np.where(ku[:, None], U[np.maximum(um, 0)], 0).astype(np.float32),
                np.where(km[:, None], Q[np.maximum(mm, 0)], 0).astype(np.float32))

    mu, bu_n, bi_n, U_n, Q_n = remap(bundle.rating_vectors)
    lo, hi = bundle.model.rating_min_, bundle.model.rating_max_

    def predict(us, its):
        return np.clip(mu + bu_n[us] + bi_n[its] + np.einsum("ij,ij->i", U_n[us], Q_n[its]), lo, hi)

    item_item = None
    if bundle.item_item is not None:  # EASE: its history and weights in today's id space too
        hist, weights = bundle.item_item
        to_user = np.full(hist.shape[0], -1)
        to_user[um[ku]] = np.flatnonzero(ku)
        to_movie = np.full(hist.shape[1], -1)
        to_movie[mm[km]] = np.flatnonzero(km)
        h = hist.tocoo()
        keep = (to_user[h.row] >= 0) & (to_movie[h.col] >= 0)
        hist_n = sp.csr_matrix((h.data[keep], (to_user[h.row[keep]], to_movie[h.col[keep]])),
                               shape=(len(user_ids), len(movie_ids)))
        w_n = np.zeros((len(movie_ids), len(movie_ids)), np.float32)
        w_n[np.ix_(km, km)] = weights[np.ix_(mm[km], mm[km])]
        item_item = (hist_n, w_n)
    return Recommender(predict, vectors=remap(bundle.vectors), item_item=item_item)


def _topk(scorer: Recommender, users: np.ndarray, k: int, seen: SeenMovies | sp.csr_matrix,
          candidates: np.ndarray | None = None) -> np.ndarray:
    """Top-``k`` movies of each user, never one in ``seen``; with ``candidates`` (sorted movie
    indices) only those are ranked (the new movies of a ``cold_items`` split); the users in
    the scorer's ``fallback`` mask get the fallback scores' list."""
    if scorer.fallback is not None:
        mask, scores = scorer.fallback
        cold = np.asarray(mask)[users]
        if cold.any():
            import copy

            own = copy.copy(scorer)
            own.fallback = None
            parts = [(~cold, own), (cold, Recommender(None, rank_scores=np.asarray(scores, np.float32)))]
            lists = [(sel, _topk(sc, users[sel], k, seen, candidates)) for sel, sc in parts if sel.any()]
            out = np.full((len(users), max(x.shape[1] for _, x in lists)), -1, np.int64)
            for sel, x in lists:
                out[sel, : x.shape[1]] = x
            return out
    if candidates is not None:
        seen = _csr(seen)
        if scorer.rank_fn is not None:  # any other ranker: every movie but the candidates counts as seen
            n, others = seen.shape[0], np.setdiff1d(np.arange(seen.shape[1]), candidates)
            hide = sp.csr_matrix((np.ones(n * len(others), np.float32), np.tile(others, n),
                                  np.arange(n + 1) * len(others)), shape=seen.shape)
            return _topk(scorer, users, k, (seen + hide).tocsr())
        sub = Recommender(scorer.predict, rank_scores=None if scorer.rank_scores is None
                          else np.asarray(scorer.rank_scores)[candidates])
        if scorer.vectors is not None:
            v = scorer.vectors
            sub.vectors = ScoreVectors.of(v.constant, v.user_bias, v.item_bias[candidates], v.user,
                                          v.item[candidates])
        if scorer.item_item is not None:
            hist, weights = scorer.item_item
            sub.item_item = (hist, np.ascontiguousarray(weights[:, candidates]))
        return candidates[_topk(sub, users, min(k, len(candidates)), seen[:, candidates].tocsr())]
    if scorer.rank_fn is not None:
        return np.asarray(scorer.rank_fn(users, k, _csr(seen)), dtype=np.int64)
    if scorer.vectors is not None:
        return top_n(scorer.vectors, users, k, seen, item_item=scorer.item_item)[0]
    base = np.asarray(scorer.rank_scores, np.float32)
    out = np.zeros((len(users), k), dtype=np.int64)
    for row, u in enumerate(users):
        s = base.copy()
        s[seen.indices[seen.indptr[u]: seen.indptr[u + 1]]] = -np.inf
        out[row] = np.argsort(-s, kind="stable")[:k]
    return out


CURVE_K = 20  # precision/recall curves run to this list length


class SeenMovies:
    """Each user's training movies as CSR arrays (``indptr``, ``indices``: a row's movies,
    in input order, a movie rated twice listed twice), grouped by viewer without scipy (numpy's
    stable sort below 1M rows, a compiled counting sort above): a plain model's evaluation then
    never imports it (0.13 s of a small run).
    ``csr``: the scipy matrix (sorted, no duplicates), made the first time a ranker needs one."""

    __slots__ = ("indptr", "indices", "shape", "_csr")

    def __init__(self, users: np.ndarray, movies: np.ndarray, n_users: int, n_items: int) -> None:
        from movierec.models._kernels import group_rows

        users = np.asarray(users, np.int32)
        self.indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(users, minlength=n_users), out=self.indptr[1:])
        order = group_rows(np.arange(len(users), dtype=np.int64), users, int(n_users))
        self.indices = np.asarray(movies, np.int32)[order]
        self.shape = (int(n_users), int(n_items))
        self._csr = None

    @property
    def csr(self) -> sp.csr_matrix:
        if self._csr is None:
            # copies: scipy sorts and sums duplicates in the arrays it is given
            m = sp.csr_matrix((np.ones(len(self.indices), np.float32), self.indices.copy(), self.indptr.copy()),
                              shape=self.shape)
            m.sum_duplicates()  # (sorts each row's movies too)
            m.data[:] = 1.0
            self._csr = m
        return self._csr


def _csr(seen) -> sp.csr_matrix:
    """``seen`` as a scipy matrix (a :class:`SeenMovies` or one already)."""
    return seen.csr if isinstance(seen, SeenMovies) else seen


def train_stats(train: pd.DataFrame, n_users: int, n_items: int) -> dict:
    """What every scoring of one training part shares: seen movies and popularity."""
    seen = SeenMovies(train["user_idx"].to_numpy(), train["movie_idx"].to_numpy(), n_users, n_items)
    items = train["movie_idx"].to_numpy()
    count = np.bincount(items, minlength=n_items).astype(np.float64)
    return {"seen": seen, "items": items, "count": count, "share": count / max(train["user_idx"].nunique(), 1)}


def measure(scorer: Recommender, train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_items: int,
          cfg: Config, users_subset: np.ndarray | None = None, genre_mat: np.ndarray | None = None,
          detail: bool = False, stats: dict | None = None) -> dict:
    """RMSE/MAE on the test ratings and ranking metrics over test users with positives.

    Beyond accuracy: novelty, intra-list diversity (by genre), popularity lift of the lists
    over users' histories, and user coverage (share of ranked users with at least one
    relevant movie in the list). ``detail`` adds precision/recall curves over K and the
    long-tail profile (for the report's plots)."""
    if users_subset is not None:
        test = test[np.isin(test["user_idx"].to_numpy(), users_subset)]
    return measure_users(scorer, train, test, n_users, n_items, cfg, genre_mat, detail, stats)[0]


def measure_users(scorer: Recommender, train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_items: int, cfg: Config,
                genre_mat: np.ndarray | None = None, detail: bool = False,
                stats: dict | None = None) -> tuple[dict, UserScores | None]:
    """:func:`measure`'s metrics, and the per-user scores they are averages of (for confidence
    intervals, user groups and paired tests; see :mod:`movierec.evaluation.stats`)."""
    out: dict = {"n_test": int(len(test))}
    if len(test) == 0:
        return out, None
    t_users = test["user_idx"].to_numpy()
    users_all = np.unique(t_users)
    at = np.searchsorted(users_all, t_users)
    if scorer.predict is None:  # a ranker without rating predictions: no RMSE, no MAE
        err, n = np.zeros(len(test)), np.zeros(len(users_all))
    else:
        err = test["rating"].to_numpy(np.float64) - scorer.predict(t_users, test["movie_idx"].to_numpy())
        n = np.bincount(at, minlength=len(users_all)).astype(np.float64)
    us = UserScores(users_all, n,
                    np.bincount(at, err ** 2, minlength=len(users_all)),
                    np.bincount(at, np.abs(err), minlength=len(users_all)), np.zeros(len(users_all)))
    ranks = scorer.vectors is not None or scorer.rank_scores is not None or scorer.rank_fn is not None
    if ranks and cfg.split.method == "cold_items" and scorer.rank_scores is not None and scorer.vectors is None:
        # one score per movie from the training part (popularity): every new movie has none, so
        # its "ranking" of them would be the order of their ids; no such ranking is reported
        new = np.unique(test["movie_idx"].to_numpy())
        ranks = bool(np.ptp(np.asarray(scorer.rank_scores)[new]) > 0)
    if ranks:
        out.update(_rank_users(scorer, train, test, n_users, n_items, cfg, genre_mat, detail, stats, us))
    for key, value in us.metrics().items():
        out.setdefault(key, value)
    return out, us


def _rank_users(scorer: Recommender, train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_items: int, cfg: Config,
                genre_mat: np.ndarray | None, detail: bool, stats: dict | None, us: UserScores) -> dict:
    """Top-K lists of the test users with positives; their per-user ranking scores go into
    ``us``; returns what is not a per-user average (curves, long tail, users ranked)."""
    pos = test[test["rating"] >= cfg.evaluate.relevance_threshold]
    users = np.unique(pos["user_idx"].to_numpy())
    if cfg.evaluate.max_users and len(users) > cfg.evaluate.max_users:
        users = np.sort(np.random.default_rng(0).choice(users, cfg.evaluate.max_users, replace=False))
    if len(users) == 0:
        return {}
    stats = stats or train_stats(train, n_users, n_items)
    pu, pm = pos["user_idx"].to_numpy(), pos["movie_idx"].to_numpy()
    keep = np.isin(pu, users)
    order = np.argsort(pu[keep], kind="stable")
    n_pos = np.bincount(np.searchsorted(users, pu[keep]), minlength=len(users))
    positives = (pm[keep][order], n_pos)  # each user's, in ``users``' order
    k = max(cfg.evaluate.k)
    # cold_items: only the new movies are ranked (every test rating is on one of them)
    candidates = np.unique(test["movie_idx"].to_numpy()) if cfg.split.method == "cold_items" else None
    length = max(k, CURVE_K) if detail else k
    full = _topk(scorer, users, length, stats["seen"], candidates)
    if full.shape[1] < length:  # fewer candidates than the list is long: the rest is no movie (-1)
        full = np.hstack([full, np.full((len(users), length - full.shape[1]), -1)])
    topk = full[:, :k]
    hits = M.hit_matrix(full, positives)
    per_user = M.ranking_per_user(hits, n_pos, cfg.evaluate.k)
    share = stats["share"]
    per_user["novelty"] = -np.log2(np.maximum(share[topk], 1e-9)).mean(1)
    div = M.diversity_per_list(topk, genre_mat)
    if div is not None:
        per_user["diversity"] = div
    per_user["user_coverage"] = hits[:, :k].any(1).astype(np.float64)
    per_user["_lift"] = share[topk].mean(1)
    idx = np.searchsorted(us.users, users)
    us.ranked[idx] = 1.0
    for name, values in per_user.items():
        col = np.zeros(len(us.users))
        col[idx] = values
        us.sums[name] = col
    us.topk, us.n_items = topk, n_items if candidates is None else len(candidates)
    hist = stats["items"]
    us.lift_den = float(share[hist].mean()) if len(hist) else 0.0
    out: dict = {"users_ranked": int(len(users))}
    if candidates is not None:
        out["candidates"] = int(len(candidates))
    if detail:
        out["curves"] = M.pr_curve(hits, n_pos)
        out["long_tail"] = M.long_tail(topk, stats["count"], pos["movie_idx"].to_numpy())
    return out


#: age bands of numeric group columns, in their natural order
BANDS = (0, 25, 35, 50, 200)
BAND_LABELS = ("<25", "25-34", "35-49", "50+")


def _groups(users: pd.DataFrame, cfg: Config) -> dict[str, np.ndarray]:
    """Members of each user group (``features.group_columns``); numeric columns in bands,
    in their natural order."""
    out = {}
    for col in cfg.features.group_columns:
        if col not in users.columns:
            continue
        vals = users[col]
        if pd.api.types.is_numeric_dtype(vals) or pd.to_numeric(vals, errors="coerce").notna().mean() > 0.95:
            v = pd.to_numeric(vals, errors="coerce")
            vals = pd.cut(v, bins=list(BANDS), right=False, labels=list(BAND_LABELS)).astype(str)
            order = [b for b in BAND_LABELS if (vals == b).any()]
        else:
            order = sorted(vals.dropna().astype(str).unique())
        for val in order:
            if val in ("nan", ""):
                continue
            out[f"{col}={val}"] = users.loc[vals.astype(str) == val, "user_idx"].to_numpy()
    return out


def evaluate(cfg: Config, compare_version: str | None = None) -> dict:
    """Metrics for the configured model, baselines, ablations and user groups, each with a
    confidence interval; paired tests of the model against every baseline and ablation (and
    ``compare_version``'s holdout model); fairness gaps with their intervals."""
    from movierec.pipeline import ensure, is_fresh, trained_model_dir
    from movierec.registry import HOLDOUT, Registry
    from movierec.stages.clean import fold_ids

    if cfg.split.method == "none":
        raise ConfigError("evaluate needs a test part: set split.method to random, temporal, kfold, given, "
                          "cold_items or cold_users")
    from movierec.evaluation.peers import check_available
    from movierec.models.mf import check_trainer

    check_trainer(cfg.model)  # every fold fits one: say so before the stages run
    check_available(cfg.evaluate.baselines)  # a peer's library (the peers extra): before the stages too
    # evaluation never changes what serves: the stages may refresh their artifacts, but every
    # model is fitted here in memory, except the holdout model of a version the train stage
    # made from exactly these artifacts and this config, which is read back instead
    ensure(cfg, "fuse")
    cat = Catalog(Path(cfg.workdir))
    version = None
    if is_fresh("train", cfg, cat):
        v = Registry(cat.models_dir).get(trained_model_dir(cfg).name)
        version = v if v.has(HOLDOUT) else None
    ctx = _Context(cfg, cat)
    folds = fold_ids(cfg)
    from movierec.progress import Progress

    bar = Progress(len(folds), "evaluate", unit="fold")
    per_fold, scores, history = [], [], None
    for fold in folds:
        res, fold_scores, hist = _evaluate_fold(ctx, fold, version if fold == cfg.split.fold else None)
        history = hist if fold == cfg.split.fold else history
        per_fold.append(res)
        scores.append(fold_scores)
        log.info("evaluate: fold %d: RMSE %.4f", fold, res.get("rmse", float("nan")))
        bar.update(1)
    bar.close()
    out = _mean_over_folds(per_fold)
    if len(per_fold) > 1:
        out["folds"] = [{k: v for k, v in f.items() if k not in ("curves", "long_tail")} for f in per_fold]
        out["curves"], out["long_tail"] = per_fold[0].get("curves"), per_fold[0].get("long_tail")
    _uncertainty(out, per_fold, scores, cfg)
    if compare_version:
        out["compared_version"] = _compare_version(ctx, compare_version, scores[folds.index(cfg.split.fold)])
    if history is not None:
        out["history"] = {"train_rmse": list(history.train_rmse), "val_rmse": list(history.val_rmse),
                          "best_epoch": int(history.best_epoch)}
    out["split"] = cfg.split.method
    out["unseen_users"] = cfg.evaluate.unseen_users
    # the version whose holdout model was scored (None: fitted here, no version has it yet)
    out["model_version"] = None if version is None else version.name
    out["data"] = ctx.sizes()
    out["hyperparameters"] = dict(cfg.to_dict()["model"])
    out["confidence"] = cfg.evaluate.confidence
    return out


class _Context:
    """What every fold of one evaluation shares: the tables and the user groups."""

    def __init__(self, cfg: Config, cat: Catalog) -> None:
        from movierec.pipeline import ablation_configs

        self.cfg, self.cat = cfg, cat
        self.ratings = cat.read("ratings_clean")
        self.n_users, self.n_items = cat.rows("user_ids"), cat.rows("movie_ids")
        self.groups = _groups(cat.read("users_clean"), cfg)
        self.genre_mat = _genre_matrix(cat.read("movies_clean"))
        self.ablations = ablation_configs(cfg, cfg.evaluate.ablations)

    def sizes(self) -> dict:
        return {"ratings": int(len(self.ratings)), "users": self.n_users, "movies": self.n_items,
                "test_ratings": int((self.ratings["fold"] >= 0).sum()) if self.cfg.split.method != "kfold"
                else int(len(self.ratings))}


def _evaluate_fold(ctx: _Context, fold: int, version) -> tuple[dict, dict, object]:
    """One fold: the model, baselines and ablations scored; groups from the per-user scores.
    Returns (metrics, {"model": UserScores, "baselines": {...}, "ablations": {...}}, history)."""
    from movierec.pipeline import train_for_fold
    from movierec.registry import HOLDOUT
    from movierec.stages.clean import train_test

    cfg = ctx.cfg
    train, test = train_test(ctx.ratings, fold)
    st = train_stats(train, ctx.n_users, ctx.n_items)
    args = (train, test, ctx.n_users, ctx.n_items, cfg)
    if version is not None:
        from movierec.models.mf import MatrixFactorization

        model = MatrixFactorization.load(version.path / HOLDOUT)
    else:
        model = train_for_fold(cfg, ctx.cat, fold)[0]
    cold = np.diff(st["seen"].indptr) == 0  # users without a training rating
    split = {"cold": np.flatnonzero(cold), "known": np.flatnonzero(~cold)}
    fallback = cfg.evaluate.unseen_users == "fallback"
    model_sc = model_recommender(model)
    knows = model_knows(model, cfg, ctx.cat, train, test)
    if fallback:
        model_sc.fallback = (cold & ~knows, st["count"])
    res, model_us = measure_users(model_sc, *args, genre_mat=ctx.genre_mat, detail=True, stats=st)
    res["users_split"] = _split_metrics(model_us, split)
    if model_us is not None and "cold" in res["users_split"]:  # cold users the model lists from their reviews
        ranked = model_us.users[model_us.ranked > 0]
        res["users_split"]["cold"]["model_lists"] = int((cold & knows)[ranked].sum())
    # the rating factorization alone (what peers like Surprise fit); the ranking (watch)
    # model is a separate model and its seconds are reported beside
    res["fit_seconds"] = float(model.fit_seconds_ or 0.0)
    res["ranking_fit_seconds"] = float(getattr(model, "ranking_fit_seconds_", 0.0) or 0.0)
    if version is not None and not version.has("metrics.json"):
        # the version's own holdout scores stay with it (what `status` shows and `--compare
        # VERSION` reads); `run` writes the same numbers for the versions it gates
        from movierec.registry import METRICS, Registry

        Registry(ctx.cat.models_dir).write_file(version.name, METRICS,
                                                {k: v for k, v in res.items() if isinstance(v, (int, float))})
    scores = {"model": model_us, "baselines": {}, "ablations": {}}
    res["baselines"] = {}
    for name, sc in baseline_recommenders(train, ctx.n_users, ctx.n_items, cfg.evaluate.baselines, cfg,
                                             model).items():
        if fallback and name not in ("popularity", "random"):  # the others list the most rated movies for them
            sc.fallback = (cold, st["count"])
        m, b_us = measure_users(sc, *args, genre_mat=ctx.genre_mat, stats=st)
        m["users_split"] = _split_metrics(b_us, split)
        if sc.fit_seconds is not None:
            m["fit_seconds"] = float(sc.fit_seconds)
        res["baselines"][name], scores["baselines"][name] = m, b_us
    res["ablations"] = {}
    activity = _activity_groups(train, test, cfg)
    for name, (fcfg, mcfg) in ctx.ablations.items():
        log.info("evaluate: fold %d, ablation %s", fold, name)
        am = train_for_fold(cfg, ctx.cat, fold, features=fcfg, model_cfg=mcfg)[0]
        a_sc = model_recommender(am)
        if fallback:
            a_cfg = dataclasses.replace(cfg, features=fcfg, model=mcfg)
            a_sc.fallback = (cold & ~model_knows(am, a_cfg, ctx.cat, train, test), st["count"])
        res["ablations"][name], a_us = measure_users(a_sc, *args, genre_mat=ctx.genre_mat, stats=st)
        scores["ablations"][name] = a_us
        # the activity groups (cold users above all) with and without the signal
        res["ablations"][name]["groups"] = _group_metrics(a_us, activity)
    res["groups"] = _group_metrics(model_us, dict(ctx.groups, **activity))
    scores["groups"] = dict(ctx.groups, **activity)
    return res, scores, getattr(model, "history_", None)


def model_knows(model, cfg: Config, cat: Catalog, train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    """Per user: does the model's rank score have something of the user's own beyond training
    ratings (what their reviews say)? With ``ranking: ease``: a row in its history (rated or
    reviewed movies; without one a user's rank score is 0 for every movie). Otherwise: a
    review not on a test pair where the model reads reviews (``model.implicit``, review
    content, pseudo-ratings). Read from the fold's data, so that a saved holdout model and one
    fitted here say the same.

    Trust ties alone do not count: they reach only the rating part of the rank score (the
    watch model has no vector for a user without a rated or reviewed movie), and the lists
    they gave such users scored below the popularity list on FilmTrust (NDCG@10 0.210 against
    0.220, 17 users a fold) and level with it on CiaoDVD."""
    ii = model.item_item()
    if ii is not None:
        return np.diff(ii[0].tocsr().indptr) > 0
    from movierec.pipeline import implicit_matrix

    n_users, n_items = len(model.user_bias_), len(model.item_bias_)
    m, f = cfg.model, cfg.features
    reads_reviews = m.implicit or (cfg.sentiment.enabled and (
        f.use_review_content or (f.use_sentiment and cfg.sentiment.pseudo_rating_weight > 0)))
    if not reads_reviews:
        return np.zeros(n_users, bool)
    return np.diff(implicit_matrix(cat, train.iloc[:0], test, n_users, n_items).indptr) > 0


def _group_metrics(us: UserScores | None, groups: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for g, members in groups.items():
        sub = us.subset(members) if us is not None else None
        if sub is None or not len(sub.users):
            out[g] = {"n_test": 0, "users": 0}
            continue
        out[g] = {"n_test": int(sub.n.sum()), "users": int(len(sub.users)), **sub.metrics()}
    return out


def _split_metrics(us: UserScores | None, split: dict[str, np.ndarray]) -> dict[str, dict]:
    """The metrics of the cold users (no training rating) and the known ones apart, with how
    many of each were ranked (test users with a positive)."""
    out = _group_metrics(us, split)
    for g, members in split.items():
        out[g]["users_ranked"] = int(us.subset(members).ranked.sum()) if us is not None else 0
    return out


def _uncertainty(out: dict, per_fold: list[dict], scores: list[dict], cfg: Config) -> None:
    """Confidence intervals of every metric (bootstrap over test users; t over folds with
    k-fold), paired tests against baselines and ablations, and fairness gaps with intervals."""
    from movierec.evaluation import stats as S

    e = cfg.evaluate
    rounds, seed, level = e.bootstrap_rounds, e.bootstrap_seed, e.confidence
    k = max(e.k)
    keys = ("rmse", f"ndcg@{k}")
    pooled = {"model": S.pool([s["model"] for s in scores if s["model"] is not None])}
    for kind in ("baselines", "ablations"):
        for name in scores[0][kind]:
            got = [s[kind][name] for s in scores if s[kind].get(name) is not None]
            if got:
                pooled[(kind, name)] = S.pool(got)

    def interval(target: dict, getter, us: UserScores | None) -> None:
        if len(per_fold) > 1:
            ci = {}
            for m, v in target.items():
                if isinstance(v, (int, float)) and m not in ("n_test", "users", "users_ranked"):
                    vals = [getter(f).get(m) for f in per_fold]
                    if all(isinstance(x, (int, float)) for x in vals):
                        ci[m] = S.fold_interval(vals, level)
            target["ci"] = ci
        elif us is not None:
            target["ci"] = S.bootstrap(us, rounds, seed, level)

    interval(out, lambda f: f, scores[0]["model"])
    for kind in ("baselines", "ablations"):
        for name, m in out.get(kind, {}).items():
            interval(m, lambda f, kind=kind, name=name: f[kind][name], scores[0][kind].get(name))
    sig = {}
    for (kind, name), other in ((key, v) for key, v in pooled.items() if key != "model" and rounds >= 2):
        tests = S.paired(pooled["model"], other, list(keys), rounds, seed, level)
        sig[name] = {"kind": kind[:-1], **tests, "verdict": S.verdict(name, kind[:-1], tests, 1 - level)}
    out["significance"] = sig
    groups_us = {g: pooled["model"].subset(members) for g, members in scores[0]["groups"].items()}
    for g, m in out.get("groups", {}).items():
        if len(per_fold) > 1:
            interval(m, lambda f, g=g: f.get("groups", {}).get(g, {}), None)
        elif g in groups_us and len(groups_us[g].users) and rounds >= 2:  # 0 rounds: no resampling at all
            m["ci"] = S.bootstrap(groups_us[g], max(100, rounds // 2), seed, level)
    out["fairness"] = fairness_gaps(out.get("groups", {}), k, groups_us, rounds, seed, level)


def _compare_version(ctx: _Context, name: str, fold_scores: dict) -> dict:
    """Paired test of the model against another version's holdout model, on the same test
    users of the configured fold."""
    from movierec.errors import ModelError
    from movierec.evaluation import stats as S
    from movierec.registry import HOLDOUT, Registry
    from movierec.stages.clean import train_test

    cfg = ctx.cfg
    try:
        bundle = Registry(ctx.cat.models_dir).load(name, HOLDOUT)
    except ModelError as exc:
        return {"version": name, "paired": None, "note": f"no paired test: {exc}"}
    uids = ctx.cat.read("user_ids")["user_id"].astype(str).to_numpy()
    mids = ctx.cat.read("movie_ids")["movie_id"].astype(str).to_numpy()
    train, test = train_test(ctx.ratings, cfg.split.fold)
    sc = bundle_recommender(bundle, uids, mids)
    if cfg.evaluate.unseen_users == "fallback":  # the same lists for users without training ratings
        st = train_stats(train, ctx.n_users, ctx.n_items)
        knows = np.diff(sc.item_item[0].indptr) > 0 if sc.item_item is not None else np.zeros(ctx.n_users, bool)
        sc.fallback = ((np.diff(st["seen"].indptr) == 0) & ~knows, st["count"])
    _, other = measure_users(sc, train, test, ctx.n_users, ctx.n_items, cfg)
    e = cfg.evaluate
    tests = S.paired(fold_scores["model"], other, ["rmse", f"ndcg@{max(e.k)}"], e.bootstrap_rounds,
                     e.bootstrap_seed, e.confidence)
    return {"version": name, "paired": tests, "verdict": S.verdict(f"vs {name}", "version", tests, 1 - e.confidence)}


def _genre_matrix(movies: pd.DataFrame) -> np.ndarray | None:
    from movierec.data.schemas import genre_matrix

    if "genres" not in movies.columns:
        return None
    names, mat = genre_matrix(movies)
    return mat if names else None


def _activity_groups(train: pd.DataFrame, test: pd.DataFrame, cfg: Config) -> dict[str, np.ndarray]:
    """activity=new (no training ratings): test users the model never saw rate; activity=cold
    (<5): fewer than 5 training ratings; light / medium / heavy: the lower, middle and upper
    third of users by their number of training ratings (only when ``activity`` is among
    features.group_columns)."""
    if "activity" not in cfg.features.group_columns:
        return {}
    cnt = train.groupby("user_idx").size()
    if len(cnt) < 3:
        return {}
    lo, hi = np.quantile(cnt.to_numpy(), [1 / 3, 2 / 3])
    new = np.setdiff1d(test["user_idx"].unique(), cnt.index.to_numpy())
    return {"activity=new (no training ratings)": new,
            "activity=cold (<5)": cnt.index[cnt < 5].to_numpy(),
            "activity=light": cnt.index[cnt <= lo].to_numpy(),
            "activity=medium": cnt.index[(cnt > lo) & (cnt <= hi)].to_numpy(),
            "activity=heavy": cnt.index[cnt > hi].to_numpy()}


def fairness_gaps(groups: dict[str, dict], k: int, group_scores: dict[str, UserScores] | None = None,
                  rounds: int = 500, seed: int = 0, level: float = 0.95) -> dict:
    """Per group column: the best and worst group on RMSE and NDCG@k, the gap between them
    and (with ``group_scores`` and ``rounds`` >= 2) its bootstrap interval; a gap whose interval
    holds 0 is not ``significant``. ``largest`` names the column whose significant NDCG gap
    (relative to the best) is largest (None when no gap is significant; without intervals, the
    largest gap)."""
    from movierec.evaluation.stats import gap_interval

    by_col: dict[str, dict[str, dict]] = {}
    for name, m in groups.items():
        col, _, val = name.partition("=")
        by_col.setdefault(col, {})[val] = m
    out: dict = {}
    nd = f"ndcg@{k}"
    for col, vals in by_col.items():
        entry: dict = {}
        for metric, higher_better in (("rmse", False), (nd, True)):
            have = {v: m[metric] for v, m in vals.items() if m.get(metric) is not None}
            if len(have) < 2:
                continue
            best = (max if higher_better else min)(have, key=have.get)
            worst = (min if higher_better else max)(have, key=have.get)
            gap = abs(have[best] - have[worst])
            e = {"best": best, "worst": worst, "gap": gap, "relative_gap": gap / max(abs(have[best]), 1e-9)}
            if group_scores is not None and rounds >= 2:
                ci = gap_interval({"b": group_scores[f"{col}={best}"], "w": group_scores[f"{col}={worst}"]},
                                  "b", "w", metric, max(100, rounds // 2), seed, level)
                if ci is not None:  # of worst - best; oriented like ``gap`` (positive = worse)
                    ci = [-ci[1], -ci[0]] if higher_better else ci
                    e["ci"] = ci
                    e["significant"] = bool(ci[0] > 0)
            entry[metric] = e
        if entry:
            out[col] = entry
    ranked = [(e[nd]["relative_gap"], c) for c, e in out.items() if nd in e and e[nd].get("significant", True)]
    out["largest"] = max(ranked)[1] if ranked else None
    return out


def _mean_over_folds(folds: list[dict]) -> dict:
    if len(folds) == 1:
        return folds[0]

    def merge(dicts: list[dict]) -> dict:
        out: dict = {}
        keys = [k for k in dicts[0]]
        for k in keys:
            vals = [d.get(k) for d in dicts]
            if isinstance(vals[0], dict):
                out[k] = merge([v or {} for v in vals])
            elif all(isinstance(v, (int, float)) for v in vals):
                out[k] = float(np.mean(vals))
                if k in ("rmse", "mae") or k.startswith("ndcg"):
                    out.setdefault("std", {})[k] = float(np.std(vals))
        return out

    return merge(folds)
