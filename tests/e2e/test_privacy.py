"""privacy.pseudonymize_ids: no raw user id, and no review text, anywhere in the workdir."""

import json
import re

import pandas as pd
import pytest

from tests.conftest import make_data, run_cli, tiny_classifier, write_config

KEY = {"MOVIEREC_ID_KEY": "a-long-secret-key-for-tests"}


@pytest.fixture(scope="module")
def private_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("private")
    data = make_data(base / "data")
    r = pd.read_csv(data / "ratings.csv", dtype=str)  # movie_id first: a ragged line's text is not an id column
    r[["movie_id", "user_id", "rating", "timestamp"]].to_csv(data / "ratings.csv", index=False)
    with open(data / "ratings.csv", "a") as fh:  # ragged lines: quarantined without their text
        fh.write("m00001,u00007\nm00002,u00008,4,1234567890,extra\n")
    model = tiny_classifier(base / "tiny")
    cfg = write_config(base / "config.yaml", data, base / "work",
                       sentiment={"enabled": True, "model": str(model)},
                       privacy={"pseudonymize_ids": True})
    res = run_cli("-v", "train", "--config", str(cfg), env=KEY)
    assert res.returncode == 0, res.stderr
    return cfg, data, base / "work", res.stderr


def _all_bytes(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "lock"}


def test_no_raw_id_or_text_in_any_artifact_model_or_log(private_run):
    cfg, data, work, log = private_run
    ratings = pd.read_csv(data / "ratings.csv", dtype=str, on_bad_lines="skip")
    reviews = pd.read_csv(data / "reviews.csv", dtype=str)
    raw_ids = set(ratings["user_id"]) | set(pd.read_csv(data / "users.csv", dtype=str)["user_id"])
    # the distinctive review texts (long ones: short phrases like "Meh." can occur by chance)
    texts = [t for t in reviews["text"].dropna().unique() if len(t) > 40][:200]
    assert len(raw_ids) > 100 and len(texts) > 50
    files = _all_bytes(work)
    q = pd.read_csv(work / "quarantine" / "ratings.csv", dtype=str)
    assert q["reason"].str.contains("fields").sum() == 2
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "model.npz" for p in files)
    id_pattern = re.compile(rb"|".join(re.escape(i.encode()) for i in sorted(raw_ids, key=len, reverse=True)))
    for path, blob in files.items():
        # a parquet file's raw bytes are compressed: a snappy tag byte 0x75 ('u') before the
        # hex digits of a hash reads as "u00019" by chance; its decoded columns are checked below
        hit = None if path.suffix == ".parquet" else id_pattern.search(blob)
        assert hit is None, f"raw user id {hit.group()!r} in {path}"
        for t in texts:
            assert t.encode() not in blob, f"review text in {path}"
    # parquet pages are compressed: read the tables back too
    for path in files:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            for col in df.columns:
                if df[col].dtype == object and col != "features":  # features: float16 embeddings
                    vals = set(df[col].dropna().astype(str))
                    hit = id_pattern.search("\n".join(vals).encode())
                    assert hit is None, f"raw id {hit.group()!r} in {path}:{col}"
                    assert not (vals & set(texts)), f"texts in {path}:{col}"
    assert not id_pattern.search(log.encode())
    users = pd.read_parquet(work / "artifacts" / "user_ids.parquet")["user_id"]
    assert users.str.fullmatch(r"p[0-9a-f]{32}").all()
    # the sentiment cache holds hashes, scores, text features (float16 numbers) and language
    # codes only
    cache = pd.read_parquet(work / "cache" / "sentiment.parquet")
    assert list(cache.columns) == ["key", "sentiment", "features", "language"] and len(cache) > 50
    feats = cache["features"].dropna()
    assert len(feats) > 50 and feats.map(len).nunique() == 1 and feats.map(len).iloc[0] % 2 == 0
    assert cache["language"].dropna().str.fullmatch(r"[a-z]{2,3}").all()


def test_recommend_and_feedback_hash_the_given_id(private_run):
    cfg, data, work, _ = private_run
    raw = pd.read_csv(data / "ratings.csv", dtype=str, on_bad_lines="skip")["user_id"].iloc[0]
    res = run_cli("recommend", "--config", str(cfg), "--user", raw, "--format", "json", env=KEY)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["fallback"] is None and out["user_id"] != raw and out["user_id"].startswith("p")
    assert len(out["items"]) == 10
    res = run_cli("feedback", "--config", str(cfg), "--user", raw, "--movie", "m00001", "--rating", "5", env=KEY)
    assert res.returncode == 0, res.stderr
    assert raw.encode() not in (work / "feedback" / "events.jsonl").read_bytes()
    # without the key: a clear configuration error, nothing guessed
    res = run_cli("recommend", "--config", str(cfg), "--user", raw, env={"MOVIEREC_ID_KEY": ""})
    assert res.returncode == 78 and "MOVIEREC_ID_KEY" in res.stderr


def test_another_key_at_recommend_is_a_clear_error(private_run):
    cfg, data, work, _ = private_run
    raw = pd.read_csv(data / "ratings.csv", dtype=str, on_bad_lines="skip")["user_id"].iloc[0]
    res = run_cli("recommend", "--config", str(cfg), "--user", raw, env={"MOVIEREC_ID_KEY": "another-long-secret-key"})
    assert res.returncode == 78 and "another key" in res.stderr and raw not in res.stderr
    res = run_cli("recommend", "--config", str(cfg), "--user", raw, "privacy.pseudonymize_ids=false")
    assert res.returncode == 78 and "pseudonymous ids" in res.stderr
    # feedback with another key would be an event of nobody: refused, the log untouched
    log_path = work / "feedback" / "events.jsonl"
    before = log_path.read_bytes() if log_path.exists() else b""
    res = run_cli("feedback", "--config", str(cfg), "--user", raw, "--movie", "m00001", "--rating", "5",
                  env={"MOVIEREC_ID_KEY": "another-long-secret-key"})
    assert res.returncode == 78 and "another key" in res.stderr and raw not in res.stderr
    assert (log_path.read_bytes() if log_path.exists() else b"") == before
    # a nightly run with a mistyped key would re-hash every id and promote a model nobody can
    # reach: it stops before ingest, nothing written, the serving version unchanged
    serving = (work / "models" / "current").read_text()
    manifests = {p.name: p.read_bytes() for p in (work / "manifests").iterdir()}
    res = run_cli("run", "--config", str(cfg), env={"MOVIEREC_ID_KEY": "another-long-secret-key"})
    assert res.returncode == 78 and "another key" in res.stderr and raw not in res.stderr
    assert (work / "models" / "current").read_text() == serving
    assert {p.name: p.read_bytes() for p in (work / "manifests").iterdir()} == manifests


def test_errors_never_echo_a_raw_id(tmp_path):
    """A ratings file without its header: the columns found are the first data row."""
    data = make_data(tmp_path / "data", n_users=50, n_movies=30)
    r = pd.read_csv(data / "ratings.csv", dtype=str, on_bad_lines="skip")
    r.to_csv(data / "ratings.csv", index=False, header=False)
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "work", privacy={"pseudonymize_ids": True})
    res = run_cli("-v", "ingest", "--config", str(cfg), env=KEY)
    assert res.returncode == 65 and "missing required column" in res.stderr
    assert r["user_id"].iloc[0] not in res.stderr
    res = run_cli("ingest", "--config", str(cfg), "privacy.pseudonymize_ids=false")
    assert res.returncode == 65 and r["user_id"].iloc[0] in res.stderr  # without privacy the row helps


def test_service_serves_and_logs_pseudonyms_only(private_run, monkeypatch):
    """The Python API (and so the HTTP service) takes raw ids, and the exposure and feedback
    logs it writes hold only pseudonyms."""
    cfg, data, work, _ = private_run
    monkeypatch.setenv("MOVIEREC_ID_KEY", KEY["MOVIEREC_ID_KEY"])
    from movierec.config import load_config
    from movierec.registry import Registry
    from movierec.service import Service

    version = Registry.of(load_config(cfg)).current_name()
    svc = Service(load_config(cfg, ["serve.experiment.name=p", f"serve.experiment.versions=[{version},current]"]))
    out = svc.recommend("u00003", n=5)
    assert len(out["items"]) == 5 and out["fallback"] is None and out["user_id"] != "u00003"
    svc.feedback("u00003", out["items"][0]["movie_id"], rating=5)
    assert out["items"][0]["movie_id"] not in [i["movie_id"] for i in svc.recommend("u00003", n=5)["items"]]
    for p in (work / "serve" / "exposures.jsonl", work / "feedback" / "events.jsonl"):
        blob = p.read_bytes()
        assert out["user_id"].encode() in blob and b"u00003" not in blob, p
