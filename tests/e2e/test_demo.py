"""End to end on the shipped demo data with configs/default.yaml (every stage runs)."""

import json

import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli

CFG = str(ROOT / "configs" / "default.yaml")


def test_every_stage_ran_with_manifests(demo_workdir):
    for stage in ("ingest", "clean", "sentiment", "social", "fuse", "train"):
        m = json.loads((demo_workdir / "manifests" / f"{stage}.json").read_text())
        assert m["config_hash"] and m["seconds"] >= 0
        if stage != "train":
            assert m["outputs"], stage
            assert all(len(h) == 16 or h == "absent" for h in m["inputs"].values())
    m = json.loads((demo_workdir / "manifests" / "sentiment.json").read_text())
    assert m["outputs"]["review_sentiment"]["rows"] > 15000 and m["outputs"]["message_sentiment"]["rows"] > 1000


def test_reviews_without_stars_become_accurate_pseudo_ratings(demo_workdir):
    """The demo's ~3,400 reviews without stars: the ridge map on the review embedding, fitted on
    the rated reviews of the training part, predicts a held-out star far better than the
    spread of the ratings (the train manifest and the model's meta.json record it)."""
    manifest = json.loads((demo_workdir / "manifests" / "train.json").read_text())
    pr = manifest["pseudo_ratings"]
    assert pr["method"].startswith("ridge") and pr["fitted_on"] > 10000 and pr["pseudo_ratings"] > 3000
    assert pr["loo_rmse"] < 0.5 * pr["rating_std"]
    version = manifest["version"]
    meta = json.loads((demo_workdir / "models" / version / "meta.json").read_text())
    assert meta["pseudo_ratings"] == pr


def test_review_sentiment_follows_the_stars(demo_workdir):
    rs = pd.read_parquet(demo_workdir / "artifacts" / "review_sentiment.parquet")
    rv = pd.read_parquet(demo_workdir / "artifacts" / "reviews_clean.parquet")
    df = rs.merge(rv[["review_id", "rating"]], on="review_id")
    by_star = df.groupby("rating")["sentiment"].mean()
    assert by_star[5.0] > 0.3 and by_star[1.0] < -0.3
    # a polarity head saturates at the top, so 4 and 5 stars may swap; the order of
    # negative < mixed < positive must hold, and scores must track the stars overall
    assert max(by_star[1.0], by_star[2.0]) < by_star[3.0] < min(by_star[4.0], by_star[5.0])
    assert df["sentiment"].corr(df["rating"], method="spearman") > 0.4
    assert rs["sentiment"].between(-1, 1).all()


def test_recommend_json_returns_unseen_movies(demo_workdir):
    r = run_cli("recommend", "--config", CFG, "--user", "u00001", "-n", "7", "--format", "json", f"workdir={demo_workdir}")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["user_id"] == "u00001" and out["fallback"] is None and len(out["items"]) == 7
    assert {"movie_id", "title", "predicted_rating", "rank_score", "explanation"} <= set(out["items"][0])
    assert all(1 <= it["predicted_rating"] <= 5 for it in out["items"])
    ratings = pd.read_csv(ROOT / "data" / "demo" / "ratings.csv", dtype=str)
    rated = set(ratings.loc[ratings.user_id == "u00001", "movie_id"])
    # the model excludes the movies of its training part: none of them comes back
    train_seen = _train_seen(demo_workdir, "u00001")
    assert train_seen and not {it["movie_id"] for it in out["items"]} & train_seen
    assert train_seen <= rated
    scores = [it["rank_score"] for it in out["items"]]
    assert scores == sorted(scores, reverse=True)


def _train_seen(work, user):
    r = pd.read_parquet(work / "artifacts" / "ratings_clean.parquet")
    ids = pd.read_parquet(work / "artifacts" / "user_ids.parquet").set_index("user_id")["user_idx"]
    mids = pd.read_parquet(work / "artifacts" / "movie_ids.parquet")["movie_id"].to_numpy()
    mine = r[(r.user_idx == ids[user]) & (r.fold != 0)]
    return set(mids[mine.movie_idx])


def test_unknown_user_gets_flagged_popularity(demo_workdir):
    r = run_cli("recommend", "--config", CFG, "--user", "nobody-here", "--format", "json", f"workdir={demo_workdir}")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["fallback"] == "popularity" and len(out["items"]) == 10
    # the rank score is a count of ratings, never shown as stars; the predicted rating is the
    # model's own for a viewer it knows nothing about, on the rating scale
    counts = [it["rank_score"] for it in out["items"]]
    assert counts == sorted(counts, reverse=True) and counts[0] > 50 and all(c == int(c) for c in counts)
    assert all(1 <= it["predicted_rating"] <= 5 for it in out["items"])
    table = run_cli("recommend", "--config", CFG, "--user", "nobody-here", f"workdir={demo_workdir}").stdout
    assert "ratings" in table.splitlines()[1] and "predicted" in table.splitlines()[1]


def test_explanations_are_worth_reading(demo_workdir):
    """No evidence below the threshold, a cited movie shared by at most two picks, and an
    honest reason where no rated movie moves the score."""
    from movierec.explain import MIN_EFFECT

    for user in ("u00010", "u00500", "u01500", "u02500"):
        out = json.loads(run_cli("recommend", "--config", CFG, "--user", user, "--explain", "--format", "json",
                                 f"workdir={demo_workdir}").stdout)
        cited = [e["movie_id"] for it in out["items"] for e in it["evidence"]["similar_rated"]]
        assert all(e["score_drop"] >= MIN_EFFECT for it in out["items"] for e in it["evidence"]["similar_rated"])
        assert max([cited.count(m) for m in cited] + [0]) <= 2
        assert all(it["explanation"] for it in out["items"])  # every pick has its reason, said plainly


def test_recommend_formats(demo_workdir):
    r = run_cli("recommend", "--config", CFG, "--user", "u00002", "--format", "csv", f"workdir={demo_workdir}")
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "rank,movie_id,title,year,genres,predicted_rating,rank_score" and len(lines) == 11
    assert all(1 <= float(line.split(",")[-2]) <= 5 for line in lines[1:])
    r = run_cli("recommend", "--config", CFG, "--user", "u00002", f"workdir={demo_workdir}")
    assert "Top 10 for user u00002" in r.stdout and "predicted" in r.stdout and "rank score" in r.stdout
    row = r.stdout.splitlines()[2]
    year = row.split("(")[-1].split(")")[0]
    assert row.count(year) == 1  # the year once, in the title


def test_recommend_all_users(demo_workdir, tmp_path):
    out = tmp_path / "all.parquet"
    r = run_cli("recommend", "--config", CFG, "--all", "--output", str(out), "-n", "5", f"workdir={demo_workdir}")
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out)
    assert df["user_id"].nunique() == 3000 and len(df) == 3000 * 5
    one = json.loads(run_cli("recommend", "--config", CFG, "--user", "u00042", "-n", "5", "--format", "json",
                             f"workdir={demo_workdir}").stdout)
    assert df[df.user_id == "u00042"]["movie_id"].tolist() == [it["movie_id"] for it in one["items"]]


def test_fold_in_new_user(demo_workdir, tmp_path):
    movies = pd.read_csv(ROOT / "data" / "demo" / "movies.csv")
    horror = movies[movies.genres.str.contains("Horror")].movie_id.head(15)
    romance = movies[movies.genres.str.contains("Romance") & ~movies.genres.str.contains("Horror")].movie_id.head(15)
    rows = [{"movie_id": m, "rating": 5} for m in horror] + [{"movie_id": m, "rating": 1} for m in romance]
    r = run_cli("recommend", "--config", CFG, "--user", "newbie", "--ratings", "-", "--format", "json",
                f"workdir={demo_workdir}", input=json.dumps(rows))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["fallback"] == "fold-in"
    got = movies.set_index("movie_id").loc[[it["movie_id"] for it in out["items"]], "genres"]
    assert got.str.contains("Horror|Thriller|Mystery").mean() >= 0.6
    assert not set(horror) & {it["movie_id"] for it in out["items"]}


def test_evaluate_beats_global_mean(demo_workdir, tmp_path):
    r = run_cli("evaluate", "--config", CFG, "--format", "json", "--output", str(tmp_path / "rep"),
                f"workdir={demo_workdir}")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["rmse"] < m["baselines"]["global_mean"]["rmse"] - 0.1
    assert m["rmse"] < m["baselines"]["bias"]["rmse"]
    assert m["ndcg@10"] > 0 and 0 < m["coverage"] <= 1
    for key in ("mae", "precision@10", "recall@10", "map@10", "fit_seconds"):
        assert key in m
    assert {"gender=F", "gender=M", "activity=cold (<5)", "activity=heavy"} <= set(m["groups"])
    assert json.loads((tmp_path / "rep" / "metrics.json").read_text())["rmse"] == m["rmse"]
    # the model's own holdout scores stay with its version: status shows them, --compare reads them
    own = json.loads((demo_workdir / "models" / m["model_version"] / "metrics.json").read_text())
    assert own["rmse"] == pytest.approx(m["rmse"]) and "groups" not in own  # one split: its own holdout
    st = run_cli("status", "--config", CFG, f"workdir={demo_workdir}").stdout
    assert f"metrics: rmse {m['rmse']:.4f}" in st
    r = run_cli("evaluate", "--config", CFG, "--compare", m["model_version"], f"workdir={demo_workdir}",
                "evaluate.ablations=[]", "--format", "json")
    same = json.loads(r.stdout)
    assert r.returncode == 0 and same["compared_with"]["deltas"]["rmse"] == 0.0
    # a paired test against the version's own holdout model: the same model, no difference
    assert "no significant difference" in same["compared_version"]["verdict"]
    assert same["compared_version"]["paired"]["rmse"]["p_value"] == 1.0
    # beyond accuracy, fairness
    assert m["novelty"] > 0 and 0 < m["diversity"] <= 1 and m["popularity_lift"] > 0 and 0 < m["user_coverage"] <= 1
    assert m["baselines"]["popularity"]["novelty"] < m["novelty"]  # the model reaches past the head
    assert m["fairness"]["largest"] in ("gender", "age", "activity")
    assert set(m["ablations"]) == {"no_sentiment", "no_social"}
    # every metric with its interval; every comparison with a paired test and a verdict
    for key in ("rmse", "mae", "ndcg@10", "precision@10"):
        lo, hi = m["ci"][key]
        assert lo < m[key] < hi
    assert set(m["significance"]) == {"global_mean", "popularity", "bias", "no_sentiment", "no_social"}
    assert m["significance"]["global_mean"]["rmse"]["p_value"] < 0.05
    assert m["significance"]["global_mean"]["verdict"].startswith("global_mean: the model is better")
    for name, t in m["significance"].items():
        assert 0 < t["rmse"]["p_value"] <= 1 and t["verdict"].startswith(name)
    assert "activity=new (no training ratings)" in m["groups"] or m["data"]["users"] == 3000
    assert all("significant" in e["ndcg@10"] for c, e in m["fairness"].items() if c != "largest")
    # the report: every section, every plot a real PNG, the same numbers as metrics.json
    rep = tmp_path / "rep"
    md = (rep / "report.md").read_text()
    for section in ("## Summary", "## Accuracy", "## Beyond accuracy", "## Fairness", "Training and validation loss",
                    "Precision@K", "popularity decile", "per user group", "Is the difference real?",
                    "95% CI", "Hyperparameters: factors 32", "Data: 99,", "Date: "):
        assert section in md, section
    assert m["significance"]["no_social"]["verdict"] in md
    for png in ("learning_curves.png", "accuracy.png", "precision_recall.png", "long_tail.png", "groups.png"):
        data = (rep / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
        assert f"]({png})" in md
    for key in ("rmse", "ndcg@10", "novelty", "coverage"):
        assert f"{m[key]:.4f}" in md, key
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "src='http" not in html  # self-contained
    assert f"{m['rmse']:.4f}" in html
    # compare with that run: every delta is zero
    r = run_cli("evaluate", "--config", CFG, "--compare", str(rep / "metrics.json"), f"workdir={demo_workdir}")
    assert r.returncode == 0 and "delta" in r.stdout and "+0.0000" in r.stdout
    r = run_cli("evaluate", "--config", CFG, "--compare", "no-such-version", f"workdir={demo_workdir}")
    assert r.returncode == 78 and "no-such-version" in r.stderr


def test_status_and_rerun_skips_fresh_stages(demo_workdir):
    r = run_cli("status", "--config", CFG, f"workdir={demo_workdir}")
    assert r.returncode == 0 and "sentiment  fresh" in r.stdout and "current model: 2" in r.stdout
    r = run_cli("sentiment", "--config", CFG, f"workdir={demo_workdir}")
    assert r.returncode == 0 and "sentiment: fresh, skipped" in r.stderr
    r = run_cli("status", "--config", CFG, f"workdir={demo_workdir}", "model.factors=8")
    assert "train      stale" in r.stdout and "fuse       fresh" in r.stdout


def test_user_with_reviews_but_no_ratings_gets_feature_based_list(demo_workdir):
    ratings = pd.read_csv(ROOT / "data" / "demo" / "ratings.csv", dtype=str)
    reviews = pd.read_csv(ROOT / "data" / "demo" / "reviews.csv", dtype=str)
    cold = sorted(set(reviews.user_id) - set(ratings.user_id))
    assert len(cold) >= 10
    out = json.loads(run_cli("recommend", "--config", CFG, "--user", cold[0], "--format", "json",
                             f"workdir={demo_workdir}").stdout)
    assert out["fallback"] == "features" and len(out["items"]) == 10
    pop = json.loads(run_cli("recommend", "--config", CFG, "--user", "nobody", "--format", "json",
                             f"workdir={demo_workdir}").stdout)
    assert [it["movie_id"] for it in out["items"]] != [it["movie_id"] for it in pop["items"]]
