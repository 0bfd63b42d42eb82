"""Metrics: small named functions over predictions and top-K lists."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, root_mean_squared_error


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(root_mean_squared_error(y_true, y_pred))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(mean_absolute_error(y_true, y_pred))


def hit_matrix(topk: np.ndarray, positives: list[np.ndarray]) -> np.ndarray:
    """hits[u, j] is True when the j-th recommended item of user u is a positive."""
    hits = np.zeros(topk.shape, dtype=bool)
    for row, pos in enumerate(positives):
        if len(pos):
            hits[row] = np.isin(topk[row], pos)
    return hits


def precision_at_k(hits: np.ndarray, k: int) -> float:
    return float(hits[:, :k].sum(1).mean() / k) if len(hits) else 0.0


def recall_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    if not len(hits):
        return 0.0
    return float((hits[:, :k].sum(1) / np.maximum(n_pos, 1)).mean())


def ndcg_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    if not len(hits):
        return 0.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * disc[: hits[:, :k].shape[1]]).sum(1)
    ideal = np.cumsum(disc)[np.minimum(n_pos, k) - 1]
    return float((dcg / ideal).mean())


def map_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    if not len(hits):
        return 0.0
    h = hits[:, :k].astype(np.float64)
    prec = np.cumsum(h, 1) / np.arange(1, h.shape[1] + 1)
    return float(((prec * h).sum(1) / np.minimum(n_pos, k)).mean())


def coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    return float(len(np.unique(topk)) / n_items) if n_items else 0.0


def ranking_metrics(topk: np.ndarray, positives: list[np.ndarray], ks: list[int], n_items: int) -> dict:
    """precision/recall/ndcg/map@K for each K, and catalogue coverage at the largest K."""
    n_pos = np.array([len(p) for p in positives], dtype=np.int64)
    hits = hit_matrix(topk, positives)
    out: dict[str, float] = {}
    for k in ks:
        out[f"precision@{k}"] = precision_at_k(hits, k)
        out[f"recall@{k}"] = recall_at_k(hits, n_pos, k)
        out[f"ndcg@{k}"] = ndcg_at_k(hits, n_pos, k)
        out[f"map@{k}"] = map_at_k(hits, n_pos, k)
    out["coverage"] = coverage(topk[:, : max(ks)], n_items)
    return out
