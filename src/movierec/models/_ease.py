"""EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): an item-item
model in closed form, B = I - P / diag(P) with P = (X'X + lambda I)^-1 and diag(B) = 0, where
X is the binary users x movies matrix of what users rated or reviewed. A user's scores are
X_u B. It is the strongest of the top-N peers measured here (benchmarks/results/topn.md), and
a dense movies x movies matrix: for catalogues up to some tens of thousands of movies.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from movierec.errors import ModelError


def ease_weights(X: sp.csr_matrix, lam: float, max_items: int) -> np.ndarray:
    """The EASE item-item matrix (float32, zero diagonal) of interactions ``X``.

    The Gram matrix is inverted through its Cholesky factor (LAPACK potrf/potri: a third of
    the work of a general inverse) in float32.

    Raises:
        ModelError: more movies than ``max_items`` (the matrix would not fit the memory target).
    """
    n = X.shape[1]
    if n > max_items:
        raise ModelError(f"model.ranking 'ease' needs a {n} x {n} matrix (over model.ease_max_items {max_items}); "
                         "use model.ranking: hybrid for a catalogue this large, or raise the limit")
    Xf = X.astype(np.float32)
    G = np.asarray((Xf.T @ Xf).toarray(), dtype=np.float32)
    G[np.diag_indices(n)] += np.float32(lam)
    c, info = lapack.spotrf(G, lower=False, overwrite_a=True)
    if info != 0:
        raise ModelError(f"EASE: the Gram matrix is not positive definite (LAPACK potrf info {info}); raise "
                         "model.ease_lambda")
    P, info = lapack.spotri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise ModelError(f"EASE: inverting the Gram matrix failed (LAPACK potri info {info})")
    P = np.triu(P) + np.triu(P, 1).T  # potri fills one triangle
    d = np.diag(P).copy()
    B = P / -d[None, :]
    B[np.diag_indices(n)] = 0.0
    return B.astype(np.float32)


def activity_weight(counts: np.ndarray, weight: float, half: float) -> np.ndarray:
    """How much the rating model's taste adds to a user's EASE score: ``weight`` scaled by
    n / (n + half) for a user with n interactions (little for a user with a few ratings,
    whose taste vector is mostly noise; nearly all of it for a heavy rater)."""
    n = np.asarray(counts, np.float64)
    return (weight * n / (n + half) if half > 0 else np.full(len(n), weight)).astype(np.float32)
