"""Metrics: small named functions over predictions and top-K lists."""

from __future__ import annotations

import numpy as np

# RMSE and MAE are one line of numpy each: importing scikit-learn's metrics for them costs a
# second of start-up (scipy.stats comes with it) in every `movierec evaluate`


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    err = np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64)
    return float(np.sqrt(np.mean(err * err)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y_true, np.float64) - np.asarray(y_pred, np.float64))))


def hit_matrix(topk: np.ndarray, positives: list[np.ndarray] | tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """hits[u, j] is True when the j-th recommended item of user u is a positive.

    ``positives``: each user's positive movies, as one array per row of ``topk``, or as
    (all of them, row by row; how many each row has): no array per user to make."""
    if isinstance(positives, tuple):
        flat, n_pos = np.asarray(positives[0], np.int64), np.asarray(positives[1], np.int64)
    else:
        n_pos = np.fromiter((len(p) for p in positives), np.int64, len(positives))
        flat = np.concatenate(positives).astype(np.int64) if len(positives) else np.zeros(0, np.int64)
    if not len(n_pos):
        return np.zeros(topk.shape, dtype=bool)
    # one membership test over all rows: (row, movie) pairs as one int64 key each, looked up in
    # the sorted positives' keys (np.isin sorts the lists' keys too: 10x slower at 20k users)
    width = int(max(topk.max(initial=0), flat.max(initial=0))) + 2
    rows = np.arange(len(n_pos), dtype=np.int64)
    pos_keys = np.repeat(rows, n_pos) * width + (flat + 1)
    if len(pos_keys) > 1 and not bool(np.all(pos_keys[1:] >= pos_keys[:-1])):
        pos_keys = np.sort(pos_keys)
    top_keys = rows[:, None] * width + (topk.astype(np.int64) + 1)  # -1 (no movie) never matches
    if not len(pos_keys):
        return np.zeros(topk.shape, dtype=bool)
    at = np.minimum(np.searchsorted(pos_keys, top_keys), len(pos_keys) - 1)
    return pos_keys[at] == top_keys


def precision_per_user(hits: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(1) / k


def recall_per_user(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    return hits[:, :k].sum(1) / np.maximum(n_pos, 1)


def ndcg_per_user(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * disc[: hits[:, :k].shape[1]]).sum(1)
    ideal = np.cumsum(disc)[np.minimum(np.maximum(n_pos, 1), k) - 1]
    return dcg / ideal


def map_per_user(hits: np.ndarray, n_pos: np.ndarray, k: int) -> np.ndarray:
    h = hits[:, :k].astype(np.float64)
    prec = np.cumsum(h, 1) / np.arange(1, h.shape[1] + 1)
    return (prec * h).sum(1) / np.minimum(np.maximum(n_pos, 1), k)


def precision_at_k(hits: np.ndarray, k: int) -> float:
    return float(precision_per_user(hits, k).mean()) if len(hits) else 0.0


def recall_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    return float(recall_per_user(hits, n_pos, k).mean()) if len(hits) else 0.0


def ndcg_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    return float(ndcg_per_user(hits, n_pos, k).mean()) if len(hits) else 0.0


def map_at_k(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    return float(map_per_user(hits, n_pos, k).mean()) if len(hits) else 0.0


def ranking_per_user(hits: np.ndarray, n_pos: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """precision/recall/ndcg/map@K of each user (row of ``hits``) for each K."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"precision@{k}"] = precision_per_user(hits, k)
        out[f"recall@{k}"] = recall_per_user(hits, n_pos, k)
        out[f"ndcg@{k}"] = ndcg_per_user(hits, n_pos, k)
        out[f"map@{k}"] = map_per_user(hits, n_pos, k)
    return out


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


def novelty(topk: np.ndarray, item_share: np.ndarray) -> float:
    """Mean self-information -log2(p_i) of recommended movies, p_i = share of users who rated i."""
    p = np.maximum(item_share[topk.ravel()], 1e-9)
    return float(np.mean(-np.log2(p))) if topk.size else 0.0


def diversity_per_list(topk: np.ndarray, genre_mat: np.ndarray | None) -> np.ndarray | None:
    """1 - mean pairwise cosine similarity of the movies' genre vectors, per list."""
    if genre_mat is None or genre_mat.shape[1] == 0 or topk.shape[1] < 2:
        return None
    g = genre_mat / np.maximum(np.linalg.norm(genre_mat, axis=1, keepdims=True), 1e-9)
    G = g[topk]  # lists x k x genres
    sim = np.einsum("lkg,ljg->lkj", G, G)
    k = topk.shape[1]
    off = (sim.sum((1, 2)) - np.trace(sim, axis1=1, axis2=2)) / (k * (k - 1))
    return 1.0 - off


def intra_list_diversity(topk: np.ndarray, genre_mat: np.ndarray | None) -> float | None:
    """Mean over lists of 1 - mean pairwise cosine similarity of the movies' genre vectors."""
    per = diversity_per_list(topk, genre_mat)
    return None if per is None else float(np.mean(per))


def popularity_lift(topk: np.ndarray, item_share: np.ndarray, history_items: np.ndarray) -> float:
    """Mean popularity of recommended movies over that of the movies in users' histories
    (1 = lists as popular as what people watch; > 1 = lists lean to the head)."""
    hist = item_share[history_items].mean() if len(history_items) else 0.0
    return float(item_share[topk.ravel()].mean() / hist) if hist > 0 else 0.0


def long_tail(topk: np.ndarray, item_count: np.ndarray, watched_items: np.ndarray, bins: int = 10) -> dict:
    """Share of recommendations and of watched (test) movies in each popularity bin
    (movies sorted from most to least rated in training, cut into ``bins`` equal groups)."""
    order = np.argsort(-item_count, kind="stable")
    bin_of = np.empty(len(item_count), np.int64)
    bin_of[order] = np.arange(len(item_count)) * bins // max(len(item_count), 1)
    rec = np.bincount(bin_of[topk.ravel()], minlength=bins) / max(topk.size, 1)
    watched = np.bincount(bin_of[watched_items], minlength=bins) / max(len(watched_items), 1)
    return {"recommended": rec.round(5).tolist(), "watched": watched.round(5).tolist()}


def pr_curve(hits: np.ndarray, n_pos: np.ndarray) -> dict:
    """precision@K and recall@K for K = 1 .. list length."""
    ks = np.arange(1, hits.shape[1] + 1)
    cum = np.cumsum(hits, 1)
    return {"k": ks.tolist(),
            "precision": (cum / ks).mean(0).round(5).tolist(),
            "recall": (cum / np.maximum(n_pos, 1)[:, None]).mean(0).round(5).tolist()}


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins of the probability ``p`` of label 1."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    b = np.clip((p * bins).astype(int), 0, bins - 1)
    return float(sum(abs(y[b == k].mean() - p[b == k].mean()) * (b == k).sum() for k in np.unique(b)) / len(p))
