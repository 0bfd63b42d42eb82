"""Confidence intervals, paired tests and their verdicts; the gate's paired option."""

import numpy as np
import pytest

from movierec.config import load_config
from movierec.evaluation import stats as S


def scores(err_sd: float, ndcg_mean: float, n_users: int = 400, seed: int = 0) -> S.UserScores:
    """Per-user scores with a given error spread and NDCG level (10 test ratings per user)."""
    rng = np.random.default_rng(seed)
    n = np.full(n_users, 10.0)
    sse = (rng.normal(0, err_sd, (n_users, 10)) ** 2).sum(1)
    sae = np.abs(rng.normal(0, err_sd, (n_users, 10))).sum(1)
    nd = np.clip(rng.normal(ndcg_mean, 0.15, n_users), 0, 1)
    return S.UserScores(np.arange(n_users), n, sse, sae, np.ones(n_users), {"ndcg@10": nd})


def test_metrics_are_the_averages_and_the_interval_holds_them():
    us = scores(0.9, 0.3)
    m = us.metrics()
    assert m["rmse"] == pytest.approx(np.sqrt(us.sse.sum() / us.n.sum()))
    assert m["ndcg@10"] == pytest.approx(us.sums["ndcg@10"].mean())
    ci = S.bootstrap(us, rounds=300, seed=1)
    for key in ("rmse", "mae", "ndcg@10"):
        assert ci[key][0] < m[key] < ci[key][1]
    assert ci["rmse"][1] - ci["rmse"][0] < 0.1  # 4,000 errors: a narrow interval


def test_a_large_effect_is_significant_and_two_copies_are_not():
    a, b = scores(0.8, 0.35, seed=1), scores(1.0, 0.25, seed=1)
    t = S.paired(a, b, ["rmse", "ndcg@10"], rounds=400)
    assert t["rmse"]["p_value"] < 0.01 and t["rmse"]["better"] and t["rmse"]["ci"][1] < 0
    assert t["ndcg@10"]["p_value"] < 0.01 and t["ndcg@10"]["better"]
    assert "the trust signal helps" in S.verdict("shuffled_social", "ablation", t)
    same = S.paired(a, scores(0.8, 0.35, seed=1), ["rmse", "ndcg@10"], rounds=400)
    assert same["rmse"]["p_value"] == 1.0 and same["ndcg@10"]["p_value"] == 1.0
    assert S.verdict("no_sentiment", "ablation", same) .startswith("no_sentiment: no significant difference")


def test_noise_alone_is_not_significant():
    # two independent draws of the same model quality: differences are noise
    a, b = scores(0.9, 0.3, seed=3), scores(0.9, 0.3, seed=4)
    t = S.paired(a, b, ["rmse", "ndcg@10"], rounds=400)
    assert t["rmse"]["ci"][0] < 0 < t["rmse"]["ci"][1] or t["rmse"]["p_value"] >= 0.01


def test_pooled_folds_add_up_per_user():
    a, b = scores(0.9, 0.3, n_users=50, seed=1), scores(0.9, 0.3, n_users=50, seed=2)
    p = S.pool([a, b])
    assert len(p.users) == 50 and p.metrics()["rmse"] == pytest.approx(
        np.sqrt((a.sse.sum() + b.sse.sum()) / (a.n.sum() + b.n.sum())))


def test_fold_interval_is_students_t():
    lo, hi = S.fold_interval([0.80, 0.82, 0.81, 0.79, 0.83])
    assert lo < 0.81 < hi and hi - lo == pytest.approx(2 * 2.776 * np.std([0.80, 0.82, 0.81, 0.79, 0.83], ddof=1)
                                                       / np.sqrt(5), rel=1e-3)


def test_a_fairness_gap_is_flagged_only_when_real():
    from movierec.evaluation.evaluate import fairness_gaps

    same_a, same_b = scores(0.9, 0.30, 300, seed=1), scores(0.9, 0.30, 300, seed=2)
    far = scores(0.9, 0.15, 300, seed=3)
    groups = {"gender=F": same_a, "gender=M": same_b, "age=<25": same_a, "age=50+": far}
    res = fairness_gaps({g: s.metrics() for g, s in groups.items()}, 10, groups, rounds=300)
    assert res["gender"]["ndcg@10"]["significant"] is False
    assert res["age"]["ndcg@10"]["significant"] is True and res["age"]["ndcg@10"]["ci"][0] > 0
    assert res["largest"] == "age"
    # bootstrap_rounds 0: no resampling at all, so no interval and no verdict; the gaps remain
    off = fairness_gaps({g: s.metrics() for g, s in groups.items()}, 10, groups, rounds=0)
    assert off["age"]["ndcg@10"]["gap"] == res["age"]["ndcg@10"]["gap"] > 0
    assert not {"ci", "significant"} & set(off["age"]["ndcg@10"]) and off["largest"] == "age"


def test_the_gate_can_require_significance(tmp_path):
    from movierec.refresh import gate

    p = tmp_path / "c.yaml"
    p.write_text("{}")
    cur, new = {"rmse": 0.80, "ndcg@10": 0.30}, {"rmse": 0.82, "ndcg@10": 0.30}
    noisy = {"rmse": {"p_value": 0.4}, "ndcg@10": {"p_value": 0.9}}
    real = {"rmse": {"p_value": 0.001}, "ndcg@10": {"p_value": 0.9}}
    assert gate(new, cur, load_config(p))[0] is False  # threshold: 0.02 > 0.01 rejects
    ok, why = gate(new, cur, load_config(p, ["refresh.gate_test=paired"]), noisy)
    assert ok and "within noise" in why[0]
    assert gate(new, cur, load_config(p, ["refresh.gate_test=paired"]), real)[0] is False


def test_no_resampling_means_no_test():
    a = scores(0.9, 0.3)
    assert S.paired(a, a, ["rmse"], rounds=0) == {} and S.bootstrap(a, rounds=0) == {}
    assert "not tested" in S.verdict("x", "baseline", {})


def test_bootstrap_weights_are_multinomial_draws():
    """Each resample draws n users with replacement: counts sum to n, every user's mean count
    is 1, and a seed gives the same draws."""
    from movierec.evaluation.stats import _weights

    W = np.vstack(list(_weights(50, 1000, seed=4, chunk=300)))
    assert W.shape == (1000, 50) and (W.sum(1) == 50).all() and (W >= 0).all()
    assert np.allclose(W.mean(0), 1.0, atol=0.2)
    assert np.var(W[:, 0]) == pytest.approx(1 - 1 / 50, abs=0.15)  # binomial(n, 1/n)
    assert np.array_equal(W, np.vstack(list(_weights(50, 1000, seed=4, chunk=300))))


def test_a_p_value_at_the_bootstrap_floor_reads_as_a_bound():
    """With R rounds no p-value is below 2/(R+1): there the verdict says "p < 0.004", never
    "p = 0.004" (500 rounds), and each test records its rounds."""
    a, b = scores(0.5, 0.40, seed=1), scores(0.9, 0.20, seed=1)
    tests = S.paired(a, b, ["rmse", "ndcg@10"], rounds=500, seed=0)
    assert tests["rmse"]["rounds"] == 500 and tests["rmse"]["p_value"] == pytest.approx(2 / 501)
    v = S.verdict("other", "baseline", tests)
    assert "p < 0.004" in v and "p = 0.004" not in v
    assert S.p_words(0.05, 500) == "p = 0.050" and S.p_words(2 / 1001, 1000) == "p < 0.002"
