"""`movierec run` as cron runs it: incremental, gated, versioned, safe under faults."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from movierec.pipeline import workdir_lock
from movierec.registry import Registry
from tests.conftest import clone_site, make_data, run_cli, tiny_classifier, tree_snapshot, write_config


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return tiny_classifier(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def trained_site(tmp_path_factory, tiny_model):
    """Small data with every file, a fast local sentiment model, one promoted model."""
    base = tmp_path_factory.mktemp("site")
    data = make_data(base / "data", n_users=200, n_movies=100, seed=5)
    reviews = pd.read_csv(data / "reviews.csv")  # 2,000 of its 8,229 reviews: every run scores fewer texts
    reviews.head(2000).to_csv(data / "reviews.csv", index=False)
    cfg = write_config(base / "c.yaml", data, base / "work",
                       sentiment={"enabled": True, "model": str(tiny_model)},
                       model={"factors": 8, "epochs": 15, "social_reg": 0.05},
                       refresh={"keep": 3})
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    return cfg


@pytest.fixture
def site(tmp_path, trained_site):
    """A test's own copy of the trained site."""
    return clone_site(trained_site, tmp_path / "site")


def current(work: Path) -> str:
    return (work / "models" / "current").read_text().strip()


def versions(work: Path) -> list[str]:
    return [v.name for v in Registry(work / "models").versions()]


def recommends(cfg) -> bool:
    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001", "--format", "json")
    return r.returncode == 0 and len(json.loads(r.stdout)["items"]) == 10


def add_ratings(data: Path, n: int = 300, seed: int = 0) -> None:
    r = pd.read_csv(data / "ratings.csv")
    extra = r.sample(n, random_state=seed).assign(user_id=lambda d: "new" + d.user_id)
    pd.concat([r, extra]).to_csv(data / "ratings.csv", index=False)


def test_unchanged_data_does_no_work_and_new_data_retrains(site):
    cfg, data, work = site
    v1 = current(work)
    assert json.loads((work / "models" / v1 / "gate.json").read_text())["status"] == "promoted"
    assert {"run.json", "metrics.json", "model.npz", "holdout.npz", "config.yaml", "features.json", "seen.npz",
            "neighbours.parquet", "genre_sentiment.parquet", "meta.json"} <= {
        p.name for p in (work / "models" / v1).iterdir()}
    t0 = time.perf_counter()
    r = run_cli("--log-format", "json", "run", "--config", str(cfg))
    assert r.returncode == 0 and "nothing changed" in r.stderr
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert {"time", "level", "message"} <= set(lines[0]) and any("ingest" in x["message"] for x in lines)
    assert time.perf_counter() - t0 < 15 and versions(work) == [v1]
    assert json.loads((work / "runs" / "last.json").read_text())["outcome"] == "unchanged"
    # only new reviews: only the new texts are scored, and the model is retrained
    rv = pd.read_csv(data / "reviews.csv")
    new = pd.DataFrame({"user_id": ["u00003"], "movie_id": ["m00004"], "text": ["a good film, truly"], "rating": [""],
                        "timestamp": [1]})
    pd.concat([rv, new]).to_csv(data / "reviews.csv", index=False)
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    m = json.loads((work / "manifests" / "sentiment.json").read_text())
    assert m["texts_scored_by_model"] == 1
    assert len(versions(work)) == 2
    r = run_cli("run", "--config", str(cfg), "refresh.retrain=always")
    assert r.returncode in (0, 3) and len(versions(work)) == 3


def test_gate_rejects_a_worse_model_and_keeps_current(site):
    cfg, data, work = site
    v1 = current(work)
    before = tree_snapshot(work / "models" / v1)
    r = run_cli("run", "--config", str(cfg), "model.factors=1", "model.epochs=1", "model.learning_rate=0.0001",
                "model.use_features=false", "model.early_stopping=false")
    assert r.returncode == 3, r.stderr
    assert "rejected by the quality gate" in r.stderr and "RMSE" in r.stderr
    assert current(work) == v1 and tree_snapshot(work / "models" / v1) == before
    rejected = [v for v in versions(work) if v != v1]
    assert len(rejected) == 1
    assert json.loads((work / "models" / rejected[0] / "gate.json").read_text())["status"] == "rejected"
    out = run_cli("models", "list", "--config", str(cfg), "--format", "json")
    rows = json.loads(out.stdout)
    assert [r["status"] for r in rows] == ["promoted", "rejected"] and rows[0]["current"]
    assert recommends(cfg)
    # status: the current model and its metrics, and why the last run did not promote
    st = json.loads(run_cli("status", "--config", str(cfg), "--format", "json").stdout)
    assert st["current_model"]["version"] == v1 and st["current_model"]["metrics"]["rmse"] > 0
    assert st["last_run"]["outcome"] == "rejected" and any("RMSE" in x for x in st["last_run"]["reasons"])
    assert set(st["stages"]) == {"ingest", "clean", "sentiment", "social", "fuse", "train"}
    table = run_cli("status", "--config", str(cfg)).stdout
    assert "last run: rejected" in table and f"current model: {v1}" in table and "rmse" in table


def test_rollback_and_retention(site):
    cfg, data, work = site
    v1 = current(work)
    for seed in range(3):  # every run retrains; the gate is loose so each is promoted
        add_ratings(data, 50, seed)
        r = run_cli("run", "--config", str(cfg), "refresh.max_rmse_increase=1", "refresh.max_ndcg_drop=1")
        assert r.returncode == 0, r.stderr
    vs = versions(work)
    assert len(vs) == 3 and v1 not in vs and current(work) == vs[-1]  # refresh.keep=3
    r = run_cli("models", "rollback", "--config", str(cfg))
    assert r.returncode == 0 and r.stdout.strip() == vs[-2] and current(work) == vs[-2]
    r = run_cli("models", "rollback", vs[-1], "--config", str(cfg))
    assert r.returncode == 0 and current(work) == vs[-1]
    r = run_cli("models", "rollback", "no-such-version", "--config", str(cfg))
    assert r.returncode == 1 and "no model version" in r.stderr and current(work) == vs[-1]
    assert recommends(cfg)


def test_second_run_exits_75_naming_the_holder(site):
    cfg, data, work = site
    with workdir_lock(work):
        r = run_cli("run", "--config", str(cfg))
    assert r.returncode == 75 and f"pid {os.getpid()}" in r.stderr


def test_two_runs_started_together_exactly_one_proceeds(site):
    cfg, data, work = site
    add_ratings(data)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, "-m", "movierec", "run", "--config", str(cfg)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 75], [p.stderr.read() for p in procs]


@pytest.mark.parametrize("point", ["sentiment", "train", "promote"])
def test_kill_9_leaves_current_serving_and_next_run_succeeds(site, point):
    cfg, data, work = site
    v1 = current(work)
    add_ratings(data)
    rv = pd.read_csv(data / "reviews.csv")
    rv.assign(text=rv.text + " again").to_csv(data / "reviews.csv", index=False)  # new texts to score
    r = run_cli("run", "--config", str(cfg), env={"MOVIEREC_FAILPOINT": point})
    assert r.returncode == -signal.SIGKILL
    assert current(work) == v1 and recommends(cfg)
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode in (0, 3), r.stderr
    assert "Traceback" not in r.stderr
    assert not list((work / "models").glob(".tmp-*")) and not list((work / "artifacts").glob(".*.tmp"))
    assert recommends(cfg)


def test_a_run_killed_just_after_the_switch_is_finished_by_the_next(site):
    """Killed after `current` names the new version and before it is marked promoted: it
    serves; the next run marks it promoted, records the last good input and applies
    retention, instead of calling that "nothing changed" forever."""
    cfg, data, work = site
    v1 = current(work)
    add_ratings(data)
    gate = ["refresh.max_rmse_increase=1", "refresh.max_ndcg_drop=1"]
    r = run_cli("run", "--config", str(cfg), *gate, env={"MOVIEREC_FAILPOINT": "switched"})
    assert r.returncode == -signal.SIGKILL
    v2 = current(work)
    assert v2 != v1 and recommends(cfg)
    assert json.loads((work / "models" / v2 / "gate.json").read_text())["status"] == "passed"
    good = work / "runs" / "last_good_input.json"
    before = good.read_bytes() if good.exists() else None
    r = run_cli("run", "--config", str(cfg), *gate)
    assert r.returncode == 0, r.stderr
    assert json.loads((work / "runs" / "last.json").read_text())["outcome"] == "promoted"
    assert json.loads((work / "models" / v2 / "gate.json").read_text())["status"] == "promoted"
    assert current(work) == v2 and good.exists() and good.read_bytes() != before


def test_a_damaged_serving_version_is_replaced_by_the_next_run(site):
    """A truncated model.npz under `current`: recommend fails clearly, and the next nightly run
    trains and promotes a new version (nothing in the data changed) instead of calling that
    "nothing changed"."""
    cfg, data, work = site
    v1 = current(work)
    model = work / "models" / v1 / "model.npz"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001")
    assert r.returncode == 1 and "damaged" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", "--config", str(cfg), "refresh.max_rmse_increase=1", "refresh.max_ndcg_drop=1")
    assert r.returncode == 0, r.stderr
    assert current(work) != v1 and recommends(cfg)
    assert "damaged" in json.loads((work / "runs" / "last.json").read_text()).get("serving_damaged", "") + r.stderr


def test_kill_9_at_a_random_moment(site):
    cfg, data, work = site
    v1 = current(work)
    add_ratings(data)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    p = subprocess.Popen([sys.executable, "-m", "movierec", "run", "--config", str(cfg)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(int(time.time())).uniform(1.0, 4.0))
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (work / "models" / current(work) / "model.npz").exists() and recommends(cfg)
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode in (0, 3), r.stderr
    assert current(work) in versions(work) and recommends(cfg)
    assert v1 in versions(work) or current(work) != v1


def test_disk_full_while_writing_a_version_keeps_current(site):
    cfg, data, work = site
    v1 = current(work)
    add_ratings(data)
    r = run_cli("run", "--config", str(cfg), env={"MOVIEREC_FAILPOINT": "write_version"})
    assert r.returncode == 1 and "No space left" in r.stderr and "Traceback" not in r.stderr
    assert current(work) == v1 and versions(work) == [v1] and not list((work / "models").glob(".tmp-*"))
    assert run_cli("run", "--config", str(cfg)).returncode in (0, 3)


def test_suspicious_input_stops_before_training(site):
    cfg, data, work = site
    v1 = current(work)
    r = pd.read_csv(data / "ratings.csv")
    r.head(len(r) // 4).to_csv(data / "ratings.csv", index=False)
    out = run_cli("run", "--config", str(cfg))
    assert out.returncode == 65 and "suspicious input" in out.stderr and "ratings rows fell" in out.stderr
    assert current(work) == v1 and versions(work) == [v1]
    # the operator accepts the smaller export explicitly
    out = run_cli("run", "--config", str(cfg), "refresh.min_rows_ratio=0", "refresh.max_rmse_increase=1",
                  "refresh.max_ndcg_drop=1")
    assert out.returncode == 0, out.stderr


def test_feedback_is_folded_in_and_never_lost(site):
    cfg, data, work = site
    assert run_cli("feedback", "--config", str(cfg), "--user", "fresh-user", "--movie", "m00001",
                   "--rating", "5").returncode == 0
    assert run_cli("feedback", "--config", str(cfg), "--user", "u00001", "--movie", "m00002",
                   "--comment", "a good film").returncode == 0
    assert run_cli("feedback", "--config", str(cfg), "--user", "u00001", "--movie", "m00003",
                   "--share-with", "u00002").returncode == 0
    assert run_cli("feedback", "--config", str(cfg), "--user", "u00001", "--movie", "m00003").returncode == 2
    log_before = (work / "feedback" / "events.jsonl").read_bytes()
    # a failed run (suspicious input) loses nothing
    r = pd.read_csv(data / "ratings.csv")
    r.head(10).to_csv(data / "ratings.csv", index=False)
    assert run_cli("run", "--config", str(cfg)).returncode == 65
    assert (work / "feedback" / "events.jsonl").read_bytes() == log_before
    r.to_csv(data / "ratings.csv", index=False)
    out = run_cli("run", "--config", str(cfg), "refresh.max_rmse_increase=1", "refresh.max_ndcg_drop=1")
    assert out.returncode == 0, out.stderr
    ids = pd.read_parquet(work / "artifacts" / "user_ids.parquet").set_index("user_id")["user_idx"]
    mids = pd.read_parquet(work / "artifacts" / "movie_ids.parquet").set_index("movie_id")["movie_idx"]
    ratings = pd.read_parquet(work / "artifacts" / "ratings_clean.parquet")
    fresh = ratings[ratings.user_idx == ids["fresh-user"]]
    assert fresh["rating"].tolist() == [5.0] and fresh["movie_idx"].tolist() == [mids["m00001"]]
    shared = ratings[(ratings.user_idx == ids["u00001"]) & (ratings.movie_idx == mids["m00003"])]
    assert len(shared) == 1 and shared["rating"].item() >= 4.0
    reviews = pd.read_parquet(work / "artifacts" / "reviews_clean.parquet")
    from movierec.privacy import key_of_text

    # artifacts hold the comment's hash, never its text
    assert ((reviews.user_idx == ids["u00001"]) & (reviews.text_key == key_of_text("a good film"))).sum() == 1
    social = pd.read_parquet(work / "artifacts" / "social_clean.parquet")
    a, b = ids["u00001"], ids["u00002"]
    tie = social[((social.user_idx == a) & (social.friend_idx == b)) | ((social.user_idx == b) & (social.friend_idx == a))]
    assert len(tie) == 1 and tie["weight"].item() > 0


def test_concurrent_feedback_writers_lose_nothing(tmp_path):
    work = tmp_path / "w"
    code = ("import sys; from movierec.feedback import append_event\n"
            "for i in range(100): append_event(sys.argv[1], 'u' + sys.argv[2], 'm%d' % i, rating=4, comment='x' * 5000)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(work), str(k)]) for k in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = (work / "feedback" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 400 and all(json.loads(line)["rating"] == 4.0 for line in lines)
