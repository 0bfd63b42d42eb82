"""Top-N peers as evaluate baselines: what a user would run instead of movierec for top-N lists.

``evaluate.baselines`` may name, beside ``global_mean``, ``popularity``, ``bias`` and
``random``:

- ``ease``: EASE (Steck 2019), the item-item model in closed form (numpy/LAPACK; the same
  :func:`movierec.models._ease.ease_weights` as movierec's own EASE ranking), lambda
  ``evaluate.peer_ease_lambda`` (unset: ``model.ease_lambda``);
- ``rp3beta``: RP3beta (Paudel et al. 2017; as in Dacrema et al.'s reproducibility study): a
  three-step random walk user -> movie -> user -> movie with transition probabilities raised
  to ``alpha``, each target movie's score divided by its popularity ** ``beta``, the
  ``evaluate.peer_neighbours`` largest weights kept per movie (numpy/scipy);
- ``als``, ``bpr``, ``item_knn``: implicit's AlternatingLeastSquares,
  BayesianPersonalizedRanking and CosineRecommender (the optional ``peers`` extra:
  ``pip install 'movierec[peers]'``; implicit is imported only when one of them is fitted).

Each is fitted on the fold's training ratings as implicit feedback (a binary users x movies
matrix: who rated what), ranks every movie the user did not rate in training, and predicts
no ratings (its RMSE is "-"). What evaluate does with them (the same positives, metrics,
per-user scores, paired tests, and the popularity list for users without training ratings)
is in :mod:`movierec.evaluation.evaluate`.

This module returns the parts of a scorer (vectors, an item-item part, or a ranking
function) and leaves the :class:`~movierec.evaluation.evaluate.Recommender` to evaluate, so
that the two do not import each other.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pandas as pd
from movierec._lazy import sp

from movierec.config import Config
from movierec.errors import ConfigError

#: the top-N peers evaluate can score, and the library each needs beyond movierec's own
PEERS = ("ease", "rp3beta", "als", "bpr", "item_knn")
NEEDS = {"als": "implicit", "bpr": "implicit", "item_knn": "implicit"}
EXTRA = "peers"

#: fixed settings of implicit's models (the ones scripts/benchmark.py measured): L2 weights and step
ALS_REG, BPR_LEARNING_RATE, BPR_REG = 0.05, 0.01, 0.01
#: the most memory one block of dense scores may take (as in movierec.ranking.top_n)
BLOCK_BYTES = 1 << 28


def check_available(names: list[str] | tuple[str, ...]) -> None:
    """Raise a :class:`ConfigError` (exit 78) naming the extra when a peer's library is missing.

    Looked up without importing it (a light command stays light)."""
    missing = sorted({n for n in names if n in NEEDS and importlib.util.find_spec(NEEDS[n]) is None})
    if missing:
        libs = sorted({NEEDS[n] for n in missing})
        raise ConfigError(f"evaluate.baselines: {', '.join(missing)} need{'s' if len(missing) == 1 else ''} "
                          f"{', '.join(libs)}, which is not installed: pip install 'movierec[{EXTRA}]' "
                          f"(the optional '{EXTRA}' extra), or leave {', '.join(missing)} out of evaluate.baselines")


def interactions(train: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """The binary users x movies matrix of who rated what in training (float32)."""
    X = sp.csr_matrix((np.ones(len(train), np.float32), (train["user_idx"].to_numpy(), train["movie_idx"].to_numpy())),
                      shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def ease_lambda(cfg: Config) -> float:
    return float(cfg.evaluate.peer_ease_lambda if cfg.evaluate.peer_ease_lambda is not None else cfg.model.ease_lambda)


def fit_peer(name: str, X: sp.csr_matrix, cfg: Config) -> dict:
    """Fit one peer on ``X``: the keyword arguments of a Recommender's ranking part (one of
    ``vectors`` + ``item_item``, ``vectors``, ``rank_fn``) and ``fit_seconds``."""

    e = cfg.evaluate
    n_users, n_items = X.shape
    seed = int(cfg.model.seed)
    t0 = time.perf_counter()
    if name == "ease":
        from movierec.models._ease import ease_weights

        B = ease_weights(X, ease_lambda(cfg), cfg.model.ease_max_items)
        out = {"vectors": _zero_vectors(n_users, n_items), "item_item": (X, B)}
    elif name == "rp3beta":
        W = rp3beta_weights(X, e.peer_rp3beta_alpha, e.peer_rp3beta_beta, e.peer_neighbours)
        out = {"rank_fn": item_item_ranker(X, W)}
    elif name in ("als", "bpr", "item_knn"):
        check_available([name])
        out = _fit_implicit(name, X, e, seed)
    else:
        raise ConfigError(f"evaluate.baselines: unknown peer '{name}'; peers: {', '.join(PEERS)}")
    out["fit_seconds"] = time.perf_counter() - t0
    return out


def _fit_implicit(name: str, X: sp.csr_matrix, e, seed: int) -> dict:
    """als, bpr, item_knn: implicit's models (imported here only), BLAS on one thread while they
    run (implicit's advice: it has its own threads)."""
    import warnings

    from threadpoolctl import threadpool_limits

    from movierec.models.mf import ScoreVectors

    n_users, n_items = X.shape
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        # implicit converts the transposed matrix itself and says so (ParameterWarning)
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        if name == "item_knn":
            from implicit.nearest_neighbours import CosineRecommender

            knn = CosineRecommender(K=e.peer_neighbours or n_items, num_threads=0)
            knn.fit(X, show_progress=False)
            return {"rank_fn": item_item_ranker(X, knn.similarity.tocsr().astype(np.float32))}
        if name == "als":  # conjugate gradient per user: the same factors on any number of threads
            from implicit.cpu.als import AlternatingLeastSquares

            model = AlternatingLeastSquares(factors=e.peer_factors, regularization=ALS_REG,
                                            iterations=e.peer_als_iterations, random_state=seed, num_threads=0)
        else:  # one thread: parallel SGD (Hogwild) would change the factors from run to run
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            model = BayesianPersonalizedRanking(factors=e.peer_factors, learning_rate=BPR_LEARNING_RATE,
                                                regularization=BPR_REG, iterations=e.peer_bpr_iterations,
                                                random_state=seed, num_threads=1)
        model.fit(X, show_progress=False)
    U = np.ascontiguousarray(model.user_factors, np.float32)
    V = np.ascontiguousarray(model.item_factors, np.float32)
    return {"vectors": ScoreVectors.of(0.0, np.zeros(n_users, np.float32), np.zeros(n_items, np.float32), U, V)}


def _zero_vectors(n_users: int, n_items: int):
    from movierec.models.mf import ScoreVectors

    return ScoreVectors.of(0.0, np.zeros(n_users, np.float32), np.zeros(n_items, np.float32),
                           np.zeros((n_users, 0), np.float32), np.zeros((n_items, 0), np.float32))


def rp3beta_weights(X: sp.csr_matrix, alpha: float, beta: float, neighbours: int) -> sp.csr_matrix:
    """RP3beta's movies x movies weights: W[i, j] = sum_u P(i -> u)^alpha P(u -> j)^alpha /
    pop(j)^beta, with P(i -> u) = 1 / pop(i) and P(u -> j) = 1 / n_u over the binary matrix
    ``X`` (pop: a movie's raters, n_u: a user's movies); the diagonal is 0 and each row keeps
    its ``neighbours`` largest weights (0: all). A user's scores are X_u W."""
    X = X.tocsr().astype(np.float32)
    n_items = X.shape[1]
    n_u = np.asarray(X.sum(1)).ravel()
    pop = np.asarray(X.sum(0)).ravel()
    P_ui = sp.diags(np.where(n_u > 0, 1.0 / np.maximum(n_u, 1), 0.0) ** alpha).astype(np.float32) @ X
    P_iu = (sp.diags(np.where(pop > 0, 1.0 / np.maximum(pop, 1), 0.0) ** alpha).astype(np.float32) @ X.T).tocsr()
    col = np.where(pop > 0, 1.0 / np.maximum(pop, 1) ** beta, 0.0).astype(np.float32)
    block = max(1, min(n_items, BLOCK_BYTES // (4 * max(n_items, 1))))
    rows, cols, vals = [], [], []
    for s in range(0, n_items, block):
        W = np.asarray((P_iu[s:s + block] @ P_ui).toarray(), np.float32) * col[None, :]
        r = np.arange(W.shape[0])
        W[r, s + r] = 0.0
        if 0 < neighbours < n_items:
            keep = np.argpartition(-W, neighbours - 1, axis=1)[:, :neighbours]
        else:
            keep = np.broadcast_to(np.arange(n_items), W.shape)
        v = np.take_along_axis(W, keep, 1)
        nz = v > 0
        rows.append(np.repeat(s + r, nz.sum(1)))
        cols.append(keep[nz])
        vals.append(v[nz])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_items, n_items), dtype=np.float32)


def item_item_ranker(X: sp.csr_matrix, W: sp.csr_matrix):
    """A ranking function (users, k, seen) -> users x k movie indices by the scores X_u W
    (sparse W), blocked over users, seen movies never listed."""
    from movierec.ranking import top_n_from_scores

    def rank(users: np.ndarray, k: int, seen: sp.csr_matrix) -> np.ndarray:
        users = np.asarray(users, np.int64)
        n_items = W.shape[1]
        k = min(k, n_items)
        out = np.zeros((len(users), k), np.int64)
        block = max(16, min(2048, BLOCK_BYTES // (4 * max(n_items, 1))))
        for s in range(0, len(users), block):
            ub = users[s:s + block]
            sc = np.asarray((X[ub] @ W).toarray(), np.float32)
            sub = seen[ub]
            sc[np.repeat(np.arange(len(ub)), np.diff(sub.indptr)), sub.indices] = -np.inf
            out[s:s + len(ub)] = top_n_from_scores(sc, k)[0]
        return out

    return rank
