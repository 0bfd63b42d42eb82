import dataclasses

import numpy as np
import pandas as pd
import pytest

from movierec.config import SentimentConfig
from movierec.errors import ConfigError
from movierec.models import pseudo as P
from movierec.sentiment import cache as C
from movierec.sentiment import encoder as E
from movierec.sentiment import scorers as S
from movierec.stages import sentiment as ST
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

    def score_features(self, texts):
        return self.score(texts), None


def test_stage_scores_reviews_and_messages_once_per_distinct_text():
    reviews = pd.DataFrame({"review_id": [0, 1, 2], "user_idx": [0, 1, 2], "movie_idx": [0, 0, 1],
                            "text": ["good", "bad", "good"]})
    social = pd.DataFrame({"user_idx": [0, 1], "friend_idx": [1, 2], "weight": [1.0, 1.0], "text": ["good pick", ""]})
    scorer = CountingScorer()
    res = ST.sentiment(reviews, social, lambda: scorer, SentimentConfig())
    assert sorted(scorer.seen) == ["bad", "good", "good pick"]
    assert res.reviews["sentiment"].tolist() == [0.5, -0.5, 0.5]
    assert res.reviews["sentiment_label"].tolist() == ["positive", "negative", "positive"]
    assert len(res.messages) == 1 and res.messages["sentiment"].item() == 0.5


def test_texts_without_words_are_read_by_rule_not_by_the_model():
    """An empty text has no signal (neutral 0), emoji read by their polarity (not as one unknown
    token: a heart and a vomiting face differ), a bare score by its place on the scale; no
    model is asked about them, from texts or from the hashes and rules an artifact carries."""
    from movierec.sentiment.signal import rule_scores

    r = rule_scores(["", "   ", "!!", "😍😍", "🤮", "😍🤮", "10/10", "0/10", "4,5/5", "7 / 10!!", "11/10",
                     "great", "10/10 great"])
    assert r[:3].tolist() == [0.0, 0.0, 0.0]
    assert r[3] > 0.5 and r[4] < -0.5 and abs(r[5]) < 0.1
    assert r[6] == 1.0 and r[7] == -1.0 and r[8] == pytest.approx(0.8) and r[9] == pytest.approx(0.4)
    assert np.isnan(r[10:]).all()  # an impossible score, and words: the model's
    reviews = pd.DataFrame({"review_id": [0, 1, 2, 3], "user_idx": [0, 1, 2, 3], "movie_idx": [0, 0, 1, 1],
                            "text": ["good", "😍", "1/10", "bad"]})
    scorer = CountingScorer()
    res = ST.sentiment(reviews, None, lambda: scorer, SentimentConfig())
    assert sorted(scorer.seen) == ["bad", "good"]
    assert res.reviews["sentiment"].tolist() == pytest.approx([0.5, 0.9, -0.8, -0.5])
    assert res.reviews["sentiment_label"].tolist() == ["positive", "positive", "negative", "negative"]
    # the artifact form: hashes and the rule computed at ingest, no texts
    from movierec.privacy import without_texts

    hashed = without_texts(reviews.assign(text_rule=rule_scores(reviews["text"].tolist())))
    scorer = CountingScorer()
    res2 = ST.sentiment(hashed, None, lambda: scorer, SentimentConfig(),
                        fetch=lambda keys: {k: t for k, t in zip(without_texts(reviews)["text_key"], reviews["text"])
                                            if k in keys})
    assert sorted(scorer.seen) == ["bad", "good"] and res2.reviews["sentiment"].tolist() == pytest.approx(
        res.reviews["sentiment"].tolist())


def test_cache_skips_the_model_for_known_texts():
    built = []

    def factory():
        built.append(1)
        return CountingScorer()

    c = C.CachedScorer(factory, "model-a", None)
    first = c.score(["good one", "bad one"])
    assert c.misses == 2 and len(built) == 1
    cache = c.updated_cache()
    assert "text" not in cache.columns and not cache["key"].str.contains("good").any()
    c2 = C.CachedScorer(factory, "model-a", cache)
    assert np.array_equal(c2.score(["bad one", "good one"]), first[::-1])
    assert c2.misses == 0 and len(built) == 1  # no model built at all
    c3 = C.CachedScorer(factory, "model-a", cache)
    c3.score(["good one", "good new"])
    assert c3.misses == 1 and len(built) == 2
    c4 = C.CachedScorer(factory, "model-b", cache)  # another model: nothing cached
    c4.score(["good one"])
    assert c4.misses == 1


def test_long_reviews_are_chunked_not_truncated():
    sc = S.EmbeddedScorer(SentimentConfig(max_length=32))
    pos = "A wonderful, moving masterpiece with brilliant acting."
    neg = "Terrible, boring and an awful waste of time."
    long_text = " ".join([pos] * 6 + [neg] * 6)
    emb, owner, sizes = sc.encoder.encode_chunks([pos, long_text])
    assert (owner == 0).sum() == 1 and (owner == 1).sum() >= 4  # several overlapping chunks
    assert sizes[owner == 1].max() <= 32
    s_pos, s_neg, s_long = sc.score([pos, neg, long_text])
    # truncation would have read only the praise at the start; the chunks also read the end
    assert s_neg + 0.3 < s_long < s_pos - 0.3
    assert np.all(np.abs([s_pos, s_neg, s_long]) <= 1.0)
    # the same pass gives each text's embedding (what the text -> rating map reads)
    s2, f = sc.score_features([pos, neg, long_text])
    assert np.allclose(s2, [s_pos, s_neg, s_long]) and f.shape == (3, 384)
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-4)
    # the long text sits between praise and complaint (those two point apart)
    assert float(f[0] @ f[1]) < 0 < min(float(f[2] @ f[0]), float(f[2] @ f[1]))


def test_int8_model_agrees_with_fp32():
    texts = ["I loved this film", "a dull, boring mess", "A wonderful, moving masterpiece.",
             "Terrible acting and an awful script.", "not bad at all", "it could have been worse"]
    fp32 = S.EmbeddedScorer(SentimentConfig(quantize=False)).score(texts)
    int8 = S.EmbeddedScorer(SentimentConfig(quantize=True)).score(texts)
    # same polarity everywhere; int8 moves a score or two near the middle, not the verdicts
    # (held-out accuracy: within a point of fp32, benchmarks/results/sentiment.md)
    assert np.array_equal(np.sign(fp32), np.sign(int8))
    assert np.abs(fp32 - int8).mean() < 0.1
    # the quantized model is another model for the cache
    assert S.model_key(SentimentConfig(quantize=True)) != S.model_key(SentimentConfig(quantize=False))


def test_onnx_runtime_gives_torch_numbers_and_exports_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MOVIEREC_CACHE_DIR", str(tmp_path / "cache"))
    exports = []
    real_export = E.export_onnx
    monkeypatch.setattr(E, "export_onnx", lambda *a: (exports.append(a[2]), real_export(*a))[1])
    long_text = " ".join(["A wonderful, moving masterpiece."] * 20 + ["Terrible and boring."] * 20)
    texts = ["I loved this film", "a dull, boring mess", "not bad at all", long_text]
    fp32 = SentimentConfig(quantize=False, max_length=64)
    onnx = S.EmbeddedScorer(fp32)
    torch_ = S.EmbeddedScorer(dataclasses.replace(fp32, runtime="torch"))
    assert (onnx.encoder.runtime, torch_.encoder.runtime) == ("onnx", "torch") and exports == [False]
    (s1, f1), (s2, f2) = onnx.score_features(texts), torch_.score_features(texts)
    # the same network: the same scores and embeddings, long (chunked) text included
    assert np.abs(s1 - s2).max() < 1e-4 and np.abs(f1 - f2).max() < 1e-4
    assert s1[0] > 0.5 > -0.5 > s1[1]
    # exported once per machine: the next scorer loads the cached file
    S.EmbeddedScorer(fp32)
    assert exports == [False]
    # a damaged cache file is made again, not trusted
    cached = list((tmp_path / "cache" / "onnx").glob("minilm-fp32-*.onnx"))
    assert len(cached) == 1
    cached[0].write_bytes(b"not a model")
    assert np.abs(S.EmbeddedScorer(fp32).score(texts) - s1).max() < 1e-4 and exports == [False, False]
    # numbers of another runtime are another model for the cache
    assert S.model_key(fp32) != S.model_key(dataclasses.replace(fp32, runtime="torch"))
    # a cache folder that cannot be written: a warning, and an export for this run only
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MOVIEREC_CACHE_DIR", str(tmp_path / "file" / "sub"))
    with caplog.at_level("WARNING", logger="movierec.sentiment.encoder"):
        assert np.abs(S.EmbeddedScorer(fp32).score(texts) - s1).max() < 1e-4
    assert "cannot be written" in caplog.text and len(exports) == 3


def test_shipped_adapters_change_the_encoder():
    import torch
    from transformers import AutoModel

    head = S.load_head()
    assert "lora_rank" in head and head["coef"].shape == (384,)
    model = AutoModel.from_pretrained(str(E.embedded_model_path()), local_files_only=True)
    before = model.encoder.layer[5].attention.self.query.weight.detach().clone()
    assert E.merge_adapters(model, head) > 0
    assert not torch.equal(before, model.encoder.layer[5].attention.self.query.weight)


def test_pseudo_ratings_come_only_from_unrated_reviews():
    rng = np.random.default_rng(0)
    n = 400
    stars = rng.integers(1, 6, n).astype(np.float32)
    sent = np.clip((stars - 3) / 2 + rng.normal(0, 0.2, n), -1, 1)
    ratings = pd.DataFrame({"user_idx": np.arange(n), "movie_idx": np.zeros(n, int), "rating": stars})
    train = ratings.iloc[:300]  # the other 100 are test ratings: their reviews stay unrated too
    reviews = pd.DataFrame({"user_idx": np.r_[np.arange(n), [1000, 1001, 1002]],
                            "movie_idx": np.r_[np.zeros(n, int), [5, 5, 5]],
                            "sentiment": np.r_[sent, [0.95, 0.0, -0.95]].astype(np.float32)})
    pr = P.pseudo_ratings(reviews, ratings, train, weight=0.3)
    t = pr.table
    # only the three reviews without any rating (test ratings included) became pseudo-ratings
    assert t["user_idx"].tolist() == [1000, 1001, 1002]
    assert (t["weight"] == np.float32(0.3)).all()
    # calibrated on training pairs: warm words -> high stars, and monotone
    assert t["rating"].iloc[0] > 4.0 > t["rating"].iloc[1] > 2.0 > t["rating"].iloc[2]
    assert pr.calibration["fitted_on"] == 300
    assert np.all(np.diff(pr.calibration["rating"]) >= 0)
    assert P.pseudo_ratings(reviews, ratings, train, weight=0.0) is None


def test_pseudo_ratings_read_the_review_embedding_when_there_is_one():
    """Polarity alone cannot tell a 4 from a 5 (both 'positive'); the ridge map on the
    review's embedding, fitted on the platform's rated reviews, can."""
    rng = np.random.default_rng(1)
    n = 600
    stars = rng.integers(1, 6, n).astype(np.float32)
    sent = np.clip(np.where(stars >= 4, 0.9, np.where(stars <= 2, -0.9, 0.0)) + rng.normal(0, 0.05, n), -1, 1)
    # an "embedding" whose first direction carries the intensity the score lacks
    emb = rng.normal(0, 0.1, (n, 8)).astype(np.float32)
    emb[:, 0] += (stars - 3) / 2
    ratings = pd.DataFrame({"user_idx": np.arange(n), "movie_idx": np.zeros(n, int), "rating": stars})
    rated = np.arange(n) < 500  # the last 100 reviews come without stars
    reviews = pd.DataFrame({"user_idx": np.arange(n), "movie_idx": np.where(rated, 0, 1),
                            "sentiment": sent.astype(np.float32),
                            "features": [r.tobytes() for r in emb.astype(np.float16)]})
    pr = P.pseudo_ratings(reviews, ratings, ratings[rated], weight=0.3)
    assert pr.calibration["method"].startswith("ridge") and pr.calibration["fitted_on"] == 500
    err_ridge = np.sqrt(np.mean((pr.table["rating"].to_numpy() - stars[~rated]) ** 2))
    iso = P.pseudo_ratings(reviews.drop(columns="features"), ratings, ratings[rated], weight=0.3)
    assert iso.calibration["method"].startswith("isotonic")
    err_iso = np.sqrt(np.mean((iso.table["rating"].to_numpy() - stars[~rated]) ** 2))
    assert err_ridge < 0.3 < err_iso  # 4s and 5s told apart only with the embedding
    assert pr.calibration["loo_rmse"] < 0.3
    assert pr.table["rating"].between(1, 5).all()


class FeatureScorer(CountingScorer):
    def score_features(self, texts):
        s = self.score(texts)
        return s, np.c_[s, np.array([len(t) for t in texts], np.float32)]


def test_cache_keeps_text_features_and_rescores_texts_cached_without_them():
    built = []

    def factory():
        built.append(1)
        return FeatureScorer()

    plain = C.CachedScorer(factory, "m", None)  # features not wanted: scores only
    plain.score(["good one"])
    assert "features" not in plain.updated_cache().columns
    # a scorer that has no features, features wanted: cached as "none", not re-scored each run
    c0 = C.CachedScorer(lambda: CountingScorer(), "m0", None, features=True)
    assert c0.score_features(["good one"])[1] is None and c0.misses == 1
    c0b = C.CachedScorer(lambda: CountingScorer(), "m0", c0.updated_cache(), features=True)
    assert c0b.score_features(["good one"])[1] is None and c0b.misses == 0
    c = C.CachedScorer(factory, "m", plain.updated_cache(), features=True)
    s, f = c.score_features(["good one", "bad"])
    assert c.misses == 2  # "good one" was cached without its features
    assert f.shape == (2, 2) and f[:, 1].tolist() == [8.0, 3.0]
    c2 = C.CachedScorer(factory, "m", c.updated_cache(), features=True)
    s2, f2 = c2.score_features(["bad", "good one"])
    assert c2.misses == 0 and np.array_equal(f2, f[::-1]) and np.array_equal(s2, s[::-1])
    # a nightly refresh: one new text among cached ones (cache read back from parquet)
    import io

    buf = io.BytesIO()
    c2.updated_cache().to_parquet(buf, index=False)
    c3 = C.CachedScorer(factory, "m", pd.read_parquet(io.BytesIO(buf.getvalue())), features=True)
    _, f3 = c3.score_features(["bad", "good new text", "good one"])
    assert c3.misses == 1 and f3[:, 1].tolist() == [3.0, 13.0, 8.0]
    # "good one" was cached twice (without, then with features): the newest row is kept
    assert c.updated_cache()["key"].is_unique
    # the stage puts them on each review row
    reviews = pd.DataFrame({"review_id": [0, 1], "user_idx": [0, 1], "movie_idx": [0, 0], "text": ["bad", "good one"]})
    res = ST.sentiment(reviews, None, lambda: c2, SentimentConfig())
    assert C.features_from_bytes(res.reviews["features"].to_numpy(object)).tolist() == f2.tolist()
    off = ST.sentiment(reviews, None, lambda: c2, SentimentConfig(text_features=False))
    assert "features" not in off.reviews.columns


def test_head_temperature_softens_without_flipping(tmp_path, monkeypatch):
    head = S.load_head()
    assert float(head["temperature"]) > 1.0  # the shipped head is calibrated (it was over-confident)
    emb = E.normalize_rows(np.random.default_rng(0).normal(size=(50, 384)).astype(np.float32))
    hot = S.apply_head(dict(head, temperature=np.array(1.0)), emb)
    cool = S.apply_head(dict(head, temperature=np.array(2.0)), emb)
    z_hot, z_cool = np.log(hot / (1 - hot)), np.log(cool / (1 - cool))
    assert np.allclose(z_cool, z_hot / 2, atol=1e-4) and np.array_equal(hot > 0.5, cool > 0.5)
    # another temperature gives other scores: another model for the cache
    monkeypatch.setattr(S, "load_head", lambda path=None: dict(head, temperature=np.array(2.0, np.float32)))
    other = S.model_key(SentimentConfig())
    monkeypatch.undo()
    assert other != S.model_key(SentimentConfig())


def test_texts_read_from_the_inputs_once_for_every_chunk():
    """The artifacts hold text hashes; the texts a scorer needs are read again from the inputs
    (``fetch``): once for all the chunks a run scores, not once a chunk (each read is a whole
    pass over the review files)."""
    from movierec.privacy import without_texts
    from movierec.sentiment.routing import Router

    texts = [f"good film number {k}" if k % 2 else f"bad film number {k}" for k in range(11)]
    reviews = pd.DataFrame({"review_id": range(11), "user_idx": range(11), "movie_idx": [0] * 11, "text": texts})
    hashed = without_texts(reviews)
    by_key = dict(zip(hashed["text_key"], texts))
    reads = []

    def fetch(keys):
        reads.append(set(keys))
        return {k: by_key[k] for k in keys}

    cfg = SentimentConfig(checkpoint_every=3)
    scorer = CountingScorer()
    saved = []
    router = Router.single(cfg, C.CachedScorer(lambda: scorer, "count", None, checkpoint=saved.append,
                                               checkpoint_every=3))
    res = ST.sentiment(hashed, None, lambda: router, cfg, fetch=fetch)
    assert len(saved) == 3  # four chunks of at most 3 texts (the last one saved with the cache)
    assert len(reads) == 1 and reads[0] == set(by_key)
    assert sorted(scorer.seen) == sorted(texts)
    assert res.reviews["sentiment"].tolist() == [0.5 if k % 2 else -0.5 for k in range(11)]
