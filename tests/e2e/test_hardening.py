"""Hardening: every bad input a clear error, no value that silently breaks a night."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from movierec.registry import Registry
from tests.conftest import ROOT, call, make_data, run_cli, write_config


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("hard")
    data = make_data(base / "data", n_users=150, n_movies=80, seed=3)
    cfg = write_config(base / "c.yaml", data, base / "work", model={"factors": 4, "epochs": 10},
                       refresh={"max_rmse_increase": 10.0, "max_ndcg_drop": 1.0})
    assert call("run", "--config", str(cfg)) == 0
    return cfg, data, base / "work"


def copy_site(tmp_path, data):
    import shutil

    d = tmp_path / "data"
    shutil.copytree(data, d)
    cfg = write_config(tmp_path / "c.yaml", d, tmp_path / "work", model={"factors": 4, "epochs": 10})
    return cfg, d, tmp_path / "work"


# ----------------------------------------------------------------------------- input files
def test_duplicate_header_and_a_folder_for_a_file_exit_65(tmp_path, site, capsys):
    cfg, d, _ = copy_site(tmp_path, site[1])
    r = pd.read_csv(d / "ratings.csv", dtype=str)
    r.assign(extra=r["rating"]).rename(columns={"extra": "rating"}).to_csv(d / "ratings.csv", index=False)
    assert call("ingest", "--config", str(cfg)) == 65
    err = capsys.readouterr().err
    assert "'rating' 2 times" in err and "unexpected" not in err
    (d / "ratings.csv").unlink()
    (d / "ratings.csv").mkdir()
    assert call("ingest", "--config", str(cfg)) == 65
    assert "no .csv or .parquet part files" in capsys.readouterr().err


def test_ragged_rows_get_real_line_numbers_with_quoted_newlines(tmp_path):
    from movierec.data.readers import read_table
    from movierec.data.schemas import REVIEWS

    p = tmp_path / "reviews.csv"
    p.write_text('user_id,movie_id,text\nu1,m1,"two\nlines"\nu2,m2\nu3,m3,"fine"\nu4,m4,x,y\n')
    q = read_table(p, REVIEWS).quarantine
    assert q["reason"].tolist() == ["line 4: too few fields (2 of 3; truncated line?)",
                                    "line 6: wrong number of fields (4, expected 3)"]


def test_an_absurd_rating_is_quarantined_and_a_0_to_100_scale_trains(tmp_path, site, capsys):
    cfg, d, work = copy_site(tmp_path, site[1])
    r = pd.read_csv(d / "ratings.csv")
    r["rating"] = r["rating"].astype(float)
    r.loc[3, "rating"], r.loc[5, "rating"] = 1e30, -2
    r.to_csv(d / "ratings.csv", index=False)
    assert call("train", "--config", str(cfg)) == 0, capsys.readouterr().err
    q = pd.read_csv(work / "quarantine" / "ratings.csv")
    assert sorted(q["row"]) == [4, 6] and q["reason"].str.contains("outside the scale").all()
    assert Registry(work / "models").current().meta["rating_scale"] == {"min": 1.0, "max": 5.0}
    # a legitimate 0-100 scale: learned, trained without divergence, predictions on it
    r = pd.read_csv(site[1] / "ratings.csv")
    r.assign(rating=(r["rating"] - 1) * 25).to_csv(d / "ratings.csv", index=False)
    assert call("train", "--config", str(cfg)) == 0, capsys.readouterr().err
    v = Registry(work / "models").current()
    assert v.meta["rating_scale"] == {"min": 0.0, "max": 100.0}
    out = json.loads(run_cli("evaluate", "--config", str(cfg), "--format", "json", "evaluate.ablations=[]").stdout)
    assert out["rmse"] < out["baselines"]["global_mean"]["rmse"] and 5 < out["rmse"] < 40
    rec = json.loads(run_cli("recommend", "--config", str(cfg), "--user", "u00001", "--format", "json").stdout)
    assert all(0 <= it["predicted_rating"] <= 100 for it in rec["items"])


def test_run_stops_when_the_rating_scale_changes(tmp_path, site):
    cfg, d, work = copy_site(tmp_path, site[1])
    assert call("run", "--config", str(cfg)) == 0
    r = pd.read_csv(d / "ratings.csv")
    r.assign(rating=r["rating"] * 2).to_csv(d / "ratings.csv", index=False)
    assert call("run", "--config", str(cfg)) == 65
    last = json.loads((work / "runs" / "last.json").read_text())
    assert last["outcome"] == "failed" and "rating scale changed from 1..5 to 2..10" in last["error"]
    assert call("run", "--config", str(cfg), "refresh.max_scale_change=10", "refresh.max_rmse_increase=100",
                "refresh.max_ndcg_drop=1") == 0


def test_a_huge_trust_weight_is_clipped(tmp_path, site, capsys):
    cfg, d, work = copy_site(tmp_path, site[1])
    s = pd.read_csv(d / "social.csv")
    s["weight"] = 1.0
    s.loc[0, "weight"] = 1e308
    s.to_csv(d / "social.csv", index=False)
    assert call("train", "--config", str(cfg), "model.social_reg=0.1") == 0, capsys.readouterr().err
    m = json.loads((work / "manifests" / "clean.json").read_text())
    assert m["stats"]["trust_weights_clipped"] == 1
    w = pd.read_parquet(work / "artifacts" / "social_clean.parquet")["weight"]
    assert np.isfinite(w).all() and w.max() == 1.0 and w.min() == pytest.approx(0.1)  # 1e308 -> 10x the median


def test_a_600_kb_review_is_cut_and_counted(caplog):
    from movierec.config import SentimentConfig
    from movierec.stages.sentiment import sentiment

    seen = []

    class Recommender:
        model_id = "zeros"

        def score(self, texts):
            seen.extend(len(t) for t in texts)
            return np.zeros(len(texts), np.float32)

        def score_features(self, texts):
            return self.score(texts), None

    reviews = pd.DataFrame({"review_id": [0, 1], "user_idx": [0, 1], "movie_idx": [0, 0],
                            "text": ["great " * 100_000, "fine film"]})
    with caplog.at_level("WARNING"):
        sentiment(reviews, None, Recommender, SentimentConfig(max_chars=5000))
    assert max(seen) == 5000 and "1 texts longer than sentiment.max_chars" in caplog.text


# ----------------------------------------------------------------------------- interaction inputs
def test_feedback_is_validated_at_the_command_and_by_the_run(tmp_path, site, capsys):
    cfg, d, work = copy_site(tmp_path, site[1])
    assert call("run", "--config", str(cfg)) == 0
    assert call("feedback", "--config", str(cfg), "--user", "u00001", "--movie", "m00001", "--rating", "9") == 65
    assert "outside the rating scale 1..5" in capsys.readouterr().err
    assert call("feedback", "--config", str(cfg), "--user", "u00001", "--movie", "zzz", "--rating", "4") == 65
    assert "'zzz' is not in the catalogue" in capsys.readouterr().err
    assert not (work / "feedback" / "events.jsonl").exists()
    # events that reach the log some other way are quarantined by the run, never trained on
    from movierec.feedback import append_event

    append_event(work, "u00001", "m00002", rating=9)
    append_event(work, "u00001", "zzz", rating=4)
    assert call("run", "--config", str(cfg), "refresh.max_rmse_increase=100", "refresh.max_ndcg_drop=1") == 0
    q = pd.read_csv(work / "quarantine" / "feedback.csv")
    assert len(q) == 2 and set(q["reason"]) == {"rating outside the rating scale 1..5, learned from the data",
                                                 "movie found in no input file"}
    mids = pd.read_parquet(work / "artifacts" / "movie_ids.parquet")["movie_id"]
    assert "zzz" not in set(mids)


def test_fold_in_ratings_are_checked(tmp_path, site):
    cfg, data, work = site
    cases = {
        "inf.csv": ("movie_id,rating\nm00001,inf\n", "not a finite number"),
        "huge.csv": ("movie_id,rating\nm00001,1e9\n", "outside the model's rating scale 1..5"),
        "seventy.csv": ("movie_id,rating\nm00001,70\n", "outside the model's rating scale"),
        "semi.csv": ("movie_id;rating\nm00001;5\n", "semicolon-separated"),
        "empty.csv": ("", "the file is empty"),
        "header.csv": ("movie_id,rating\n", "no ratings"),
        "unknown.csv": ("movie_id,rating\nzzz,5\nyyy,4\n", "none of the 2 movies"),
    }
    for name, (text, msg) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        r = run_cli("recommend", "--config", str(cfg), "--user", "newbie", "--ratings", str(p))
        assert r.returncode == 65 and msg in r.stderr, (name, r.stderr)
    # the configured delimiter is applied
    r = run_cli("recommend", "--config", str(cfg), "--user", "newbie", "--ratings", str(tmp_path / "semi.csv"),
                "--format", "json", "data.delimiter=;")
    assert r.returncode == 0 and json.loads(r.stdout)["fallback"] == "fold-in"
    # a known user's --ratings join their history (not replace it), and come back explained
    p = tmp_path / "more.csv"
    p.write_text("movie_id,rating\nm00003,5\nm00004,5\n")
    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001", "--ratings", str(p), "--format", "json",
                "--explain")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["fallback"] is None and out["ratings_given"] == 2
    assert not {"m00003", "m00004"} & {it["movie_id"] for it in out["items"]}
    assert any(it["evidence"] for it in out["items"])
    # a new user's fold-in is explained from the ratings given
    p.write_text("movie_id,rating\n" + "".join(f"m{i:05d},{1 + i % 5}\n" for i in range(20)))
    out = json.loads(run_cli("recommend", "--config", str(cfg), "--user", "newbie", "--ratings", str(p),
                             "--format", "json", "--explain").stdout)
    assert out["fallback"] == "fold-in" and any(it["evidence"].get("similar_rated") for it in out["items"])


def test_recommend_options_are_supported_or_refused(site, tmp_path):
    cfg, data, work = site
    for args, msg in ((["--user", "u00001", "-n", "0"], "-n"), (["--user", "u00001", "-n", "-5"], "-n"),
                      (["--all", "--output", str(tmp_path / "x.json")], ".csv or .parquet"),
                      (["--all", "--output", str(tmp_path / "x.csv"), "--explain"], "--explain"),
                      (["--user", "u00001", "--output", str(tmp_path / "x.csv")], "--output is for --all")):
        r = run_cli("recommend", "--config", str(cfg), *args)
        assert r.returncode == 2 and msg in r.stderr, (args, r.stderr)
    # --output - and /dev/stdout: CSV on stdout, and /dev/stdout stays what it was
    before = os.lstat("/dev/stdout")
    for out in ("-", "/dev/stdout"):
        r = run_cli("recommend", "--config", str(cfg), "--all", "--output", out, "-n", "2")
        assert r.returncode == 0 and r.stdout.splitlines()[0] == "user_id,rank,movie_id,predicted_rating,rank_score"
        # two movies for each user with two unseen; none for those who rated or reviewed all
        seen = Registry(work / "models").load().seen
        unseen = seen.shape[1] - np.diff(seen.indptr)
        assert len(r.stdout.splitlines()) == 1 + int(np.minimum(unseen, 2).sum()) and unseen.min() == 0
    assert os.lstat("/dev/stdout").st_mode == before.st_mode


def test_closed_stdout_is_not_an_error(site):
    cfg, data, work = site
    cmd = (f"{sys.executable} -m movierec recommend --config {cfg} --all --output - -n 50 | head -1; "
           "echo rc=${PIPESTATUS[0]}")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.stdout.strip().endswith("rc=0") and "Error" not in r.stderr and "Traceback" not in r.stderr


def test_rollback_takes_overrides_after_the_config(site):
    cfg, data, work = site
    r = run_cli("models", "rollback", "--config", str(cfg), f"workdir={work}")
    assert "no model version 'workdir=" not in r.stderr
    assert r.returncode == 1 and "no earlier good model version" in r.stderr


# ----------------------------------------------------------------------------- files, disk, processes
def test_last_run_records_stages_that_ran_and_failures_of_any_kind(tmp_path, site):
    cfg, d, work = copy_site(tmp_path, site[1])
    assert call("run", "--config", str(cfg)) == 0
    last = json.loads((work / "runs" / "last.json").read_text())
    assert last["stages"] == {s: "ran" for s in ("ingest", "clean", "sentiment", "social", "fuse", "train")}
    r = pd.read_csv(d / "ratings.csv")
    pd.concat([r, r.head(30).assign(user_id="x" + r.user_id.head(30))]).to_csv(d / "ratings.csv", index=False)
    res = run_cli("run", "--config", str(cfg), env={"MOVIEREC_FAILPOINT": "write_version"})
    assert res.returncode == 1 and "train: cannot write" in res.stderr and "No space left" in res.stderr
    last = json.loads((work / "runs" / "last.json").read_text())
    assert last["outcome"] == "failed" and "No space left" in last["error"]


def test_durable_writes_are_fsynced_and_readable_by_the_umask(tmp_path, monkeypatch):
    """What must survive a power loss is fsynced (file, then folder); derived stage artifacts
    and manifests are not (their size in the manifest catches a lost one)."""
    from movierec import catalog

    synced = []
    real = os.fsync
    monkeypatch.setattr(catalog.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    old = os.umask(0o022)
    try:
        catalog.write_json({"a": 1}, tmp_path / "x.json")
        assert len(synced) == 2  # the file, then its folder
        cat = catalog.Catalog(tmp_path / "work")
        entry = cat.write("ratings_clean", pd.DataFrame({"user_idx": [1], "movie_idx": [2]}))
        cat.write_manifest("clean", {}, "h", {"ratings_clean": entry}, 1.0)
        assert len(synced) == 2 and entry["bytes"] == cat.path("ratings_clean").stat().st_size
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
    assert cat.path("ratings_clean").stat().st_mode & 0o777 == 0o644


def test_temporary_files_are_swept_under_every_locked_command(tmp_path, site):
    from movierec.sentiment.encoder import sweep_exports

    cfg, d, work = copy_site(tmp_path, site[1])
    (work / "models" / ".tmp-x-1").mkdir(parents=True)
    (work / "artifacts").mkdir(parents=True)
    (work / "artifacts" / ".ratings_raw.parquet.k2x_9abq.tmp").write_text("half")  # as mkstemp names it
    (work / "artifacts" / ".notes.tmp").write_text("an operator's")
    assert call("ingest", "--config", str(cfg)) == 0
    assert not (work / "models" / ".tmp-x-1").exists()
    assert not (work / "artifacts" / ".ratings_raw.parquet.k2x_9abq.tmp").exists()
    assert (work / "artifacts" / ".notes.tmp").read_text() == "an operator's"
    old, fresh = tmp_path / "onnx" / ".export-old", tmp_path / "onnx" / ".export-new"
    old.mkdir(parents=True)
    fresh.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert sweep_exports(tmp_path / "onnx") == 1 and not old.exists() and fresh.exists()


def test_sentiment_cache_is_checkpointed_while_scoring(tmp_path):
    from tests.conftest import tiny_classifier

    data = make_data(tmp_path / "data", n_users=30, n_movies=30, seed=2)
    model = tiny_classifier(tmp_path / "tiny")
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "work",
                       sentiment={"enabled": True, "model": str(model), "checkpoint_every": 300})
    r = run_cli("sentiment", "--config", str(cfg), env={"MOVIEREC_FAILPOINT": "sentiment_checkpoint"})
    assert r.returncode < 0  # killed right after its first checkpoint
    r = run_cli("sentiment", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "work" / "manifests" / "sentiment.json").read_text())
    assert m["distinct_texts"] > 600 and m["texts_scored_by_model"] == m["distinct_texts"] - 300
    assert not (tmp_path / "work" / "cache" / "sentiment.parts").exists()
    # a cache file torn since (a disk, a copy): set aside, named, its texts scored again
    cache = tmp_path / "work" / "cache" / "sentiment.parquet"
    cache.write_bytes(cache.read_bytes()[:4000])
    r = run_cli("sentiment", "--force", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert f"the score cache file {cache} cannot be read" in r.stderr
    assert (cache.parent / "sentiment.parquet.damaged").exists()
    m = json.loads((tmp_path / "work" / "manifests" / "sentiment.json").read_text())
    assert m["texts_scored_by_model"] == m["distinct_texts"] and len(pd.read_parquet(cache)) >= m["distinct_texts"]


def test_quantizer_log_lines_stay_out_of_the_log(caplog):
    import logging

    from movierec.sentiment.encoder import _quiet_root_logging

    with caplog.at_level(logging.INFO):
        with _quiet_root_logging():
            logging.info("Quantization parameters for tensor ...")
            logging.warning("Please consider to run pre-processing before quantization")
        logging.getLogger("movierec").info("kept")
    assert "Quantization" not in caplog.text and "pre-processing" not in caplog.text and "kept" in caplog.text


# ----------------------------------------------------------------------------- dependencies
def test_declared_dependencies_cover_every_import_and_pin_safe_versions():
    import ast
    import tomllib
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    assert not reqs["pyarrow"].specifier.contains("14.0.0")  # CVE-2023-47248
    optional = {Requirement(r).name.lower() for extra in project["optional-dependencies"].values() for r in extra}
    dists = packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = set()
    for f in (ROOT / "src" / "movierec").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top == "movierec":
                    continue
                owners = {d.lower() for d in dists.get(top, [top])}
                declared = set(reqs) | optional
                # an optional extra that is not installed here (mlflow from mlflow-skinny)
                if not owners & declared and not any(r.startswith(top + "-") for r in optional):
                    missing.add(f"{top} ({f.name})")
    assert not missing, missing


def test_embedded_weights_are_checked_against_the_shipped_digest(tmp_path):
    from movierec.errors import ConfigError
    from movierec.sentiment.encoder import embedded_model_path, verify_embedded_weights

    real = embedded_model_path()  # passes
    fake = tmp_path / "model"
    fake.mkdir()
    for f in real.iterdir():
        if f.is_file():
            (fake / f.name).symlink_to(f)
    (fake / "config.json").unlink()
    (fake / "config.json").write_text((real / "config.json").read_text().replace("384", "385"))
    with pytest.raises(ConfigError, match="config.json is not the file"):
        verify_embedded_weights(fake)


def test_hub_models_put_their_revision_in_the_cache_key():
    from movierec.config import SentimentConfig
    from movierec.sentiment.scorers import model_key

    a = model_key(SentimentConfig(model="org/some-model", revision="abc123"))
    b = model_key(SentimentConfig(model="org/some-model", revision="def456"))
    assert "abc123" in a and a != b


def test_imported_data_folders_are_ignored_by_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    r = subprocess.run(["git", "check-ignore", "-q", "data/rt-critics/critics.csv"], cwd=ROOT)
    assert r.returncode == 0
    r = subprocess.run(["git", "check-ignore", "-q", "data/demo/ratings.csv"], cwd=ROOT)
    assert r.returncode == 1


# ----------------------------------------------------------------------------- fuzzing: headers, scales, weights
HEADERS = ["user_id,movie_id,rating", "rating,movie_id,user_id", "user_id,movie_id,rating,rating",
           "user_id,user_id,movie_id,rating", "movie_id,rating", "user_id,movie_id,rating,extra", "USER_ID,movie_id,rating"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(header=HEADERS[0], scale=(1, 5, 1.0), outliers=[], weights=[1e308, 1e308, 1e308])  # float32 overflow
@given(header=st.sampled_from(HEADERS),
       scale=st.sampled_from([(1, 5, 1.0), (0.5, 5, 0.5), (1, 10, 1.0), (0, 100, 1.0), (-10, 10, 0.5)]),
       outliers=st.lists(st.sampled_from([1e30, -1e30, 1e6, -999.0]), max_size=3),
       weights=st.lists(st.sampled_from([1.0, 0.5, 1e308, 0.0, -1.0, 7.0]), min_size=1, max_size=6))
def test_headers_scales_and_weights_never_crash(tmp_path_factory, header, scale, outliers, weights):
    tmp = tmp_path_factory.mktemp("fuzz2")
    data = tmp / "data"
    data.mkdir()
    rng = np.random.default_rng(len(outliers) + len(weights))
    lo, hi, step = scale
    n = 400
    values = lo + step * rng.integers(0, int((hi - lo) / step) + 1, n)
    values[: len(outliers)] = outliers
    cols = header.split(",")
    row = {"user_id": lambda i: f"u{i % 40}", "movie_id": lambda i: f"m{i % 60}", "rating": lambda i: f"{values[i]:g}",
           "extra": lambda i: "x", "USER_ID": lambda i: f"u{i % 40}"}
    body = "\n".join(",".join(row[c](i) for c in cols) for i in range(n))
    (data / "ratings.csv").write_text(header + "\n" + body + "\n")
    ties = "user_id,friend_id,weight\nu20,u21,1\nu22,u23,2\nu24,u25,1\n" + "".join(
        f"u{k},u{k + 1},{w:g}\n" for k, w in enumerate(weights))
    (data / "social.csv").write_text(ties)
    cfg = write_config(tmp / "c.yaml", data, tmp / "w", data={"max_bad_fraction": 0.7})
    code = call("social", "--config", str(cfg))
    assert code in (0, 65)
    valid_header = cols.count("user_id") == 1 and cols.count("rating") == 1 and "movie_id" in cols
    assert (code == 0) == valid_header
    if code == 0:
        r = pd.read_parquet(tmp / "w" / "artifacts" / "ratings_clean.parquet")["rating"]
        assert r.min() >= lo and r.max() <= hi  # every outlier was set aside
        s = pd.read_parquet(tmp / "w" / "artifacts" / "social_clean.parquet")["weight"] \
            if (tmp / "w" / "artifacts" / "social_clean.parquet").exists() else pd.Series([1.0])
        assert np.isfinite(s).all() and (s > 0).all()
