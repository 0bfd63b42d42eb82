from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from movierec.evaluation.evaluate import bias_baseline
from movierec.models.mf import MatrixFactorization, TrainData


def planted(n_users=300, n_items=120, per_user=40, rank=3, seed=0):
    """Ratings from a rank-3 taste model plus biases and noise; returns (train, test)."""
    rng = np.random.default_rng(seed)
    P = rng.normal(0, 0.8, (n_users, rank))
    Q = rng.normal(0, 0.8, (n_items, rank))
    bu, bi = rng.normal(0, 0.3, n_users), rng.normal(0, 0.3, n_items)
    u = np.repeat(np.arange(n_users), per_user)
    i = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    r = np.clip(3.4 + bu[u] + bi[i] + (P[u] * Q[i]).sum(1) + rng.normal(0, 0.4, len(u)), 1, 5)
    df = pd.DataFrame({"user_idx": u, "movie_idx": i, "rating": r.astype(np.float32)})
    test = rng.random(len(df)) < 0.2
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True), n_users, n_items


def data_of(train, n_users, n_items, **kw):
    return TrainData(train.user_idx.to_numpy(), train.movie_idx.to_numpy(), train.rating.to_numpy(), n_users, n_items, **kw)


def rmse_of(model, test):
    p, _ = model.predict(test.user_idx.to_numpy(), test.movie_idx.to_numpy())
    return float(np.sqrt(np.mean((p - test.rating.to_numpy()) ** 2)))


@pytest.fixture(scope="module")
def planted_data():
    return planted()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_both_trainers_beat_bias_only(planted_data, optimizer):
    train, test, nu, ni = planted_data
    mu, bu, bi = bias_baseline(train, nu, ni)
    bias_rmse = float(np.sqrt(np.mean((np.clip(mu + bu[test.user_idx] + bi[test.movie_idx], 1, 5) - test.rating) ** 2)))
    lr = 0.02
    # small data: small batches, so that Adam takes enough steps per epoch
    m = MatrixFactorization(factors=8, epochs=40, optimizer=optimizer, learning_rate=lr, reg=0.05,
                            use_features=False, batch_size=512, seed=0).fit(data_of(train, nu, ni))
    r = rmse_of(m, test)
    assert r < bias_rmse - 0.05, (r, bias_rmse)
    assert len(m.history_.train_rmse) >= 3 and m.fit_seconds_ > 0


def test_deterministic_under_seed(planted_data):
    train, _, nu, ni = planted_data
    a = MatrixFactorization(factors=4, epochs=5, seed=3, use_features=False).fit(data_of(train, nu, ni))
    b = MatrixFactorization(factors=4, epochs=5, seed=3, use_features=False).fit(data_of(train, nu, ni))
    c = MatrixFactorization(factors=4, epochs=5, seed=4, use_features=False).fit(data_of(train, nu, ni))
    assert np.array_equal(a.user_factors_, b.user_factors_) and np.array_equal(a.item_bias_, b.item_bias_)
    assert not np.array_equal(a.user_factors_, c.user_factors_)


def test_starting_factors_are_one_draw_of_the_seed_taken_a_block_at_a_time():
    """The factors drawn a block of rows at a time (no float64 table) are the numbers of one
    draw of the whole table; a fit from parts has its Ray workers draw them (the driver none)."""
    from movierec.config import ModelConfig

    m = MatrixFactorization.from_config(ModelConfig(factors=5, init_std=0.1, seed=3))
    n_users = (1 << 16) + 77  # more than a block
    m._draw_factors(n_users, 40, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    assert np.array_equal(m.user_factors_, rng.normal(0, 0.1, (n_users, 5)).astype(np.float32))
    assert np.array_equal(m.item_factors_, rng.normal(0, 0.1, (40, 5)).astype(np.float32))
    assert m.user_factors_.dtype == np.float32
    lazy = MatrixFactorization.from_config(ModelConfig(factors=5))
    lazy._init_state(data_of(pd.DataFrame({"user_idx": [0, 1], "movie_idx": [1, 0], "rating": [4.0, 2.0]}), 2, 2),
                     np.random.default_rng(3), draw=False)
    assert "user_factors_" not in lazy._state_views() and lazy.user_bias_.shape == (2,)


def test_user_by_user_layout_groups_and_shuffles_within_users():
    """The SGD layout: every row once, users in order, each user's rows in a seeded random order."""
    from movierec.models.mf import _user_by_user

    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 5000).astype(np.int32)
    rows = np.flatnonzero(rng.random(5000) < 0.8)
    a = _user_by_user(rows, users, np.random.default_rng(7))
    assert np.array_equal(np.sort(a), rows) and (np.diff(users[a]) >= 0).all()
    assert np.array_equal(a, _user_by_user(rows, users, np.random.default_rng(7)))
    b = _user_by_user(rows, users, np.random.default_rng(8))
    assert not np.array_equal(a, b) and np.array_equal(users[a], users[b])  # same grouping, other order


def test_block_layout_groups_by_user_and_movie_block():
    """The layout of the block-by-block pass: every training row once, grouped by (user, movie
    block); blocks and viewer parts are ranges of indices about equal in ratings; each group's
    rows in a seeded random order."""
    from movierec.models.mf import _block_layout

    rng = np.random.default_rng(0)
    n_users, n_items, n = 60, 200, 20_000
    users = rng.integers(0, n_users, n).astype(np.int32)
    # a few movies hold most ratings, the most rated one a quarter of them
    items = rng.permutation(n_items)[np.minimum(rng.zipf(1.3, n) - 1, n_items - 1)].astype(np.int32)
    data = TrainData(users, items, rng.random(n).astype(np.float32) * 4 + 1, n_users, n_items)
    rows = np.flatnonzero(rng.random(n) < 0.8)
    b_ptr, got_items, got_vals, parts, n_blocks = _block_layout(rows, data, 2, 8, np.random.default_rng(7))
    assert n_blocks == 8
    assert len(b_ptr) == n_users * 8 + 1 and b_ptr[-1] == len(rows) == len(got_items)
    block_of = np.full(n_items, -1)
    for g in range(n_users * 8):
        u, b = divmod(g, 8)
        seg = slice(b_ptr[g], b_ptr[g + 1])
        assert ((block_of[got_items[seg]] < 0) | (block_of[got_items[seg]] == b)).all()  # a movie: one block
        block_of[got_items[seg]] = b
    rated = block_of >= 0
    assert (np.diff(block_of[rated]) >= 0).all()  # blocks are ranges of movies
    # the same rows: each (user, movie, rating) of the training rows, once
    want = sorted(zip(users[rows], items[rows], data.ratings[rows]))
    owner = np.repeat(np.arange(n_users * 8) // 8, np.diff(b_ptr))
    assert sorted(zip(owner, got_items, got_vals)) == want
    # balanced by ratings: no block over its share and the largest movie's ratings
    per_block = np.bincount(block_of[items[rows]], minlength=8)
    assert per_block.max() <= len(rows) / 8 + np.bincount(items[rows]).max()
    # two parts of viewers, ranges of about half the ratings each
    assert parts[0] == 0 and parts[-1] == n_users and len(parts) == 3
    per_part = np.bincount(np.searchsorted(parts, users[rows], side="right") - 1, minlength=2)
    assert abs(per_part[0] - per_part[1]) <= 2 * np.bincount(users[rows]).max()
    again = _block_layout(rows, data, 2, 8, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(again, (b_ptr, got_items, got_vals, parts, n_blocks)))
    other = _block_layout(rows, data, 2, 8, np.random.default_rng(8))
    assert np.array_equal(other[0], b_ptr) and not np.array_equal(other[1], got_items)  # same groups, new order


def test_plain_mf_on_two_threads_is_deterministic_and_as_good(planted_data):
    """Several cores: the block-by-block pass writes no row from two threads at once, so two
    fits under one seed are bit-for-bit the same; and it learns as well as one thread."""
    train, test, nu, ni = planted_data

    def fit(threads, seed=3):
        return MatrixFactorization(factors=8, epochs=30, seed=seed, learning_rate=0.02, reg=0.05,
                                   use_features=False, threads=threads).fit(data_of(train, nu, ni))

    a, b, one = fit(2), fit(2), fit(1)
    assert np.array_equal(a.user_factors_, b.user_factors_) and np.array_equal(a.item_factors_, b.item_factors_)
    assert np.array_equal(a.item_bias_, b.item_bias_)
    assert not np.array_equal(a.item_factors_, fit(2, seed=4).item_factors_)
    assert abs(rmse_of(a, test) - rmse_of(one, test)) < 0.02, (rmse_of(a, test), rmse_of(one, test))
    # the multi-threaded pass took every rating: its training error is the one-thread fit's
    assert abs(a.history_.train_rmse[-1] - one.history_.train_rmse[-1]) < 0.02


def test_block_predictions_equal_the_whole_product(planted_data):
    """Predictions in cache-sized blocks equal one product over all the pairs."""
    import movierec.models.mf as mf

    train, _, nu, ni = planted_data
    data = data_of(train, nu, ni)
    model = MatrixFactorization(factors=8, epochs=3, use_features=False, early_stopping=False).fit(data)
    u = np.tile(data.users, 3)
    i = np.tile(data.items, 3)
    old, mf.PREDICT_BLOCK = mf.PREDICT_BLOCK, 1000
    try:
        got = model._predict_idx(u, i)
    finally:
        mf.PREDICT_BLOCK = old
    U, Q = model.user_vectors(), model.item_vectors()
    want = model.global_mean_ + model.user_bias_[u] + model.item_bias_[i] + (U[u] * Q[i]).sum(1)
    assert len(u) > 3 * 1000 and np.allclose(got, want, atol=1e-5)


def test_save_load_round_trip(planted_data, tmp_path):
    train, test, nu, ni = planted_data
    X = np.random.default_rng(0).normal(size=(nu, 3)).astype(np.float32)
    m = MatrixFactorization(factors=4, epochs=3, use_features=True).fit(data_of(train, nu, ni, user_features=X))
    m.save(tmp_path / "m.npz")
    m2 = MatrixFactorization.load(tmp_path / "m.npz")
    assert m2.get_params() == m.get_params()
    for k in MatrixFactorization.ARRAYS:
        assert np.array_equal(getattr(m, k), getattr(m2, k)), k
    p1, _ = m.predict(test.user_idx, test.movie_idx)
    p2, _ = m2.predict(test.user_idx, test.movie_idx)
    assert np.array_equal(p1, p2)
    assert m2.history_.train_rmse == m.history_.train_rmse


def _mapped_rss(a: np.ndarray) -> int | None:
    """kB of the mapping holding ``a`` that this process has paged in (None: no smaps)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    addr = a.__array_interface__["data"][0]
    inside = False
    for line in smaps.read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= addr < hi
        elif inside and head == "Rss:":
            return int(line.split()[1])
    return None


def test_a_model_mapped_from_a_file_saves_the_same_file_without_reading_its_pages(planted_data, tmp_path):
    """A fit from parts on Ray leaves the model's arrays mapped from the workers' file: save
    copies them from that file (movierec._npz.savez), the bytes np.savez writes, and the
    process maps none of their pages in (the mapping's Rss in /proc/self/smaps)."""
    from movierec import _npz

    train, _, nu, ni = planted_data
    m = MatrixFactorization(factors=8, epochs=2).fit(data_of(train, nu, ni))
    m.save(tmp_path / "a.npz")
    with open(tmp_path / "a.npz", "rb") as fh:  # np.savez's own bytes, from the arrays in memory
        ref = tmp_path / "ref.npz"
        with np.load(fh, allow_pickle=False) as z:
            np.savez(ref, **{k: z[k] for k in z.files})
    assert (tmp_path / "a.npz").read_bytes() == ref.read_bytes()
    mapped = MatrixFactorization.load(tmp_path / "a.npz")
    assert _npz.file_view(mapped.user_factors_) is not None
    before = _mapped_rss(mapped.user_factors_)
    old_chunk, _npz.CHUNK = _npz.CHUNK, 1000  # several chunks per array
    try:
        mapped.save(tmp_path / "b.npz")
    finally:
        _npz.CHUNK = old_chunk
    assert (tmp_path / "b.npz").read_bytes() == ref.read_bytes()
    if before is not None:  # (Linux) saving read no page through the map
        assert _mapped_rss(mapped.user_factors_) == before
    loaded = MatrixFactorization.load(tmp_path / "b.npz")
    for k in MatrixFactorization.ARRAYS:
        assert np.array_equal(getattr(m, k), getattr(loaded, k)), k


def test_savez_writes_np_savez_bytes_in_chunks_for_every_layout(monkeypatch):
    """movierec._npz.savez writes np.savez's bytes for arrays of any layout: C-contiguous ones
    from their own memory and one-dimensional ones a chunk at a time (a model's empty history
    index is zeros by broadcasting, no array of them), others through numpy."""
    import io

    from movierec import _npz

    arrays = dict(c=np.arange(10, dtype=np.float32), zeros=np.broadcast_to(np.int32(0), (7,)),
                  grid=np.arange(12.0).reshape(3, 4), fortran=np.arange(12.0).reshape(3, 4).T,
                  strided=np.arange(20)[::3], empty=np.zeros((0, 5), np.float32), text=np.array("meta"))
    monkeypatch.setattr(_npz, "CHUNK", 8)  # several chunks per array
    ours, ref = io.BytesIO(), io.BytesIO()
    _npz.savez(ours, **arrays)
    np.savez(ref, **arrays)
    assert ours.getvalue() == ref.getvalue()


def test_unknown_ids_fall_back_and_are_flagged(planted_data):
    train, _, nu, ni = planted_data
    m = MatrixFactorization(factors=4, epochs=2, use_features=False).fit(data_of(train, nu, ni))
    pred, impossible = m.predict(np.array([0, -1, 0, -1]), np.array([0, 0, -1, -1]))
    assert impossible.tolist() == [False, True, True, True]
    assert pred[1] == pytest.approx(np.clip(m.global_mean_ + m.item_bias_[0], 1, 5))
    assert pred[3] == pytest.approx(m.global_mean_)


def test_features_help_when_ratings_are_scarce():
    """Item genre features carry the taste when each user has few ratings."""
    rng = np.random.default_rng(1)
    n_users, n_items = 400, 200
    genre = rng.integers(0, 4, n_items)
    taste = rng.integers(0, 4, n_users)
    Y = np.eye(4, dtype=np.float32)[genre]
    X = np.eye(4, dtype=np.float32)[taste]
    u = np.repeat(np.arange(n_users), 8)
    i = rng.integers(0, n_items, len(u))
    r = np.where(genre[i] == taste[u], 4.5, 2.0) + rng.normal(0, 0.3, len(u))
    tr = rng.random(len(u)) < 0.8
    d = TrainData(u[tr], i[tr], r[tr], n_users, n_items, user_features=X, item_features=Y)
    with_f = MatrixFactorization(factors=8, epochs=40, use_features=True, seed=0).fit(d)
    without = MatrixFactorization(factors=8, epochs=40, use_features=False, seed=0).fit(d)
    te = pd.DataFrame({"user_idx": u[~tr], "movie_idx": i[~tr], "rating": r[~tr]})
    assert rmse_of(with_f, te) < rmse_of(without, te) - 0.1
    # on two threads (block by block, a copy of the projections per thread, averaged each
    # round): the same gain, and the same factors from the same seed
    two = [MatrixFactorization(factors=8, epochs=40, use_features=True, seed=0, threads=2).fit(d) for _ in (0, 1)]
    assert np.array_equal(two[0].item_weights_, two[1].item_weights_)
    assert np.array_equal(two[0].user_factors_, two[1].user_factors_)
    assert rmse_of(two[0], te) < rmse_of(without, te) - 0.1
    assert abs(rmse_of(two[0], te) - rmse_of(with_f, te)) < 0.05, (rmse_of(two[0], te), rmse_of(with_f, te))


def test_social_regularisation_fills_users_without_ratings():
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 40
    u = np.repeat(np.arange(1, n_users), 10)
    i = rng.integers(0, n_items, len(u))
    r = rng.integers(1, 6, len(u)).astype(np.float32)
    nb = sp.csr_matrix((np.full(2, 0.5, np.float32), ([0, 0], [1, 2])), shape=(n_users, n_users))
    for threads in (1, 2):  # one core, and block by block on two
        m = MatrixFactorization(factors=4, epochs=5, social_reg=0.1, use_features=False, early_stopping=False,
                                threads=threads).fit(TrainData(u, i, r, n_users, n_items, neighbours=nb))
        expected = 0.5 * (m.user_factors_[1] + m.user_factors_[2])
        # user 0 has no ratings: after the last epoch its factors are its neighbours' mean
        # (up to the neighbours' own final update order)
        assert np.allclose(m.user_factors_[0], expected, atol=0.05), threads
        assert np.isfinite(m.user_factors_).all() and m.history_.train_rmse[-1] < m.history_.train_rmse[0]


def test_ensemble_is_the_average_of_its_members(planted_data, tmp_path):
    train, test, nu, ni = planted_data
    params = dict(factors=4, epochs=5, use_features=False, implicit=True, early_stopping=False)
    d = data_of(train, nu, ni)
    ens = MatrixFactorization(ensemble=3, seed=10, **params).fit(d)
    members = [MatrixFactorization(seed=10 + s, **params).fit(d) for s in range(3)]
    u, i = test.user_idx.to_numpy(), test.movie_idx.to_numpy()
    expected = np.mean([m.predict(u, i, clip=False)[0] for m in members], 0)
    assert np.allclose(ens.predict(u, i, clip=False)[0], expected, atol=1e-4)
    assert ens.user_vectors().shape == (nu, 12)
    ens.save(tmp_path / "e.npz")
    assert np.array_equal(MatrixFactorization.load(tmp_path / "e.npz").predict(u, i)[0], ens.predict(u, i)[0])


def test_implicit_term_helps_on_planted_data(planted_data):
    train, test, nu, ni = planted_data
    base = dict(factors=8, epochs=40, learning_rate=0.01, use_features=False, seed=0)
    plain = MatrixFactorization(**base).fit(data_of(train, nu, ni))
    svdpp = MatrixFactorization(implicit=True, **base).fit(data_of(train, nu, ni))
    assert svdpp.item_implicit_.shape == (ni, 8) and np.abs(svdpp.item_implicit_).sum() > 0
    assert rmse_of(svdpp, test) < rmse_of(plain, test) + 0.01


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weighted_pseudo_ratings_help_users_with_few_ratings(planted_data, optimizer):
    """Users left with 2 real ratings, plus noisy pseudo-ratings (as from review sentiment)
    on other movies they watched: their test RMSE drops; real ratings keep full weight."""
    train, test, nu, ni = planted_data
    rng = np.random.default_rng(1)
    cold = np.arange(40)
    keep = ~train.user_idx.isin(cold) | (train.groupby("user_idx").cumcount() < 2)
    sparse_train = train[keep]
    hidden = train[~keep]
    pseudo = hidden.assign(rating=np.clip(hidden.rating + rng.normal(0, 0.5, len(hidden)), 1, 5).astype(np.float32))
    kw = dict(factors=8, epochs=40, optimizer=optimizer, learning_rate=0.02 if optimizer == "sgd" else 0.01,
              reg=0.05, batch_size=256, seed=0)
    plain = MatrixFactorization(**kw).fit(data_of(sparse_train, nu, ni))
    both = pd.concat([sparse_train, pseudo], ignore_index=True)
    w = np.r_[np.ones(len(sparse_train)), np.full(len(pseudo), 0.3)].astype(np.float32)
    helped = MatrixFactorization(**kw).fit(data_of(both, nu, ni, weights=w))
    t_cold = test[test.user_idx.isin(cold)]
    assert rmse_of(helped, t_cold) < rmse_of(plain, t_cold) - 0.02
    # the mean is that of real ratings (pseudo-ratings never shift it)
    assert abs(helped.global_mean_ - sparse_train.rating.mean()) < 0.03


def test_weights_must_match_ratings(planted_data):
    from movierec.errors import ModelError

    train, _, nu, ni = planted_data
    with pytest.raises(ModelError, match="one weight per rating"):
        data_of(train, nu, ni, weights=np.ones(3, np.float32))


def test_divergence_is_an_error_not_a_nan_model(planted_data):
    from movierec.errors import ModelError

    train, _, nu, ni = planted_data
    with pytest.raises(ModelError, match="diverged"):
        MatrixFactorization(factors=8, epochs=5, learning_rate=50.0, lr_decay=1.0,
                            early_stopping=False).fit(data_of(train, nu, ni))


def test_ease_weights_are_the_closed_form():
    from movierec.errors import ModelError
    from movierec.models._ease import ease_weights

    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((200, 60)) < 0.15).astype(np.float32))
    B = ease_weights(X, 20.0, 1000)
    G = (X.T @ X).toarray().astype(np.float64) + 20.0 * np.eye(60)
    P = np.linalg.inv(G)
    ref = -P / np.diag(P)[None, :]
    np.fill_diagonal(ref, 0.0)
    assert np.allclose(B, ref, atol=1e-4) and np.all(np.diag(B) == 0)
    with pytest.raises(ModelError, match="ease_max_items"):
        ease_weights(X, 20.0, 50)


def test_ease_ranking_lists_what_users_watch_next(tmp_path):
    """Co-watching planted in blocks: a user's unseen movies of their block rank first with
    EASE, far above popularity; the model saves, loads and ranks the same."""
    from movierec.evaluation.evaluate import Recommender, model_recommender, train_stats, _topk

    rng = np.random.default_rng(1)
    n_users, n_items, blocks = 400, 100, 4
    block_of_user, block_of_item = np.arange(n_users) % blocks, np.arange(n_items) % blocks
    rows = [(u, i) for u in range(n_users) for i in rng.choice(np.flatnonzero(block_of_item == block_of_user[u]), 12,
                                                               replace=False)]
    df = pd.DataFrame(rows, columns=["user_idx", "movie_idx"]).assign(rating=np.float32(4.0))
    df.loc[rng.random(len(df)) < 0.5, "rating"] = 3.0
    m = MatrixFactorization(factors=4, epochs=5, ranking="ease", ease_lambda=10.0, use_features=False,
                            early_stopping=False).fit(data_of(df, n_users, n_items))
    st = train_stats(df, n_users, n_items)
    users = np.arange(n_users)
    top = _topk(model_recommender(m), users, 5, st["seen"])
    assert (block_of_item[top] == block_of_user[:, None]).mean() > 0.95
    pop = _topk(Recommender(None, rank_scores=np.bincount(df.movie_idx, minlength=n_items).astype(np.float32)), users, 5,
                st["seen"])
    assert (block_of_item[pop] == block_of_user[:, None]).mean() < 0.5
    m.save(tmp_path / "m.npz")
    again = MatrixFactorization.load(tmp_path / "m.npz")
    assert np.array_equal(_topk(model_recommender(again), users, 5, st["seen"]), top)
