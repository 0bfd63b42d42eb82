"""social: the trust/friendship graph (networkx), per-user graph features, neighbourhoods.

Tie strength is the configured ``weight`` (scaled to 0..1 when it is on another scale)
times ``1 + social.message_weight * sentiment`` of the message between the two users
(where there is one). Each user's neighbourhood (out-neighbours, strengths summing to
1) is what the social regulariser of the model pulls the user's factors toward.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp

from movierec.config import SocialConfig

log = logging.getLogger(__name__)


@dataclass
class SocialResult:
    features: pd.DataFrame  # user_idx, in/out degree, pagerank, clustering, community, trust_2hop, reach_2hop
    neighbours: pd.DataFrame  # user_idx, neighbour_idx, strength (sums to 1 per user)


def tie_strength(social: pd.DataFrame, messages: pd.DataFrame | None, message_weight: float) -> pd.Series:
    """Strength of each tie in ``social`` (same order), non-negative."""
    w = social["weight"].astype(np.float64).fillna(1.0)
    if len(w) and w.max() > 1.0:
        w = w / w.max()
    if messages is not None and len(messages):
        m = messages.groupby(["user_idx", "friend_idx"], as_index=False)["sentiment"].mean()
        s = social[["user_idx", "friend_idx"]].merge(m, on=["user_idx", "friend_idx"], how="left")["sentiment"]
        w = w * (1.0 + message_weight * s.fillna(0.0).to_numpy())
    return w.clip(lower=0.0)


def social(
    ties: pd.DataFrame, messages: pd.DataFrame | None, n_users: int, cfg: SocialConfig
) -> SocialResult:
    """Graph features for every user (0..n_users-1) and their weighted neighbourhoods."""
    t = ties[["user_idx", "friend_idx"]].copy()
    t["strength"] = tie_strength(ties, messages, cfg.message_weight).to_numpy()
    t = t[t["user_idx"] != t["friend_idx"]]
    if not cfg.directed:
        rev = t.rename(columns={"user_idx": "friend_idx", "friend_idx": "user_idx"})
        t = pd.concat([t, rev], ignore_index=True)
    t = t.groupby(["user_idx", "friend_idx"], as_index=False)["strength"].max()

    g = nx.DiGraph()
    g.add_nodes_from(range(n_users))
    g.add_weighted_edges_from(t.itertuples(index=False, name=None), weight="strength")

    # directed view: degrees and PageRank (networkx's scipy power iteration)
    ui, fi = t["user_idx"].to_numpy(), t["friend_idx"].to_numpy()
    out_deg = np.bincount(ui, minlength=n_users).astype(np.float64)
    in_deg = np.bincount(fi, minlength=n_users).astype(np.float64)
    pr = nx.pagerank(g, alpha=cfg.pagerank_alpha, weight="strength") if g.number_of_edges() else {}
    pagerank = np.array([pr.get(n, 1.0 / max(n_users, 1)) for n in range(n_users)])
    # undirected view: clustering coefficient from sparse triangle counts (the same numbers
    # as nx.clustering, unweighted, at a fraction of the time on large graphs), Louvain
    A = sp.csr_matrix((np.ones(len(t)), (ui, fi)), shape=(n_users, n_users))
    U = ((A + A.T) > 0).astype(np.float64)
    deg = np.asarray(U.sum(1)).ravel()
    tri = triangles(U)
    clustering = np.where(deg > 1, 2.0 * tri / np.maximum(deg * (deg - 1), 1), 0.0)
    community = np.full(n_users, -1, dtype=np.int32)
    und = g.to_undirected()
    if und.number_of_edges():
        if und.number_of_edges() <= cfg.louvain_max_edges:
            comms = nx.community.louvain_communities(und, weight="strength", seed=cfg.seed)
        else:  # networkx's Louvain is pure Python: minutes at Epinions size; label propagation is O(edges)
            log.info("social: %d edges > social.louvain_max_edges; communities by fast label propagation",
                     und.number_of_edges())
            comms = list(nx.community.fast_label_propagation_communities(und, weight="strength", seed=cfg.seed))
        comms = sorted((c for c in comms if len(c) > 1), key=lambda c: (-len(c), min(c)))
        for k, members in enumerate(comms):
            community[list(members)] = k
    # trust propagation: strength-normalised ties S, two hops with decay: S + d * S^2
    # (vector products only: S^2 itself can be huge around hubs)
    S = row_normalized(sp.csr_matrix((t["strength"].to_numpy(np.float64), (ui, fi)), shape=(n_users, n_users)))
    inflow = np.asarray(S.sum(0)).ravel()
    trust_2hop = inflow + cfg.propagation_decay * (S.T @ inflow)  # trust flowing in within two hops
    # users reachable within two hops: exact while A^2 stays small, else the count of
    # two-step paths (an upper bound: it counts a user reached twice twice)
    if float(in_deg @ out_deg) <= 2e7:
        reach_2hop = np.diff(((A + A @ A) > 0).astype(np.int8).tocsr().indptr).astype(np.float64)
    else:
        log.info("social: two-hop reach approximated by the number of two-step paths (large graph)")
        reach_2hop = out_deg + A @ out_deg
    features = pd.DataFrame({
        "user_idx": np.arange(n_users, dtype=np.int32),
        "in_degree": in_deg,
        "out_degree": out_deg,
        "pagerank": pagerank * n_users,  # 1.0 = average
        "clustering": clustering,
        "community": community,
        "trust_2hop": trust_2hop,
        "reach_2hop": reach_2hop,
    })
    # the neighbourhood the model pulls each user toward: each user's personalised PageRank;
    # or their direct ties and, with weight social.hop2_weight, two-hop ones (the same walk
    # cut after one or two steps, nothing pruned)
    if cfg.neighbourhood == "ppr":
        N = personalized_pagerank(S, cfg.ppr_alpha, cfg.ppr_hops, cfg.ppr_top)
    else:
        N = personalized_pagerank(S, cfg.hop2_weight, 2 if cfg.hop2_weight > 0 else 1, top=0, eps=0.0)
    N = N.tocoo()
    nb = pd.DataFrame({
        "user_idx": N.row.astype(np.int32),
        "neighbour_idx": N.col.astype(np.int32),
        "strength": N.data.astype(np.float32),
    })
    nb = nb[nb["strength"] > 0].sort_values(["user_idx", "neighbour_idx"]).reset_index(drop=True)
    return SocialResult(features, nb)


def triangles(U: sp.csr_matrix, max_entries: float = 2e7) -> np.ndarray:
    """Triangles through each node of a symmetric 0/1 adjacency matrix: diag(U^3) / 2,
    from U @ U taken a block of rows at a time, each block's product holding at most about
    ``max_entries`` entries (Epinions-sized graph of the social-scale benchmark: 0.2 GB and
    4-5 s, against 3.6 GB and 12 s for the whole product at once)."""
    U = U.tocsr()
    n = U.shape[0]
    cost = np.cumsum(U @ np.diff(U.indptr).astype(np.float64))  # entries of each row of U @ U, at most
    cuts = np.unique(np.r_[0, np.searchsorted(cost, np.arange(max_entries, cost[-1] if n else 0, max_entries)), n])
    parts = [np.asarray((U[a:b] @ U).multiply(U[a:b]).sum(1)).ravel() for a, b in zip(cuts[:-1], cuts[1:])]
    return (np.concatenate(parts) if parts else np.zeros(0)) / 2.0


def top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The ``k`` largest entries of every row (ties broken by column), the rest dropped."""
    m = m.tocsr()
    m.eliminate_zeros()
    if k <= 0 or np.diff(m.indptr).max(initial=0) <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((m.indices, -m.data, rows))
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    keep = order[rank < k]
    out = sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)
    out.sort_indices()
    return out


def personalized_pagerank(S: sp.csr_matrix, alpha: float, hops: int, top: int,
                          eps: float | None = None) -> sp.csr_matrix:
    """Each user's personalised PageRank over the others: where a walk that starts at the
    user and follows ties (``S``, rows summing to 1) goes on with probability ``alpha`` at
    each step, ends up. Rows hold sum_{k=1..hops} alpha^(k-1) S^k, the user left out, scaled
    to sum to 1. Approximations that keep Epinions-sized graphs at seconds and bounded
    memory: only the ``top`` largest entries of each row are carried to the next step and
    kept, and a walk is not continued through a user whose every onward step would carry
    less than ``eps`` of the start's mass (default 0.05 / top; the ε of push-style
    approximate PageRank), which bounds a step's row to 1 / eps entries (``top`` <= 0 and
    ``eps`` = 0: nothing pruned). With neither
    (hops -> inf, top -> all, eps = 0) this is networkx's ``pagerank`` personalised on the
    user, the user removed and re-normalised."""
    S = S.tocsr().astype(np.float64)
    n = S.shape[0]
    eps = 0.05 / max(top, 1) if eps is None else eps
    step_max = S.max(axis=1).toarray().ravel()  # the largest share one step can pass on
    block = max(1, int(2_000_000 * eps)) if eps > 0 else n  # rows per product: <= ~2M entries
    walk, N = S, S.copy()
    for k in range(2, max(hops, 1) + 1):
        w = walk.tocoo()
        go = w.data * step_max[w.col] >= eps
        w = sp.csr_matrix((w.data[go], (w.row[go], w.col[go])), shape=S.shape)
        walk = sp.vstack([top_per_row(w[i:i + block] @ S, top) for i in range(0, n, block)], format="csr")
        N = N + alpha ** (k - 1) * walk
    N = N.tocoo()
    off = N.row != N.col
    N = sp.csr_matrix((N.data[off], (N.row[off], N.col[off])), shape=N.shape)
    return row_normalized(top_per_row(N, top))


def row_normalized(m: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to sum to 1 (empty rows stay empty)."""
    m = m.tocsr()
    tot = np.asarray(m.sum(1)).ravel()
    return (sp.diags(np.where(tot > 0, 1.0 / np.where(tot > 0, tot, 1.0), 0.0)) @ m).tocsr()


def shuffled_neighbours(nb: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The control experiment: every tie's target replaced by another tie's target. Each
    user keeps as many ties and each target as many trusters, but who trusts whom is
    random; strengths are re-normalised per user."""
    nb = nb.copy()
    nb["neighbour_idx"] = np.random.default_rng(seed).permutation(nb["neighbour_idx"].to_numpy())
    nb = nb[nb["neighbour_idx"] != nb["user_idx"]]
    nb = nb.groupby(["user_idx", "neighbour_idx"], as_index=False)["strength"].sum()
    nb["strength"] /= nb.groupby("user_idx")["strength"].transform("sum")
    return nb
