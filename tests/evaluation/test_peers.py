"""The top-N peers as evaluate baselines (movierec.evaluation.peers): their closed forms, that
they find planted structure, the popularity list for users without training ratings, the
missing-library error, and evaluate's output with them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from movierec.config import load_config
from movierec.errors import ConfigError
from movierec.evaluation import evaluate as E
from movierec.evaluation import peers as P
from tests.conftest import call, make_data, run_cli, write_config

ALL = ["ease", "rp3beta", "als", "bpr", "item_knn"]


def _planted(n_users: int = 240, n_items: int = 120, groups: int = 6, per_user: int = 14, seed: int = 0):
    """Users and movies in ``groups`` blocks: a user rates ``per_user`` movies of their own
    block and two at random; a quarter of the ratings is the test part. Every movie is about
    as popular as any other, so popularity (and random) know nothing a peer can't learn."""
    rng = np.random.default_rng(seed)
    size = n_items // groups
    rows = []
    for u in range(n_users):
        g = u % groups
        own = rng.choice(np.arange(g * size, (g + 1) * size), per_user, replace=False)
        rows += [(u, int(m), 5.0) for m in np.unique(np.concatenate([own, rng.choice(n_items, 2, replace=False)]))]
    df = pd.DataFrame(rows, columns=["user_idx", "movie_idx", "rating"])
    test = df.sample(frac=0.25, random_state=seed)
    return df.drop(test.index), test, n_users, n_items


def test_every_peer_finds_planted_structure():
    train, test, nu, ni = _planted()
    cfg = load_config(None, ["evaluate.bootstrap_rounds=0"])
    recs = E.baseline_recommenders(train, nu, ni, ["random", "popularity", *ALL], cfg)
    ndcg = {n: E.measure_users(sc, train, test, nu, ni, cfg)[0]["ndcg@10"] for n, sc in recs.items()}
    floor = max(ndcg["random"], ndcg["popularity"])
    assert floor < 0.15, ndcg
    for name in ALL:
        assert ndcg[name] > floor + 0.2, (name, ndcg)
        m, us = E.measure_users(recs[name], train, test, nu, ni, cfg)
        assert "rmse" not in m and m["n_test"] == len(test)  # a peer predicts no ratings
        assert recs[name].fit_seconds is not None and us.ranked.sum() == m["users_ranked"]


def test_ease_is_the_closed_form():
    X = sp.csr_matrix(np.array([[1, 1, 0, 0, 1], [0, 1, 1, 0, 0], [1, 0, 1, 1, 0], [1, 1, 1, 0, 0],
                                [0, 0, 1, 1, 1], [1, 0, 0, 0, 1]], np.float32))
    lam = 2.0
    got = P.fit_peer("ease", X, load_config(None, [f"evaluate.peer_ease_lambda={lam}"]))["item_item"][1]
    G = X.toarray().T.astype(np.float64) @ X.toarray() + lam * np.eye(5)
    Pinv = np.linalg.inv(G)
    B = np.eye(5) - Pinv / np.diag(Pinv)[None, :]  # Steck 2019, eq. 8
    np.fill_diagonal(B, 0.0)
    np.testing.assert_allclose(got, B, atol=1e-5)
    # unset: the model's own lambda
    assert P.ease_lambda(load_config(None, ["model.ease_lambda=123"])) == 123.0


def test_rp3beta_matches_a_hand_computation():
    # users: u0 rated {0, 1}, u1 {0}, u2 {0, 1, 2}; movie popularity 3, 2, 1; user degree 2, 1, 3
    X = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], np.float32))
    W = P.rp3beta_weights(X, alpha=1.0, beta=0.5, neighbours=0).toarray()
    # W[i, j] = 1/pop(i) * sum over users of both (1/degree(u)) / pop(j) ** 0.5
    hand = np.array([[0, 1 / 3 * (1 / 2 + 1 / 3) / 2 ** 0.5, 1 / 3 * (1 / 3) / 1],
                     [1 / 2 * (1 / 2 + 1 / 3) / 3 ** 0.5, 0, 1 / 2 * (1 / 3) / 1],
                     [1 / 1 * (1 / 3) / 3 ** 0.5, 1 / 1 * (1 / 3) / 2 ** 0.5, 0]])
    np.testing.assert_allclose(W, hand, rtol=1e-5)
    top1 = P.rp3beta_weights(X, 1.0, 0.5, neighbours=1).toarray()  # each movie's largest weight only
    assert (top1 > 0).sum(1).tolist() == [1, 1, 1] and top1.argmax(1).tolist() == [1, 0, 1]
    # alpha: transition probabilities to the power
    W2 = P.rp3beta_weights(X, alpha=2.0, beta=0.0, neighbours=0).toarray()
    assert W2[0, 2] == pytest.approx((1 / 3) ** 2 * (1 / 3) ** 2)
    # scores X_u W through the ranker, seen movies never listed
    rank = P.item_item_ranker(X, sp.csr_matrix(W))
    assert rank(np.array([1]), 2, X).tolist() == [[1, 2]]


def test_cold_users_get_the_popularity_list():
    train, test, nu, ni = _planted()
    cold_user = 7
    train = train[train["user_idx"] != cold_user]
    st = E.train_stats(train, nu, ni)
    cold = np.diff(st["seen"].indptr) == 0
    assert cold[cold_user] and cold.sum() == 1
    cfg = load_config(None)
    pop = E.baseline_recommenders(train, nu, ni, ["popularity"], cfg)["popularity"]
    users = np.array([3, cold_user])
    for name in ALL:
        sc = E.baseline_recommenders(train, nu, ni, [name], cfg)[name]
        own = E._topk(sc, users, 10, st["seen"])
        sc.fallback = (cold, st["count"])
        lists = E._topk(sc, users, 10, st["seen"])
        assert lists[1].tolist() == E._topk(pop, users[1:], 10, st["seen"])[0].tolist(), name
        assert lists[0].tolist() == own[0].tolist(), name  # a known user keeps the peer's own list


def test_a_missing_library_is_a_config_error_naming_the_extra(tmp_path, monkeypatch):
    real = P.importlib.util.find_spec
    monkeypatch.setattr(P.importlib.util, "find_spec", lambda n, *a: None if n == "implicit" else real(n, *a))
    with pytest.raises(ConfigError, match=r"pip install 'movierec\[peers\]'") as exc:
        P.check_available(["ease", "als", "item_knn"])
    assert "als, item_knn" in str(exc.value) and "ease" not in str(exc.value).split("need")[0]
    P.check_available(["popularity", "ease", "rp3beta"])  # numpy and scipy only
    data = make_data(tmp_path / "data", n_users=60, n_movies=30, files=("ratings",))
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "work", evaluate={"baselines": ["popularity", "bpr"]})
    assert call("evaluate", "--config", str(cfg)) == 78  # before any stage ran
    assert not (tmp_path / "work" / "artifacts").exists()
    with pytest.raises(ConfigError, match="unknown 'lightfm'"):
        load_config(cfg, ["evaluate.baselines=[lightfm]"])


def test_loading_a_config_with_peers_does_not_import_implicit(tmp_path):
    code = ("import sys; from movierec.config import load_config; "
            "load_config(None, ['evaluate.baselines=[als,bpr,item_knn]']); print('implicit' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """evaluate with every peer on a given split where 20 viewers have no training rating (all
    their ratings are test ratings), through the CLI (JSON and the report); then in process
    with ``evaluate.unseen_users: own``."""
    from movierec.evaluation.evaluate import evaluate
    from movierec.evaluation.report import format_table

    base = tmp_path_factory.mktemp("peers")
    data = make_data(base / "data", n_users=150, n_movies=60, files=("ratings", "users", "movies"))
    ratings = pd.read_csv(data / "ratings.csv")
    cold = ratings["user_id"].isin(sorted(ratings["user_id"].unique())[:20])
    test = cold | (np.random.default_rng(0).random(len(ratings)) < 0.2)
    ratings[~test].to_csv(data / "train.csv", index=False)
    ratings[test].to_csv(data / "test.csv", index=False)
    cfg = write_config(base / "c.yaml", data, base / "work",
                       split={"method": "given", "train": str(data / "train.csv"), "test": str(data / "test.csv")},
                       model={"factors": 8, "epochs": 8, "seed": 0}, features={"group_columns": []},
                       evaluate={"k": [10], "baselines": ["popularity", "bias", *ALL], "bootstrap_rounds": 50})
    r = run_cli("evaluate", "--config", str(cfg), "--format", "json", "--output", str(base / "report"))
    assert r.returncode == 0, r.stderr
    own = evaluate(load_config(cfg, ["evaluate.unseen_users=own", "evaluate.baselines=[popularity,rp3beta]",
                                     "evaluate.bootstrap_rounds=0"]))
    return json.loads(r.stdout), (base / "report" / "report.md").read_text(), own, format_table(own, [10])


def test_evaluate_reports_the_peers_with_verdicts(evaluated):
    res, report, _, _ = evaluated
    for name in ALL:
        b = res["baselines"][name]
        assert "ndcg@10" in b and "rmse" not in b and b["fit_seconds"] >= 0
        assert res["significance"][name]["verdict"].startswith(f"{name}: ")
        assert "ndcg@10" in res["significance"][name] and "rmse" not in res["significance"][name]
        assert f"baseline: {name}" in report
    assert res["unseen_users"] == "fallback"
    assert "## Cold and known users" in report and "ndcg@10 cold" in report


def test_cold_and_known_users_apart(evaluated):
    res, _, own, own_table = evaluated
    split = res["users_split"]
    assert split["cold"]["users"] == 20 and split["cold"]["users_ranked"] > 5
    assert split["known"]["users_ranked"] > 50
    pop = res["baselines"]["popularity"]["users_split"]["cold"]
    # nothing but ratings here: movierec, like every peer and bias, lists the most rated movies for them
    assert split["cold"]["model_lists"] == 0
    for name in ["bias", *ALL]:
        cold = res["baselines"][name]["users_split"]["cold"]
        assert cold["users_ranked"] == pop["users_ranked"]
        assert cold["ndcg@10"] == pytest.approx(pop["ndcg@10"]), name
    assert split["cold"]["ndcg@10"] == pytest.approx(pop["ndcg@10"])
    # unseen_users: own, each ranker's own list (rp3beta has nothing for them: not the popularity list)
    assert own["unseen_users"] == "own"
    own_cold = own["baselines"]["rp3beta"]["users_split"]["cold"]
    assert own_cold["users_ranked"] == pop["users_ranked"] and own_cold["ndcg@10"] != pytest.approx(pop["ndcg@10"])
    assert "each ranker's own list" in own_table and "baseline: rp3beta" in own_table
    assert "cold " in own_table and "known " in own_table


def test_the_ease_peer_takes_over_the_models_own_matrix_only_when_it_is_the_same():
    train, _, nu, ni = _planted(n_users=60, n_items=30, groups=3, per_user=6)
    X = P.interactions(train, nu, ni)
    B = np.full((ni, ni), 0.5, np.float32)

    class Model:  # what the ease peer reads of a fitted model with ranking: ease
        ease_lambda, ranking_fit_seconds_ = 500.0, 1.5

        def __init__(self, hist):
            self.hist = hist

        def item_item(self):
            return self.hist, B

    cfg = load_config(None, ["model.ease_lambda=500"])
    same = E.baseline_recommenders(train, nu, ni, ["ease"], cfg, Model(X.copy()))["ease"]
    assert same.item_item[1] is B and same.fit_seconds == 1.5
    more = X.tolil()
    more[0, np.setdiff1d(np.arange(ni), X[0].indices)[0]] = 1.0  # a reviewed movie: another matrix
    for model, c in ((Model(more.tocsr()), cfg), (Model(X.copy()), load_config(None, ["evaluate.peer_ease_lambda=50"]))):
        own = E.baseline_recommenders(train, nu, ni, ["ease"], c, model)["ease"]
        assert own.item_item[1] is not B and not np.allclose(own.item_item[1], B)


def test_the_model_keeps_its_own_list_where_reviews_tell_it_something():
    class Model:  # a hybrid model: no item-item part
        user_bias_, item_bias_ = np.zeros(5), np.zeros(4)

        def item_item(self):
            return None

    class Catalog:
        def read_optional(self, name):
            if name == "reviews_clean":  # user 1 reviewed movie 2 (not a test pair), user 2 only a test pair
                return pd.DataFrame({"user_idx": [1, 2], "movie_idx": [2, 3]})
            if name == "social_neighbours":  # user 3 trusts user 0
                return pd.DataFrame({"user_idx": [3], "neighbour_idx": [0], "strength": [1.0]})
            return None

    train = pd.DataFrame({"user_idx": [0], "movie_idx": [0], "rating": [4.0]})
    test = pd.DataFrame({"user_idx": [1, 2, 3, 4], "movie_idx": [1, 3, 1, 1], "rating": [5.0] * 4})

    def knows(*overrides):
        return E.model_knows(Model(), load_config(None, ["sentiment.enabled=false", *overrides]), Catalog(),
                             train, test).tolist()

    assert knows() == [False] * 5  # reads neither reviews nor ties: the popularity list for them all
    assert knows("model.implicit=true") == [False, True, False, False, False]
    # ties alone: the popularity list (they reach only the rating part of the rank score)
    assert knows("model.trust_implicit=true", "model.social_reg=0.1") == [False] * 5
    ease = Model()
    ease.item_item = lambda: (sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0] * 4, [0] * 4, [0] * 4])), None)
    assert E.model_knows(ease, load_config(None), Catalog(), train, test).tolist() == [True, True, False, False, False]
