"""social: the trust/friendship graph (networkx), per-user graph features, neighbourhoods.

Tie strength is the configured ``weight`` (scaled to 0..1 when it is on another scale)
times ``1 + social.message_weight * sentiment`` of the message between the two users
(where there is one). Each user's neighbourhood (out-neighbours, strengths summing to
1) is what the social regulariser of the model pulls the user's factors toward.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np
import pandas as pd

from movierec.config import SocialConfig


@dataclass
class SocialResult:
    features: pd.DataFrame  # user_idx, in_degree, out_degree, pagerank, clustering, community
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
    und = g.to_undirected()

    in_deg = np.zeros(n_users)
    out_deg = np.zeros(n_users)
    for n, d in g.in_degree():
        in_deg[n] = d
    for n, d in g.out_degree():
        out_deg[n] = d
    pr = nx.pagerank(g, alpha=cfg.pagerank_alpha, weight="strength") if g.number_of_edges() else {}
    pagerank = np.array([pr.get(n, 1.0 / max(n_users, 1)) for n in range(n_users)])
    clust = nx.clustering(und)
    clustering = np.array([clust.get(n, 0.0) for n in range(n_users)])
    community = np.full(n_users, -1, dtype=np.int32)
    if und.number_of_edges():
        comms = nx.community.louvain_communities(und, weight="strength", seed=cfg.seed)
        comms = sorted((c for c in comms if len(c) > 1), key=lambda c: (-len(c), min(c)))
        for k, members in enumerate(comms):
            community[list(members)] = k
    features = pd.DataFrame({
        "user_idx": np.arange(n_users, dtype=np.int32),
        "in_degree": in_deg,
        "out_degree": out_deg,
        "pagerank": pagerank * n_users,  # 1.0 = average
        "clustering": clustering,
        "community": community,
    })
    total = t.groupby("user_idx")["strength"].transform("sum")
    nb = pd.DataFrame({
        "user_idx": t["user_idx"].astype(np.int32),
        "neighbour_idx": t["friend_idx"].astype(np.int32),
        "strength": np.where(total > 0, t["strength"] / total.where(total > 0, 1.0), 0.0).astype(np.float32),
    })
    nb = nb[nb["strength"] > 0].sort_values(["user_idx", "neighbour_idx"]).reset_index(drop=True)
    return SocialResult(features, nb)
