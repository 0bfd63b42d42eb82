import numpy as np
import pandas as pd
import pytest

from movierec.config import SentimentConfig
from movierec.errors import ConfigError
from movierec.stages import sentiment as S
from tests.conftest import tiny_classifier


@pytest.fixture(scope="module")
def embedded():
    return S.EmbeddedScorer(SentimentConfig())


def test_embedded_model_reads_sentiment(embedded):
    s = embedded.score(["I loved this film", "a dull, boring mess", "A wonderful, moving masterpiece.",
                        "Terrible acting and an awful script."])
    assert s[0] > 0.3 and s[2] > 0.3
    assert s[1] < -0.3 and s[3] < -0.3
    assert np.all(np.abs(s) <= 1.0)


def test_labels_from_scores():
    labels = S.label_scores(np.array([0.9, -0.5, 0.05]), 0.2)
    assert labels.tolist() == ["positive", "negative", "neutral"]


@pytest.mark.parametrize("id2label, expected", [
    ({0: "NEGATIVE", 1: "POSITIVE"}, [-1, 1]),
    ({0: "negative", 1: "neutral", 2: "positive"}, [-1, 0, 1]),
    ({0: "1 star", 1: "2 stars", 2: "3 stars", 3: "4 stars", 4: "5 stars"}, [-1, -0.5, 0, 0.5, 1]),
    ({0: "LABEL_0", 1: "LABEL_1"}, [-1, 1]),
])
def test_label_values(id2label, expected):
    assert S.label_values(id2label).tolist() == pytest.approx(expected)


def test_unmappable_labels():
    with pytest.raises(ConfigError, match="cannot map"):
        S.label_values({0: "sports", 1: "politics"})


def _tiny_model(folder, id2label):
    return tiny_classifier(folder, id2label)


def test_local_hf_model_path(tmp_path):
    texts = ["good film", "bad film", "the film"]
    pos = _tiny_model(tmp_path / "pos", {0: "NEGATIVE", 1: "POSITIVE"})
    s = S.load_scorer(SentimentConfig(model=str(pos))).score(texts)
    assert s.shape == (3,) and np.all(s > 0.99) and np.all(s <= 1.0)
    # the same weights with the labels swapped: the mapping comes from id2label
    neg = _tiny_model(tmp_path / "neg", {0: "POSITIVE", 1: "NEGATIVE"})
    s = S.load_scorer(SentimentConfig(model=str(neg))).score(texts)
    assert np.all(s < -0.99)


def test_unloadable_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="cannot load it offline"):
        S.load_scorer(SentimentConfig(model="no-such-org/no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="sentiment.model"):
        S.load_scorer(SentimentConfig(model=str(tmp_path / "empty")))


class CountingScorer:
    model_id = "count"

    def __init__(self):
        self.seen = []

    def score(self, texts):
        self.seen.extend(texts)
        return np.array([0.5 if "good" in t else -0.5 for t in texts], dtype=np.float32)


def test_stage_scores_reviews_and_messages_once_per_distinct_text():
    reviews = pd.DataFrame({"review_id": [0, 1, 2], "user_idx": [0, 1, 2], "movie_idx": [0, 0, 1],
                            "text": ["good", "bad", "good"]})
    social = pd.DataFrame({"user_idx": [0, 1], "friend_idx": [1, 2], "weight": [1.0, 1.0], "text": ["good pick", ""]})
    scorer = CountingScorer()
    res = S.sentiment(reviews, social, lambda: scorer, SentimentConfig())
    assert sorted(scorer.seen) == ["bad", "good", "good pick"]
    assert res.reviews["sentiment"].tolist() == [0.5, -0.5, 0.5]
    assert res.reviews["sentiment_label"].tolist() == ["positive", "negative", "positive"]
    assert len(res.messages) == 1 and res.messages["sentiment"].item() == 0.5


def test_cache_skips_the_model_for_known_texts():
    built = []

    def factory():
        built.append(1)
        return CountingScorer()

    c = S.CachedScorer(factory, "model-a", None)
    first = c.score(["good one", "bad one"])
    assert c.misses == 2 and len(built) == 1
    cache = c.updated_cache()
    assert "text" not in cache.columns and not cache["key"].str.contains("good").any()
    c2 = S.CachedScorer(factory, "model-a", cache)
    assert np.array_equal(c2.score(["bad one", "good one"]), first[::-1])
    assert c2.misses == 0 and len(built) == 1  # no model built at all
    c3 = S.CachedScorer(factory, "model-a", cache)
    c3.score(["good one", "good new"])
    assert c3.misses == 1 and len(built) == 2
    c4 = S.CachedScorer(factory, "model-b", cache)  # another model: nothing cached
    c4.score(["good one"])
    assert c4.misses == 1
