"""Issue 5's planted test: two taste communities linked by friendships."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from movierec.config import SocialConfig
from movierec.models.mf import MatrixFactorization, TrainData
from movierec.stages.social import shuffled_neighbours, social

N_PER, N_MOVIES, N_NEUTRAL = 60, 30, 10  # users per community, movies per community, neutral movies


def planted(seed=0):
    """Community A (users 0..59) loves movies 0..29 and dislikes 30..59; B the reverse.
    Neutral movies 60..69 get 3 stars from everyone. Friendships stay (almost) inside a
    community. Targets: 10 users of each community who rated two neutral movies only."""
    rng = np.random.default_rng(seed)
    n_users = 2 * N_PER
    targets = np.r_[np.arange(10), N_PER + np.arange(10)]
    rows = []
    for u in range(n_users):
        comm = u // N_PER
        if u in targets:
            for m in rng.choice(N_NEUTRAL, 2, replace=False):
                rows.append((u, 2 * N_MOVIES + m, 3.0))
            continue
        for m in rng.choice(2 * N_MOVIES, 16, replace=False):
            liked = (m < N_MOVIES) == (comm == 0)
            rows.append((u, m, float(np.clip((4.6 if liked else 1.8) + rng.normal(0, 0.4), 1, 5))))
        for m in rng.choice(N_NEUTRAL, 3, replace=False):
            rows.append((u, 2 * N_MOVIES + m, 3.0))
    ratings = pd.DataFrame(rows, columns=["user_idx", "movie_idx", "rating"])
    ties = []
    for u in range(n_users):
        base = (u // N_PER) * N_PER
        for v in rng.choice(np.arange(base, base + N_PER), 6, replace=False):
            if v != u:
                ties.append((u, int(v), 1.0, ""))
    ties.append((0, N_PER, 1.0, ""))  # one bridge
    return ratings, pd.DataFrame(ties, columns=["user_idx", "friend_idx", "weight", "text"]), targets, n_users


def own_community_share(model, targets, k=10):
    """Mean share of each target's top-k (over the community movies) from its own community."""
    shares = []
    for u in targets:
        movies = np.arange(2 * N_MOVIES)
        pred, _ = model.predict(np.full(len(movies), u), movies, clip=False)
        top = movies[np.argsort(-pred)[:k]]
        own = top < N_MOVIES if u < N_PER else top >= N_MOVIES
        shares.append(own.mean())
    return float(np.mean(shares))


def fit(ratings, nb, n_users, social_reg):
    S = sp.csr_matrix((nb["strength"].to_numpy(np.float32), (nb["user_idx"], nb["neighbour_idx"])),
                      shape=(n_users, n_users))
    data = TrainData(ratings.user_idx.to_numpy(), ratings.movie_idx.to_numpy(), ratings.rating.to_numpy(),
                     n_users, 2 * N_MOVIES + N_NEUTRAL, neighbours=S)
    return MatrixFactorization(factors=4, epochs=60, learning_rate=0.02, reg=0.02, social_reg=social_reg,
                               use_features=False, early_stopping=False, ranking="rating", seed=0).fit(data)


@pytest.fixture(scope="module")
def world():
    ratings, ties, targets, n_users = planted()
    res = social(ties, None, n_users, SocialConfig(directed=False))
    return ratings, res, targets, n_users


def test_social_features_separate_the_communities(world):
    _, res, _, _ = world
    f = res.features.set_index("user_idx")
    a, b = f.loc[: N_PER - 1, "community"], f.loc[N_PER:, "community"]
    assert a.mode()[0] != b.mode()[0]
    assert (a == a.mode()[0]).mean() > 0.9 and (b == b.mode()[0]).mean() > 0.9
    assert (f["trust_2hop"] > 0).all() and (f["reach_2hop"] >= f["out_degree"]).all()


def test_social_regularisation_recommends_the_communitys_movies(world):
    ratings, res, targets, n_users = world
    with_social = own_community_share(fit(ratings, res.neighbours, n_users, 0.5), targets)
    without = own_community_share(fit(ratings, res.neighbours, n_users, 0.0), targets)
    shuffled = own_community_share(fit(ratings, shuffled_neighbours(res.neighbours, 0), n_users, 0.5), targets)
    assert with_social >= 0.9
    # the effect comes from who the friends are: without the term, or with random friends, it is gone
    assert without < 0.75 and shuffled < 0.75


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_trusted_users_as_implicit_feedback(world, optimizer):
    """TrustSVD-style: the implicit set holds the rated movies and then the trusted users
    (extra columns); both trainers fit it, and targets with two neutral ratings lean to
    their community through the users they trust."""
    ratings, res, targets, n_users = world
    n_items = 2 * N_MOVIES + N_NEUTRAL
    nb = res.neighbours
    rated = sp.csr_matrix((np.ones(len(ratings), np.float32), (ratings.user_idx, ratings.movie_idx)),
                          shape=(n_users, n_items))
    trust = sp.csr_matrix((np.ones(len(nb), np.float32), (nb.user_idx, nb.neighbour_idx)), shape=(n_users, n_users))
    implicit = sp.hstack([rated, trust], format="csr")
    data = TrainData(ratings.user_idx.to_numpy(), ratings.movie_idx.to_numpy(), ratings.rating.to_numpy(),
                     n_users, n_items, implicit_items=implicit)
    m = MatrixFactorization(factors=4, epochs=60, optimizer=optimizer, learning_rate=0.02,
                            reg=0.02, implicit=True, use_features=False, early_stopping=False, ranking="rating",
                            batch_size=256, seed=0).fit(data)
    assert m.item_implicit_.shape == (n_items + n_users, 4)
    assert own_community_share(m, targets) >= 0.8
    if optimizer == "sgd":  # the control: the rated movies alone say nothing about the targets
        alone = TrainData(ratings.user_idx.to_numpy(), ratings.movie_idx.to_numpy(), ratings.rating.to_numpy(),
                          n_users, n_items, implicit_items=rated)
        m0 = MatrixFactorization(**dict(m.get_params(), implicit=True)).fit(alone)
        assert own_community_share(m0, targets) < 0.75


def test_personalised_pagerank_is_networkx_pagerank_from_the_user():
    import networkx as nx

    from movierec.stages.social import personalized_pagerank, row_normalized, top_per_row

    g = nx.gnp_random_graph(40, 0.12, seed=1, directed=True)
    g = nx.convert_node_labels_to_integers(g.subgraph(max(nx.strongly_connected_components(g), key=len)))
    rng = np.random.default_rng(0)
    for u, v in g.edges:
        g[u][v]["w"] = rng.uniform(0.2, 1.0)
    n = g.number_of_nodes()
    S = row_normalized(sp.csr_matrix(nx.to_scipy_sparse_array(g, weight="w", format="csr")))
    N = personalized_pagerank(S, 0.5, hops=60, top=n, eps=0.0).toarray()  # no truncation to speak of
    for u in range(0, n, 5):
        pr = nx.pagerank(g, alpha=0.5, personalization={u: 1.0}, weight="w", tol=1e-12, max_iter=500)
        v = np.array([pr[i] for i in range(n)])
        v[u] = 0.0
        assert np.abs(v / v.sum() - N[u]).max() < 1e-9
    # truncated: at most `top` entries per user, the largest ones, rows summing to 1
    T = personalized_pagerank(S, 0.5, hops=3, top=5)
    assert np.diff(T.indptr).max() <= 5 and np.allclose(np.asarray(T.sum(1)).ravel(), 1.0)
    m = top_per_row(sp.csr_matrix(np.array([[0.1, 0.5, 0.2, 0.4], [0.0, 0.3, 0.0, 0.0]])), 2).toarray()
    assert np.array_equal(m, [[0.0, 0.5, 0.0, 0.4], [0.0, 0.3, 0.0, 0.0]])


def test_ppr_neighbourhood_reaches_further_and_stays_in_the_community(world):
    ratings, res, targets, n_users = world
    ties = pd.DataFrame({"user_idx": res.neighbours.user_idx, "friend_idx": res.neighbours.neighbour_idx,
                         "weight": 1.0, "text": ""})
    ppr = social(ties, None, n_users, SocialConfig(directed=False, neighbourhood="ppr", ppr_top=30)).neighbours
    size = lambda nb: nb.groupby("user_idx").size().reindex(range(n_users), fill_value=0)  # noqa: E731
    assert (size(ppr) > size(res.neighbours)).mean() > 0.9 and size(ppr).max() <= 30
    same = (ppr.user_idx // N_PER) == (ppr.neighbour_idx // N_PER)
    assert ppr.strength[same].sum() / ppr.strength.sum() > 0.98  # the single bridge leaks little
    assert own_community_share(fit(ratings, ppr, n_users, 0.5), targets) >= 0.9


def test_clustering_is_networkx_clustering_also_in_blocks():
    import networkx as nx

    from movierec.stages.social import triangles

    g = nx.gnp_random_graph(200, 0.06, seed=3, directed=True)
    ties = pd.DataFrame(list(g.edges), columns=["user_idx", "friend_idx"]).assign(weight=1.0, text="")
    f = social(ties, None, 200, SocialConfig(directed=True)).features
    ref = nx.clustering(g.to_undirected())
    assert np.allclose(f["clustering"], [ref[i] for i in range(200)])
    U = sp.csr_matrix(nx.to_scipy_sparse_array(g.to_undirected(), format="csr").astype(float))
    tri = nx.triangles(g.to_undirected())
    # blocks of a few rows (the memory bound at Epinions size) count the same triangles
    assert np.array_equal(triangles(U, max_entries=50), [tri[i] for i in range(200)])


def test_an_adam_step_sends_only_the_rows_its_batch_touches(world):
    """The social and implicit terms of an Adam step read only the batch users' rows (their
    trusted neighbours', their implicit sets'): the same numbers as the whole sparse product,
    and gradients that name only those rows (tf.IndexedSlices, what Ray workers all-gather)
    instead of whole tables. With the trust term, Adam finds the targets' community as SGD does."""
    tf = pytest.importorskip("tensorflow")
    from movierec.models._adam import _csr_rows, _make_step

    ratings, res, targets, n_users = world
    nb = res.neighbours
    S = sp.csr_matrix((nb["strength"].to_numpy(np.float32), (nb["user_idx"], nb["neighbour_idx"])),
                      shape=(n_users, n_users))
    T = np.random.default_rng(0).normal(size=(n_users, 3)).astype(np.float32)
    u = np.array([5, 0, 77, 5, 119])
    for fixed in (False, True):  # rows as they are; padded to the longest (under a distribution strategy)
        got = _csr_rows(tf, S, fixed)(tf.constant(u), tf.constant(T)).numpy()
        np.testing.assert_allclose(got, (S @ T)[u], rtol=1e-5, atol=1e-6)

    n_items = 2 * N_MOVIES + N_NEUTRAL
    data = TrainData(ratings.user_idx.to_numpy(), ratings.movie_idx.to_numpy(), ratings.rating.to_numpy(),
                     n_users, n_items, neighbours=S)
    m = MatrixFactorization(factors=4, optimizer="adam", social_reg=0.5, implicit=True, use_features=False,
                            ranking="rating", seed=0)
    m._init_state(data, np.random.default_rng(0))
    step, _, _, variables = _make_step(tf, m, data, len(ratings))
    batch = np.array([3, 700])  # two ratings of two users
    _, grads = step.gradients(*(tf.constant(a[batch]) for a in (data.users, data.items, data.ratings)),
                              tf.ones(len(batch)))
    by_name = {v.name.split(":")[0]: g for v, g in zip(variables, grads)}
    for name in ("user_factors", "item_factors", "user_bias", "item_bias"):
        assert isinstance(by_name[name], tf.IndexedSlices), name
    touched = np.unique(by_name["user_factors"].indices.numpy())
    users = data.users[batch]
    assert set(touched) == set(users) | set(S[users].indices)  # the batch users and whom they trust
    assert len(touched) < n_users / 2
    # the implicit table's L2 term shrinks every row each step: that gradient stays whole
    assert not isinstance(by_name["item_implicit"], tf.IndexedSlices)

    social_adam = own_community_share(MatrixFactorization(
        factors=4, epochs=60, optimizer="adam", learning_rate=0.02, reg=0.02, social_reg=0.5, use_features=False,
        early_stopping=False, ranking="rating", batch_size=256, seed=0).fit(
        TrainData(data.users, data.items, data.ratings, n_users, n_items, neighbours=S)), targets)
    assert social_adam >= 0.9
