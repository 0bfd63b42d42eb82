"""Per-rating SGD for biased MF with feature projections and social regularisation (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True)
def sgd_epoch(
    users, items, ratings, order, mu, bu, bi, P, Q, W, V, X, Y,
    nb_ptr, nb_idx, nb_w, lr, lr_feat, reg, reg_b, social_reg, use_feat,
):  # pragma: no cover - compiled
    """One pass over ``order``; returns the training SSE (before each update)."""
    k = P.shape[1]
    du = X.shape[1]
    di = Y.shape[1]
    pu = np.empty(k, dtype=P.dtype)
    qi = np.empty(k, dtype=P.dtype)
    mean_nb = np.empty(k, dtype=P.dtype)
    sse = 0.0
    for t in order:
        u = users[t]
        i = items[t]
        for f in range(k):
            pu[f] = P[u, f]
            qi[f] = Q[i, f]
        if use_feat:
            for f in range(k):
                s = 0.0
                for d in range(du):
                    s += W[f, d] * X[u, d]
                pu[f] += s
                s = 0.0
                for d in range(di):
                    s += V[f, d] * Y[i, d]
                qi[f] += s
        pred = mu + bu[u] + bi[i]
        for f in range(k):
            pred += pu[f] * qi[f]
        e = ratings[t] - pred
        sse += e * e
        bu[u] += lr * (e - reg_b * bu[u])
        bi[i] += lr * (e - reg_b * bi[i])
        has_nb = social_reg > 0.0 and nb_ptr[u + 1] > nb_ptr[u]
        if has_nb:
            for f in range(k):
                mean_nb[f] = 0.0
            for j in range(nb_ptr[u], nb_ptr[u + 1]):
                v = nb_idx[j]
                for f in range(k):
                    mean_nb[f] += nb_w[j] * P[v, f]
        for f in range(k):
            gu = e * qi[f]
            gi = e * pu[f]
            step_u = gu - reg * P[u, f]
            if has_nb:
                step_u -= social_reg * (P[u, f] - mean_nb[f])
            P[u, f] += lr * step_u
            Q[i, f] += lr * (gi - reg * Q[i, f])
            if use_feat:
                for d in range(du):
                    W[f, d] += lr_feat * gu * X[u, d]
                for d in range(di):
                    V[f, d] += lr_feat * gi * Y[i, d]
    return sse


@njit(cache=True)
def fill_cold_users(P, bu, counts, nb_ptr, nb_idx, nb_w):  # pragma: no cover - compiled
    """Users without training ratings take their neighbourhood's factors and bias."""
    k = P.shape[1]
    for u in range(P.shape[0]):
        if counts[u] == 0 and nb_ptr[u + 1] > nb_ptr[u]:
            b = 0.0
            for f in range(k):
                P[u, f] = 0.0
            for j in range(nb_ptr[u], nb_ptr[u + 1]):
                v = nb_idx[j]
                b += nb_w[j] * bu[v]
                for f in range(k):
                    P[u, f] += nb_w[j] * P[v, f]
            bu[u] = b


def predict_pairs(users, items, mu, bu, bi, U, I):
    """Vectorised predictions for known (user, item) pairs, given effective vectors."""
    return mu + bu[users] + bi[items] + np.einsum("ij,ij->i", U[users], I[items])
