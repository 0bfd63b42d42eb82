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


def test_hit_matrix_equals_the_row_by_row_membership_test():
    """The vectorised hit matrix: -1 (no movie) never hits, users without positives none."""
    rng = np.random.default_rng(3)
    topk = rng.integers(-1, 30, size=(40, 7))
    positives = [rng.choice(30, size=rng.integers(0, 6), replace=False) for _ in range(40)]
    positives[0] = np.array([], dtype=np.int64)
    positives[1] = np.array([-1 + 1, 29])
    topk[1] = [-1, 0, 29, -1, 5, 6, 7]
    want = np.array([[t in set(p.tolist()) for t in row] for row, p in zip(topk, positives)])
    assert np.array_equal(M.hit_matrix(topk, positives), want)
    assert M.hit_matrix(topk[1:2], positives[1:2]).tolist() == [[False, True, True, False, False, False, False]]
    assert M.hit_matrix(np.zeros((0, 3), np.int64), []).shape == (0, 3)
    # the same positives as one array and a count per row (what evaluate passes)
    flat = (np.concatenate(positives), np.array([len(p) for p in positives]))
    assert np.array_equal(M.hit_matrix(topk, flat), want)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert M.hit_matrix(np.zeros((0, 3), np.int64), empty).shape == (0, 3)
    none = (np.zeros(0, np.int64), np.zeros(2, np.int64))  # rows, none with a positive
    assert not M.hit_matrix(topk[:2], none).any() and M.hit_matrix(topk[:2], none).shape == (2, 7)


def test_rmse_mae_match_scikit_learn():
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    rng = np.random.default_rng(0)
    y, p = rng.uniform(1, 5, 500), rng.uniform(1, 5, 500).astype(np.float32)
    assert M.rmse(y, p) == pytest.approx(root_mean_squared_error(y, p), rel=1e-12)
    assert M.mae(y, p) == pytest.approx(mean_absolute_error(y, p), rel=1e-12)


def test_genre_matrix_matches_scikit_learns_multilabel_binarizer():
    import pandas as pd
    from sklearn.preprocessing import MultiLabelBinarizer

    from movierec.data.schemas import genre_matrix

    movies = pd.DataFrame({"genres": ["Drama|Comedy", "", None, "Sci-Fi", "Comedy|Drama|Sci-Fi", "Drama||Film-Noir",
                                      "Comedy|Comedy"]})
    names, mat = genre_matrix(movies)
    lists = movies["genres"].fillna("").map(lambda g: [x for x in g.split("|") if x])
    mlb = MultiLabelBinarizer()
    want = mlb.fit_transform(lists)
    assert names == list(mlb.classes_) == ["Comedy", "Drama", "Film-Noir", "Sci-Fi"]
    assert mat.dtype == np.float32 and np.array_equal(mat, want)
    assert genre_matrix(pd.DataFrame({"genres": ["", None]}))[1].shape == (2, 0)
