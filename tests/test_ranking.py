import numpy as np
import pandas as pd
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
    # a wide catalogue shrinks the block to keep its scores under BLOCK_BYTES: same lists
    import movierec.ranking as ranking

    old, ranking.BLOCK_BYTES = ranking.BLOCK_BYTES, 4 * ni * 16  # 16 users per block
    try:
        c_items, _ = top_n(vec, users, 10, seen, block=1000)
    finally:
        ranking.BLOCK_BYTES = old
    assert np.array_equal(a_items, c_items)
    for u in range(nu):
        assert not set(a_items[u]) & set(seen[u].indices)
        full = vec[0] + vec[1][u] + vec[2] + vec[4] @ vec[3][u]
        full[seen[u].indices] = -np.inf
        assert a_items[u].tolist() == np.argsort(-full, kind="stable")[:10].tolist()


def test_small_blocks_rank_with_numpy_exactly_as_the_compiled_kernel():
    """One viewer's list is ranked by numpy (no numba start-up): the same order as the
    compiled kernel, ties to the lower movie, masked (-inf) movies last in movie order."""
    from movierec._topk import topk_rows
    from movierec.ranking import SMALL_BLOCK, _topk_rows

    rng = np.random.default_rng(1)
    for _ in range(300):
        rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 40))
        n = int(rng.integers(1, cols + 1))
        s = rng.integers(-3, 3, (rows, cols)).astype(np.float32)
        s[rng.random((rows, cols)) < 0.3] = -np.inf
        assert s.size <= SMALL_BLOCK
        a, b = _topk_rows(s, n), topk_rows(s, n)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[0].dtype == np.int64


def _bundle(P, Q, mu=3.5, ranking_items=None):
    import pandas as pd

    from movierec.models.mf import MatrixFactorization
    from movierec.ranking import ModelBundle

    nu, ni = len(P), len(Q)
    m = MatrixFactorization(factors=P.shape[1], ranking="rating", reg=1e-6)
    m.global_mean_, m.rating_min_, m.rating_max_ = mu, -100.0, 100.0
    m.user_bias_, m.item_bias_ = np.zeros(nu, np.float32), np.zeros(ni, np.float32)
    m.user_factors_, m.item_factors_ = P.astype(np.float32), Q.astype(np.float32)
    for name, n in (("user_weights_", 0), ("item_weights_", 0)):
        setattr(m, name, np.zeros((P.shape[1], n), np.float32))
    m.user_features_, m.item_features_ = np.zeros((nu, 0), np.float32), np.zeros((ni, 0), np.float32)
    m.item_implicit_, m.user_implicit_ = np.zeros((ni, 0), np.float32), np.zeros((nu, 0), np.float32)
    m.watch_user_, m.watch_item_, m.watch_bias_ = np.zeros((nu, 0)), np.zeros((ni, 0)), np.zeros(0)
    movies = pd.DataFrame({"movie_idx": range(ni), "movie_id": [f"m{i}" for i in range(ni)],
                           "title": [f"t{i}" for i in range(ni)], "genres": "", "year": 2000})
    return ModelBundle(None, m, pd.Index([f"u{u}" for u in range(nu)]), pd.Index(movies.movie_id), movies,
                       sp.csr_matrix((nu, ni), dtype=np.float32), np.arange(ni)[::-1].copy(), {})


def test_fold_in_recovers_known_factors_and_top_n():
    import pandas as pd

    rng = np.random.default_rng(0)
    P, Q = rng.normal(size=(5, 4)), rng.normal(size=(60, 4))
    bundle = _bundle(P, Q)
    u = 2
    rated = rng.choice(60, 25, replace=False)
    ratings = pd.DataFrame({"movie_id": [f"m{i}" for i in rated], "rating": 3.5 + Q[rated] @ P[u]})
    folded = bundle.recommend_ratings("someone", ratings, 10)
    assert folded["fallback"] == "fold-in"
    # the same user, as if retrained with these ratings: same top-N (rated movies excluded)
    bundle.seen = sp.csr_matrix((np.ones(25), (np.full(25, u), rated)), shape=(5, 60))
    known = bundle.recommend_user("u2", 10)
    assert [it["movie_id"] for it in folded["items"]] == [it["movie_id"] for it in known["items"]]
    assert np.allclose([it["predicted_rating"] for it in folded["items"]],
                       [it["predicted_rating"] for it in known["items"]], atol=1e-2)


def test_a_known_viewer_with_nothing_of_their_own_gets_the_popularity_list_everywhere():
    """A viewer in the version (features, trust ties) without a rated or reviewed movie gets the
    list evaluation gives such users: the most rated movies, in recommend --user and --all;
    one with a rating, or with feedback since training, gets the model's."""
    rng = np.random.default_rng(3)
    P, Q = rng.normal(size=(4, 3)), rng.normal(size=(30, 3))
    bundle = _bundle(P, Q)
    bundle.popularity = rng.permutation(30).astype(np.float32)
    bundle.seen = bundle.rated = sp.csr_matrix((np.ones(2), ([1, 3], [5, 7])), shape=(4, 30))  # 1 and 3 rated one
    popular = [f"m{i}" for i in np.argsort(-bundle.popularity, kind="stable")[:5]]
    blank = bundle.recommend_user("u0", 5)
    assert blank["fallback"] == "popularity" and [it["movie_id"] for it in blank["items"]] == popular
    # the model's own predicted rating beside the list (mu + b_u + b_i + p_u . q_i)
    assert np.isclose(blank["items"][0]["predicted_rating"], 3.5 + Q[int(popular[0][1:])] @ P[0], atol=1e-3)
    from movierec.explain import explain

    assert {it["explanation"] for it in explain(bundle, "u0", blank["items"])} == {
        "Among the most watched movies (no ratings of yours yet)."}
    rated = bundle.recommend_user("u1", 5)
    model_order = [f"m{i}" for i in np.argsort(-(Q @ P[1]), kind="stable") if i != 5][:5]
    assert rated["fallback"] is None and [it["movie_id"] for it in rated["items"]] == model_order
    lists = bundle.recommend_all(5)
    got = {u: list(g.sort_values("rank")["movie_id"]) for u, g in lists.groupby("user_id")}
    assert got["u0"] == got["u2"] == popular and got["u1"] == model_order
    # feedback since training (a rating of user 2's): the model's list, folded in, on both paths
    ev = [{"user_id": "u2", "movie_id": "m9", "rating": 5.0}]
    one = bundle.recommend_user("u2", 5, events=ev)
    assert one["fallback"] is None and [it["movie_id"] for it in one["items"]] != popular
    every = bundle.recommend_all(5, events=pd.DataFrame(ev))
    assert list(every[every.user_id == "u2"].sort_values("rank")["movie_id"]) == [it["movie_id"] for it in one["items"]]


def test_seen_rows_read_from_the_file_leave_out_what_the_matrix_does(tmp_path):
    """recommend --all on Ray: the seen movies as SeenRows (seen.npz memory-mapped, feedback
    movies beside) give the lists of the summed matrix; pickled, they carry the path, not the
    rows; npz_mapped reads np.savez's file and the streamed one (ZIP64 members) alike."""
    import pickle

    from movierec.data.parts_train import write_seen
    from movierec.data.ray_tables import Tasks
    from movierec._npz import npz_mapped
    from movierec.ranking import SeenRows

    rng = np.random.default_rng(0)
    n_users, n_items, k = 300, 120, 8
    rated = sp.random(n_users, n_items, density=0.1, format="csr", random_state=1, dtype=np.float32)
    rated.data = rng.integers(1, 6, rated.nnz).astype(np.float32)
    watched = sp.random(n_users, n_items, density=0.03, format="csr", random_state=2, dtype=np.float32)
    watched = (watched - watched.multiply(rated.astype(bool))).tocsr()
    watched.eliminate_zeros()
    watched.data[:] = 1.0
    np.savez(tmp_path / "seen.npz", indptr=rated.indptr, indices=rated.indices, ratings=rated.data,
             watched_indptr=watched.indptr, watched_indices=watched.indices,
             popularity=np.asarray(rated.astype(bool).sum(0)).ravel())
    events = sp.csr_matrix((np.ones(3, np.float32), ([0, 0, 5], [1, 2, 3])), shape=(n_users, n_items))
    seen = (rated.astype(bool) + watched.astype(bool) + events.astype(bool)).astype(np.float32).tocsr()
    vectors = (np.float32(3.5), rng.normal(size=n_users).astype(np.float32), rng.normal(size=n_items).astype(np.float32),
               rng.normal(size=(n_users, k)).astype(np.float32), rng.normal(size=(n_items, k)).astype(np.float32))
    lazy = SeenRows(tmp_path / "seen.npz", (n_users, n_items), events)
    users = np.arange(40, 260)
    a = top_n(vectors, users, 10, seen)
    b = top_n(vectors, users, 10, pickle.loads(pickle.dumps(lazy)))
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    assert len(pickle.dumps(lazy)) < 2000 + 16 * events.nnz  # the path, not the rows
    m = npz_mapped(tmp_path / "seen.npz")
    assert isinstance(m["indices"], np.memmap)
    with np.load(tmp_path / "seen.npz") as z:
        assert all(np.array_equal(z[key], m[key]) and z[key].dtype == m[key].dtype for key in z.files)
    # the file streamed from parts (ZIP64 members: a longer local header)
    df = pd.DataFrame({"user_idx": rated.tocoo().row, "movie_idx": rated.tocoo().col, "rating": rated.tocoo().data})
    (tmp_path / "parts").mkdir()
    (tmp_path / "scratch").mkdir()
    for j, (lo, hi) in enumerate([(0, 100), (100, 300)]):
        df[(df.user_idx >= lo) & (df.user_idx < hi)].to_parquet(tmp_path / "parts" / f"part-{j:05d}.parquet")
    w = watched.tocoo()
    write_seen(tmp_path / "streamed.npz", sorted(str(f) for f in (tmp_path / "parts").glob("*.parquet")), Tasks(),
               n_users, n_items, w.row, w.col, tmp_path / "scratch")
    s2 = npz_mapped(tmp_path / "streamed.npz")
    with np.load(tmp_path / "streamed.npz") as z:
        assert all(np.array_equal(z[key], s2[key]) for key in z.files) and len(z.files) == 6
    assert np.array_equal(s2["indices"], rated.indices) and np.array_equal(s2["watched_indices"], watched.indices)


def test_a_plan_pickles_the_mapped_model_and_ids_by_name_and_lists_as_in_memory(tmp_path):
    """recommend --all on Ray: a loaded version's model arrays are memory-mapped, so the plan a
    Ray task gets carries the model file's name and place, not every viewer's vectors, and
    the user ids as the file (IdColumn, several row groups); the lists are the in-memory
    plan's."""
    import json
    import pickle

    import pyarrow as pa
    import pyarrow.parquet as pq

    from movierec.ranking import IdColumn, ModelBundle, lists_for_users
    from movierec.registry import Registry
    from movierec.version_layout import META, MODEL, MOVIES, USER_IDS

    rng = np.random.default_rng(3)
    nu, ni, k = 2500, 90, 16
    b = _bundle(rng.normal(size=(nu, k)), rng.normal(size=(ni, k)))
    b.model.user_bias_ = rng.normal(size=nu).astype(np.float32)
    b.model.ease_item_, b.model.content_rank_bias_ = np.zeros((0, 0), np.float32), np.zeros(ni, np.float32)
    b.model.item_content_map_ = b.model.user_content_map_ = np.zeros((0, 0), np.float32)
    b.model.watch_bias_ = np.zeros(0, np.float32)
    b.model.save(tmp_path / MODEL)
    pq.write_table(pa.table({"user_idx": np.arange(nu), "user_id": [f"u{u}" for u in range(nu)]}),
                   tmp_path / USER_IDS, row_group_size=700)
    b.movies.to_parquet(tmp_path / MOVIES, index=False)
    rated = sp.random(nu, ni, density=0.05, format="coo", random_state=4, dtype=np.float32)
    Registry._write_seen(tmp_path, pd.DataFrame({"user_idx": rated.row, "movie_idx": rated.col, "rating": 4.0}),
                         None, nu, ni)
    (tmp_path / META).write_text(json.dumps({}))

    loaded = ModelBundle.load(tmp_path)
    assert isinstance(loaded.model.user_factors_, np.memmap)
    plan = loaded.all_lists_plan(lazy_seen=True)
    assert isinstance(plan.user_ids, IdColumn) and "users" not in loaded._raw  # no id read in this process
    blob = pickle.dumps(plan)
    assert len(blob) < 0.1 * b.model.user_factors_.nbytes  # the vectors by name (and the small per-movie ones)
    there = pickle.loads(blob)
    assert isinstance(there.vectors.user, np.memmap) and isinstance(there.rating_vectors[3], np.memmap)
    eager = ModelBundle.load(tmp_path).all_lists_plan()
    users = np.arange(nu)
    a, c = lists_for_users(eager, users, 10), lists_for_users(there, users, 10)
    pd.testing.assert_frame_equal(a, c)
    assert a["user_id"].nunique() == nu and (a.groupby("user_id").size() == 10).all()
    assert list(there.user_ids[np.array([1400, 699, 700, 2499])]) == ["u1400", "u699", "u700", "u2499"]
    # an array computed in memory (not a range of the file) is pickled by value
    b2 = pickle.loads(pickle.dumps(eager._replace(rating_vectors=tuple(np.array(v) for v in eager.rating_vectors))))
    assert not isinstance(b2.rating_vectors[3], np.memmap)


def test_a_small_ranking_is_numpys_and_the_same_as_the_kernels(monkeypatch):
    """Up to NUMPY_RANKING scores in all, numpy ranks every block (even one over SMALL_BLOCK):
    the compiled kernel's lists, ties and masked movies included; neither imports numba."""
    import subprocess
    import sys

    import movierec.ranking as ranking

    rng = np.random.default_rng(3)
    nu, ni, k = 400, 900, 3  # 360k scores: over SMALL_BLOCK
    assert nu * ni > ranking.SMALL_BLOCK and nu * ni <= ranking.NUMPY_RANKING
    vec = (np.float32(3.0), np.zeros(nu, np.float32), rng.integers(0, 3, ni).astype(np.float32),
           rng.integers(-1, 2, (nu, k)).astype(np.float32), rng.integers(-1, 2, (ni, k)).astype(np.float32))
    seen = sp.random(nu, ni, density=0.2, format="csr", random_state=1)
    monkeypatch.setattr(ranking, "_numpy_ranks", lambda scores: True)
    numpy_lists = top_n(vec, np.arange(nu), 10, seen, block=4096)
    monkeypatch.setattr(ranking, "_numpy_ranks", lambda scores: False)
    kernel_lists = top_n(vec, np.arange(nu), 10, seen, block=4096)
    assert np.array_equal(numpy_lists[0], kernel_lists[0]) and np.array_equal(numpy_lists[1], kernel_lists[1])
    # a ranking over NUMPY_RANKING: the compiled kernel, as kept machine code (kept now if it was
    # not yet): the same lists, and numba still not imported
    from movierec.models._kernels import _TOPK

    lean = _TOPK.function() is not None  # Linux: the kept object exists from here on
    big = ("rng = np.random.default_rng(0)\n"
           "vec = (np.float32(3), rng.random(2100, np.float32), rng.integers(0, 4, 2100).astype(np.float32), "
           "rng.integers(0, 2, (2100, 2)).astype(np.float32), rng.integers(0, 2, (2100, 2)).astype(np.float32))\n"
           "items, _ = top_n(vec, np.arange(2100), 10, sp.random(2100, 2100, density=0.05, format='csr', "
           "random_state=0))\n")
    ns = {"np": np, "sp": sp, "top_n": top_n}
    assert 2100 * 2100 > ranking.NUMPY_RANKING
    monkeypatch.setattr(ranking, "_numpy_ranks", lambda scores: True)
    exec(big, ns)
    code = "import sys, numpy as np, scipy.sparse as sp\nfrom movierec.ranking import top_n\n" + big + \
        "print('numba' in sys.modules, int((items * np.arange(10)).sum()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.split() == [str(not lean), str(int((ns["items"] * np.arange(10)).sum()))], \
        r.stderr[-2000:]
