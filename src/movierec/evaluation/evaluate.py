"""evaluate: score the model on the test part, next to baselines, ablations and groups.

For ``split.method: kfold`` every fold is trained and scored and each figure is the
mean over folds (``folds`` lists each fold's, ``std`` their standard deviations).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from movierec.catalog import Catalog
from movierec.config import Config
from movierec.errors import ConfigError
from movierec.evaluation import metrics as M
from movierec.ranking import top_n

log = logging.getLogger(__name__)


class Scorer:
    """What evaluation needs from a model: rating predictions and top-K lists."""

    def __init__(self, predict, vectors=None, rank_scores=None):
        self.predict = predict  # (users, items) -> ratings
        self.vectors = vectors  # (mu, bu, bi, U, Q) for blocked ranking
        self.rank_scores = rank_scores  # n_items scores shared by all users (popularity)


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


def baseline_scorers(train: pd.DataFrame, n_users: int, n_items: int, names: list[str]) -> dict[str, Scorer]:
    out = {}
    lo, hi = float(train["rating"].min()), float(train["rating"].max())
    mu = float(train["rating"].mean())
    for name in names:
        if name == "global_mean":
            out[name] = Scorer(lambda us, its, mu=mu: np.full(len(us), mu))
        elif name == "popularity":
            i = train["movie_idx"].to_numpy()
            cnt = np.bincount(i, minlength=n_items)
            item_mean = (np.bincount(i, train["rating"].to_numpy(np.float64) - mu, minlength=n_items)) / (cnt + 10.0) + mu
            out[name] = Scorer(lambda us, its, m=item_mean: m[its], rank_scores=cnt.astype(np.float32))
        elif name == "bias":
            m, bu, bi = bias_baseline(train, n_users, n_items)
            vec = (np.float32(m), bu.astype(np.float32), bi.astype(np.float32),
                   np.zeros((n_users, 1), np.float32), np.zeros((n_items, 1), np.float32))
            out[name] = Scorer(lambda us, its, m=m, bu=bu, bi=bi: np.clip(m + bu[us] + bi[its], lo, hi), vectors=vec)
    return out


def model_scorer(model) -> Scorer:
    mu, bu, bi, U, Q = model.rank_vectors()
    vec = (np.float32(mu), bu, bi, np.ascontiguousarray(U, np.float32), np.ascontiguousarray(Q, np.float32))
    return Scorer(lambda us, its: model.predict(us, its)[0], vectors=vec)


def _topk(scorer: Scorer, users: np.ndarray, k: int, seen: sp.csr_matrix) -> np.ndarray:
    if scorer.vectors is not None:
        return top_n(scorer.vectors, users, k, seen)[0]
    base = np.asarray(scorer.rank_scores, np.float32)
    out = np.zeros((len(users), k), dtype=np.int64)
    for row, u in enumerate(users):
        s = base.copy()
        s[seen.indices[seen.indptr[u]: seen.indptr[u + 1]]] = -np.inf
        out[row] = np.argsort(-s, kind="stable")[:k]
    return out


CURVE_K = 20  # precision/recall curves run to this list length


def train_stats(train: pd.DataFrame, n_users: int, n_items: int) -> dict:
    """What every scoring of one training part shares: seen movies and popularity."""
    seen = sp.csr_matrix((np.ones(len(train), np.float32), (train["user_idx"], train["movie_idx"])),
                         shape=(n_users, n_items))
    seen.sum_duplicates()
    items = train["movie_idx"].to_numpy()
    count = np.bincount(items, minlength=n_items).astype(np.float64)
    return {"seen": seen, "items": items, "count": count, "share": count / max(train["user_idx"].nunique(), 1)}


def score(scorer: Scorer, train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_items: int,
          cfg: Config, users_subset: np.ndarray | None = None, genre_mat: np.ndarray | None = None,
          detail: bool = False, stats: dict | None = None) -> dict:
    """RMSE/MAE on the test ratings and ranking metrics over test users with positives.

    Beyond accuracy: novelty, intra-list diversity (by genre), popularity lift of the lists
    over users' histories, and user coverage (share of ranked users with at least one
    relevant movie in the list). ``detail`` adds precision/recall curves over K and the
    long-tail profile (for the report's plots)."""
    if users_subset is not None:
        test = test[np.isin(test["user_idx"].to_numpy(), users_subset)]
    out: dict = {"n_test": int(len(test))}
    if len(test) == 0:
        return out
    pred = scorer.predict(test["user_idx"].to_numpy(), test["movie_idx"].to_numpy())
    out["rmse"] = M.rmse(test["rating"].to_numpy(), pred)
    out["mae"] = M.mae(test["rating"].to_numpy(), pred)
    if scorer.vectors is None and scorer.rank_scores is None:
        return out
    pos = test[test["rating"] >= cfg.evaluate.relevance_threshold]
    users = np.unique(pos["user_idx"].to_numpy())
    if cfg.evaluate.max_users and len(users) > cfg.evaluate.max_users:
        users = np.sort(np.random.default_rng(0).choice(users, cfg.evaluate.max_users, replace=False))
    if len(users) == 0:
        return out
    stats = stats or train_stats(train, n_users, n_items)
    seen = stats["seen"]
    grouped = pos.groupby("user_idx")["movie_idx"].apply(np.asarray)
    positives = [grouped[u] for u in users]
    k = max(cfg.evaluate.k)
    full = _topk(scorer, users, max(k, CURVE_K) if detail else k, seen)
    topk = full[:, :k]
    out.update(M.ranking_metrics(topk, positives, cfg.evaluate.k, n_items))
    out["users_ranked"] = int(len(users))
    tr_items, count, share = stats["items"], stats["count"], stats["share"]
    out["novelty"] = M.novelty(topk, share)
    div = M.intra_list_diversity(topk, genre_mat)
    if div is not None:
        out["diversity"] = div
    out["popularity_lift"] = M.popularity_lift(topk, share, tr_items)
    hits = M.hit_matrix(full, positives)
    out["user_coverage"] = float(hits[:, :k].any(1).mean())
    if detail:
        out["curves"] = M.pr_curve(hits, np.array([len(p) for p in positives]))
        out["long_tail"] = M.long_tail(topk, count, pos["movie_idx"].to_numpy())
    return out


def _groups(users: pd.DataFrame, cfg: Config) -> dict[str, np.ndarray]:
    out = {}
    for col in cfg.features.group_columns:
        if col not in users.columns:
            continue
        vals = users[col]
        if pd.api.types.is_numeric_dtype(vals) or pd.to_numeric(vals, errors="coerce").notna().mean() > 0.95:
            v = pd.to_numeric(vals, errors="coerce")
            bands = pd.cut(v, bins=[0, 25, 35, 50, 200], right=False, labels=["<25", "25-34", "35-49", "50+"])
            vals = bands.astype(str)
        for val in sorted(vals.dropna().astype(str).unique()):
            if val in ("nan", ""):
                continue
            out[f"{col}={val}"] = users.loc[vals.astype(str) == val, "user_idx"].to_numpy()
    return out


def evaluate(cfg: Config) -> dict:
    """Metrics for the configured model, baselines, ablations and user groups."""
    from movierec.pipeline import ablation_configs, ensure, is_fresh, train_for_fold, trained_model_dir
    from movierec.registry import HOLDOUT, METRICS, Registry
    from movierec.stages.clean import n_folds, train_test

    if cfg.split.method == "none":
        raise ConfigError("evaluate needs a test part: set split.method to random, temporal, kfold or given")
    # evaluation never changes what serves: the stages may refresh their artifacts, but every
    # model is fitted here in memory, except the holdout model of a version the train stage
    # made from exactly these artifacts and this config, which is read back instead
    ensure(cfg, "fuse")
    cat = Catalog(Path(cfg.workdir))
    version = None
    if is_fresh("train", cfg, cat):
        v = Registry(cat.models_dir).get(trained_model_dir(cfg).name)
        version = v if v.has(HOLDOUT) else None
    ratings = cat.read("ratings_clean")
    users = cat.read("users_clean")
    n_users, n_items = len(cat.read("user_ids")), len(cat.read("movie_ids"))
    groups = _groups(users, cfg)
    genre_mat = _genre_matrix(cat.read("movies_clean"))
    ablations = ablation_configs(cfg, cfg.evaluate.ablations)
    per_fold = []
    history = None
    from movierec.progress import Progress

    bar = Progress(len(n_folds(cfg)), "evaluate", unit="fold")
    for fold in n_folds(cfg):
        train, test = train_test(ratings, fold)
        st = train_stats(train, n_users, n_items)
        if fold == cfg.split.fold and version is not None:
            from movierec.models.mf import MatrixFactorization

            model = MatrixFactorization.load(version.path / HOLDOUT)
        else:
            model = train_for_fold(cfg, cat, fold)[0]
        if fold == cfg.split.fold:
            history = getattr(model, "history_", None)
        res = score(model_scorer(model), train, test, n_users, n_items, cfg, genre_mat=genre_mat, stats=st, detail=True)
        # the rating factorization alone (what peers like Surprise fit); the ranking (watch)
        # model is a separate model and its seconds are reported beside
        res["fit_seconds"] = float(model.fit_seconds_ or 0.0)
        res["ranking_fit_seconds"] = float(getattr(model, "ranking_fit_seconds_", 0.0) or 0.0)
        if fold == cfg.split.fold and version is not None and not version.has(METRICS):
            # the version's own holdout scores stay with it (what `status` shows and `--compare
            # VERSION` reads); `run` writes the same numbers for the versions it gates
            Registry(cat.models_dir).write_file(version.name, METRICS,
                                                {k: v for k, v in res.items() if isinstance(v, (int, float))})
        res["baselines"] = {name: score(s, train, test, n_users, n_items, cfg, genre_mat=genre_mat, stats=st)
                            for name, s in baseline_scorers(train, n_users, n_items, cfg.evaluate.baselines).items()}
        res["ablations"] = {}
        for name, (fcfg, mcfg) in ablations.items():
            log.info("evaluate: fold %d, ablation %s", fold, name)
            am = train_for_fold(cfg, cat, fold, features=fcfg, model_cfg=mcfg)[0]
            asc = model_scorer(am)
            res["ablations"][name] = score(asc, train, test, n_users, n_items, cfg, genre_mat=genre_mat, stats=st)
            # the activity groups (cold users above all) with and without the signal
            res["ablations"][name]["groups"] = {
                g: score(asc, train, test, n_users, n_items, cfg, users_subset=members, genre_mat=genre_mat, stats=st)
                for g, members in _activity_groups(train, cfg).items()}
        ms = model_scorer(model)
        fold_groups = dict(groups, **_activity_groups(train, cfg))
        res["groups"] = {g: score(ms, train, test, n_users, n_items, cfg, users_subset=members,
                                  genre_mat=genre_mat, stats=st)
                         for g, members in fold_groups.items()}
        per_fold.append(res)
        log.info("evaluate: fold %d: RMSE %.4f", fold, res.get("rmse", float("nan")))
        bar.update(1)
    bar.close()
    out = _mean_over_folds(per_fold)
    if len(per_fold) > 1:
        out["folds"] = [{k: v for k, v in f.items() if k not in ("curves", "long_tail")} for f in per_fold]
        out["curves"], out["long_tail"] = per_fold[0].get("curves"), per_fold[0].get("long_tail")
    out["fairness"] = fairness_gaps(out.get("groups", {}), max(cfg.evaluate.k))
    if history is not None:
        out["history"] = {"train_rmse": list(history.train_rmse), "val_rmse": list(history.val_rmse),
                          "best_epoch": int(history.best_epoch)}
    out["split"] = cfg.split.method
    # the version whose holdout model was scored (None: fitted here, no version has it yet)
    out["model_version"] = None if version is None else version.name
    return out


def _genre_matrix(movies: pd.DataFrame) -> np.ndarray | None:
    from movierec.stages.fuse import genre_matrix

    if "genres" not in movies.columns:
        return None
    names, mat = genre_matrix(movies)
    return mat if names else None


def _activity_groups(train: pd.DataFrame, cfg: Config) -> dict[str, np.ndarray]:
    """activity=light / medium / heavy: users in the lower, middle and upper third by their
    number of training ratings, and activity=cold (<5): fewer than 5 training ratings
    (only when ``activity`` is among features.group_columns)."""
    if "activity" not in cfg.features.group_columns:
        return {}
    cnt = train.groupby("user_idx").size()
    if len(cnt) < 3:
        return {}
    lo, hi = np.quantile(cnt.to_numpy(), [1 / 3, 2 / 3])
    return {"activity=cold (<5)": cnt.index[cnt < 5].to_numpy(),
            "activity=light": cnt.index[cnt <= lo].to_numpy(),
            "activity=medium": cnt.index[(cnt > lo) & (cnt <= hi)].to_numpy(),
            "activity=heavy": cnt.index[cnt > hi].to_numpy()}


def fairness_gaps(groups: dict[str, dict], k: int) -> dict:
    """Per group column: the best and worst group on RMSE and NDCG@k and the gap between
    them; ``largest`` names the column whose NDCG gap (relative to the best) is largest."""
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
            entry[metric] = {"best": best, "worst": worst, "gap": abs(have[best] - have[worst]),
                             "relative_gap": abs(have[best] - have[worst]) / max(abs(have[best]), 1e-9)}
        if entry:
            out[col] = entry
    ranked = [(e[nd]["relative_gap"], c) for c, e in out.items() if nd in e]
    if ranked:
        out["largest"] = max(ranked)[1]
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
