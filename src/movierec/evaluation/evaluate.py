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


def score(scorer: Scorer, train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_items: int,
          cfg: Config, users_subset: np.ndarray | None = None) -> dict:
    """RMSE/MAE on the test ratings and ranking metrics over test users with positives."""
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
    seen = sp.csr_matrix((np.ones(len(train), np.float32), (train["user_idx"], train["movie_idx"])),
                         shape=(n_users, n_items))
    seen.sum_duplicates()
    grouped = pos.groupby("user_idx")["movie_idx"].apply(np.asarray)
    positives = [grouped[u] for u in users]
    k = max(cfg.evaluate.k)
    topk = _topk(scorer, users, k, seen)
    out.update(M.ranking_metrics(topk, positives, cfg.evaluate.k, n_items))
    out["users_ranked"] = int(len(users))
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
    from movierec.pipeline import ablation_configs, train_and_promote, train_for_fold, trained_model_dir
    from movierec.stages.clean import n_folds, train_test

    if cfg.split.method == "none":
        raise ConfigError("evaluate needs a test part: set split.method to random, temporal, kfold or given")
    train_and_promote(cfg)
    cat = Catalog(Path(cfg.workdir))
    ratings = cat.read("ratings_clean")
    users = cat.read("users_clean")
    n_users, n_items = len(cat.read("user_ids")), len(cat.read("movie_ids"))
    groups = _groups(users, cfg)
    ablations = ablation_configs(cfg, cfg.evaluate.ablations)
    per_fold = []
    for fold in n_folds(cfg):
        train, test = train_test(ratings, fold)
        if fold == cfg.split.fold:
            from movierec.models.mf import MatrixFactorization

            model = MatrixFactorization.load(trained_model_dir(cfg) / "model.npz")
        else:
            model = train_for_fold(cfg, cat, fold)[0]
        res = score(model_scorer(model), train, test, n_users, n_items, cfg)
        # the rating factorization alone (what peers like Surprise fit); the ranking (watch)
        # model is a separate model and its seconds are reported beside
        res["fit_seconds"] = float(model.fit_seconds_ or 0.0)
        res["ranking_fit_seconds"] = float(getattr(model, "ranking_fit_seconds_", 0.0) or 0.0)
        res["baselines"] = {name: score(s, train, test, n_users, n_items, cfg)
                            for name, s in baseline_scorers(train, n_users, n_items, cfg.evaluate.baselines).items()}
        res["ablations"] = {}
        for name, (fcfg, mcfg) in ablations.items():
            log.info("evaluate: fold %d, ablation %s", fold, name)
            am = train_for_fold(cfg, cat, fold, features=fcfg, model_cfg=mcfg)[0]
            res["ablations"][name] = score(model_scorer(am), train, test, n_users, n_items, cfg)
        ms = model_scorer(model)
        res["groups"] = {g: score(ms, train, test, n_users, n_items, cfg, users_subset=members)
                         for g, members in groups.items()}
        per_fold.append(res)
        log.info("evaluate: fold %d: RMSE %.4f", fold, res.get("rmse", float("nan")))
    out = _mean_over_folds(per_fold)
    if len(per_fold) > 1:
        out["folds"] = per_fold
    out["split"] = cfg.split.method
    out["model_version"] = trained_model_dir(cfg).name
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
