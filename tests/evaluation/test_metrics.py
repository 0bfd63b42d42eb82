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
