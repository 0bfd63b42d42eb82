import numpy as np
import pytest

from movierec.evaluation import metrics as M


def test_ranking_metrics_by_hand():
    topk = np.array([[1, 2, 3], [4, 5, 6]])
    positives = [np.array([1, 3, 9]), np.array([7])]
    out = M.ranking_metrics(topk, positives, [3], n_items=10)
    assert out["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["recall@3"] == pytest.approx((2 / 3 + 0) / 2)
    dcg = 1 + 1 / np.log2(4)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert out["ndcg@3"] == pytest.approx(dcg / idcg / 2)
    ap = (1 / 1 + 2 / 3) / 3
    assert out["map@3"] == pytest.approx(ap / 2)
    assert out["coverage"] == pytest.approx(0.6)


def test_perfect_list_scores_one():
    topk = np.array([[3, 1, 0]])
    out = M.ranking_metrics(topk, [np.array([1, 3])], [2], 5)
    assert out["ndcg@2"] == pytest.approx(1.0) and out["map@2"] == pytest.approx(1.0)


def test_rmse_mae():
    assert M.rmse(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == pytest.approx(1.0)
    assert M.mae(np.array([1.0, 4.0]), np.array([2.0, 2.0])) == pytest.approx(1.5)


def test_beyond_accuracy_metrics():
    from movierec.evaluation import metrics as M

    share = np.array([0.5, 0.25, 0.125, 0.125])
    topk = np.array([[0, 1], [2, 3]])
    assert M.novelty(topk, share) == pytest.approx(np.mean([1, 2, 3, 3]))
    genres = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=float)
    # list 1: same genre (diversity 0); list 2: disjoint genres (diversity 1)
    assert M.intra_list_diversity(topk, genres) == pytest.approx(0.5)
    assert M.popularity_lift(topk, share, np.array([0, 0, 0, 1])) == pytest.approx(0.25 / 0.4375)
    lt = M.long_tail(np.array([[0, 0], [0, 3]]), np.array([10, 5, 3, 1]), np.array([3]), bins=4)
    assert lt["recommended"] == [0.75, 0, 0, 0.25] and lt["watched"] == [0, 0, 0, 1.0]
    curve = M.pr_curve(np.array([[True, False], [False, False]]), np.array([1, 2]))
    assert curve["precision"] == [0.5, 0.25] and curve["recall"] == [0.5, 0.5]


def test_fairness_gap_names_the_worst_group():
    from movierec.evaluation.evaluate import fairness_gaps

    groups = {"gender=F": {"rmse": 0.9, "ndcg@10": 0.30}, "gender=M": {"rmse": 0.8, "ndcg@10": 0.33},
              "age=<25": {"rmse": 0.85, "ndcg@10": 0.20}, "age=50+": {"rmse": 0.86, "ndcg@10": 0.40}}
    f = fairness_gaps(groups, 10)
    assert f["gender"]["rmse"]["worst"] == "F" and f["gender"]["rmse"]["gap"] == pytest.approx(0.1)
    assert f["age"]["ndcg@10"]["worst"] == "<25" and f["largest"] == "age"


def test_mlflow_logging_only_when_configured(monkeypatch, tmp_path):
    import sys
    import types

    from movierec.config import Config
    from movierec.tracking import log_evaluation

    monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    assert log_evaluation(Config(), {"rmse": 0.9}) is None
    assert "mlflow" not in sys.modules  # not even imported
    calls = {}
    fake = types.ModuleType("mlflow")
    fake.set_tracking_uri = lambda uri: calls.setdefault("uri", uri)
    fake.set_experiment = lambda name: calls.setdefault("experiment", name)

    class Run:
        info = types.SimpleNamespace(run_id="r1")

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    fake.start_run = lambda run_name=None: Run()
    fake.log_params = lambda p: calls.setdefault("params", p)
    fake.log_metrics = lambda m: calls.setdefault("metrics", m)
    fake.log_artifacts = lambda d, artifact_path=None: calls.setdefault("artifacts", d)
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    cfg = Config()
    cfg.tracking.mlflow_uri = str(tmp_path / "mlruns")
    (tmp_path / "rep").mkdir()
    result = {"rmse": 0.9, "ndcg@10": 0.3, "baselines": {"bias": {"rmse": 0.95}}, "model_version": "v1"}
    assert log_evaluation(cfg, result, tmp_path / "rep") == "r1"
    assert calls["uri"] == str(tmp_path / "mlruns") and calls["params"]["model.factors"] == "32"
    assert calls["metrics"]["rmse"] == 0.9 and calls["metrics"]["baseline.bias.rmse"] == 0.95
    assert calls["artifacts"] == str(tmp_path / "rep")
