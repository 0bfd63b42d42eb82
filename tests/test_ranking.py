import numpy as np
import scipy.sparse as sp

from movierec.ranking import top_n, top_n_from_scores


def test_top_n_from_scores_sorted():
    s = np.array([[0.1, 0.9, 0.5, -np.inf, 0.7]])
    items, scores = top_n_from_scores(s, 3)
    assert items.tolist() == [[1, 4, 2]] and scores[0].tolist() == [0.9, 0.7, 0.5]


def test_blocked_equals_unblocked_and_seen_excluded():
    rng = np.random.default_rng(0)
    nu, ni, k = 50, 30, 4
    vec = (np.float32(3.0), rng.normal(size=nu).astype(np.float32), rng.normal(size=ni).astype(np.float32),
           rng.normal(size=(nu, k)).astype(np.float32), rng.normal(size=(ni, k)).astype(np.float32))
    seen = sp.random(nu, ni, density=0.3, format="csr", random_state=0)
    users = np.arange(nu)
    a_items, a_scores = top_n(vec, users, 10, seen, block=7)
    b_items, b_scores = top_n(vec, users, 10, seen, block=1000)
    assert np.array_equal(a_items, b_items) and np.allclose(a_scores, b_scores)
    for u in range(nu):
        assert not set(a_items[u]) & set(seen[u].indices)
        full = vec[0] + vec[1][u] + vec[2] + vec[4] @ vec[3][u]
        full[seen[u].indices] = -np.inf
        assert a_items[u].tolist() == np.argsort(-full, kind="stable")[:10].tolist()
