"""The HTTP service, the Python API and online A/B tests, on a small trained site."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import clone_site, make_data, run_cli, write_config

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'movierec[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from movierec.config import load_config  # noqa: E402

TOKEN = "t" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    data = make_data(base / "data")
    cfg = write_config(base / "config.yaml", data, base / "work", evaluate={"bootstrap_rounds": 50})
    r = run_cli("train", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    return cfg


@pytest.fixture
def fresh(site, tmp_path):
    """A copy of the trained site this test may change."""
    return clone_site(site, tmp_path / "site")[0]


def client(cfg_path, *overrides, token=TOKEN):
    from movierec.server import create_app

    if token is None:
        os.environ.pop("MOVIEREC_SERVE_TOKEN", None)
    else:
        os.environ["MOVIEREC_SERVE_TOKEN"] = token
    try:
        return TestClient(create_app(load_config(cfg_path, list(overrides))))
    finally:
        os.environ.pop("MOVIEREC_SERVE_TOKEN", None)


def cli_json(cfg, *args):
    r = run_cli("recommend", "--config", str(cfg), "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_lists_are_the_clis_and_errors_are_json(fresh):
    with client(fresh) as c:
        r = c.get("/users/u00003/recommendations", params={"n": 5, "explain": "true"})
        assert r.status_code == 200 and r.headers["x-model-version"] == r.json()["served_by"]["version"]
        assert r.json() == cli_json(fresh, "--user", "u00003", "-n", "5", "--explain")  # same shape, same list
        new = c.post("/recommendations", json={"ratings": [{"movie_id": "m00001", "rating": 5},
                                                           {"movie_id": "m00002", "rating": 1}], "n": 5})
        assert new.status_code == 200 and new.json()["fallback"] == "fold-in"
        p = Path(fresh).parent / "r.csv"
        p.write_text("movie_id,rating\nm00001,5\nm00002,1\n")
        assert new.json() == dict(cli_json(fresh, "--user", "new-user", "--ratings", str(p), "-n", "5"))
        sim = c.get("/movies/m00001/similar", params={"n": 4}).json()
        assert len(sim["items"]) == 4 and "m00001" not in [i["movie_id"] for i in sim["items"]]
        assert sim["items"][0]["similarity"] >= sim["items"][-1]["similarity"]
        # errors: JSON with the status, a clear message, never a traceback
        cases = [
            (c.get("/users/nobody/recommendations", params={"strict": "true"}), 404, "unknown to the model"),
            (c.get("/users/nobody/recommendations"), 200, None),  # the popularity list
            (c.get("/users/u00003/recommendations", params={"n": 1000}), 422, "serve.max_n"),
            (c.get("/users/u00003/recommendations", params={"n": 0}), 422, "n"),
            (c.get("/users/%01x/recommendations"), 400, "control characters"),
            (c.get("/movies/zzz/similar"), 404, "not in the catalogue"),
            (c.post("/recommendations", json={"ratings": []}), 422, "ratings"),
            (c.post("/recommendations", json={"ratings": [{"movie_id": "m00001", "rating": 9}]}), 422, "rating scale"),
            (c.post("/recommendations", content=b"{nope", headers={"content-type": "application/json"}), 400, "JSON"),
            (c.post("/feedback", json={"user_id": "u1", "movie_id": "m00001", "rating": 4}), 401, "Bearer"),
            (c.post("/feedback", json={"user_id": "u1", "movie_id": "m00001", "rating": 4},
                    headers={"Authorization": "Bearer wrong-token-wrong-token"}), 401, "Bearer"),
            (c.post("/feedback", json={"user_id": "u1", "movie_id": "nope", "rating": 4}, headers=AUTH), 422,
             "not in the catalogue"),
            (c.post("/feedback", json={"user_id": "u1", "movie_id": "m00001", "rating": 42}, headers=AUTH), 422,
             "outside the rating scale"),
            (c.post("/feedback", json={"user_id": "u1", "movie_id": "m00001"}, headers=AUTH), 422, "at least one"),
            (c.post("/feedback", json={"user_id": "u1", "movie_id": "m00001", "stars": 4}, headers=AUTH), 422,
             "stars"),
            (c.post("/feedback", content=b'{"user_id": "u1", "movie_id": "m00001", "rating": 4, "comment": "\\ud800"}',
                    headers=dict(AUTH, **{"content-type": "application/json"})), 422, "valid string"),
            (c.post("/recommendations", content=b'{"user_id": "\\udc80", "ratings": [{"movie_id": "m00001", "rating": 4}]}',
                    headers={"content-type": "application/json"}), 422, "valid string"),
            (c.post("/feedback", content=b"[" + b"1," * 40000 + b"1]",
                    headers=dict(AUTH, **{"content-type": "application/json"})), 413, "serve.max_body_bytes"),
        ]
        for r, status, words in cases:
            assert r.status_code == status, (r.request.url, r.text)
            if words:
                body = r.json()
                assert body["status"] == status and words in body["error"] and "Traceback" not in r.text
        assert c.get("/users/nobody/recommendations").json()["fallback"] == "popularity"
    assert not (Path(load_config(fresh).workdir) / "feedback" / "events.jsonl").exists()  # nothing recorded
    with client(fresh, token=None) as c:  # no token configured: writes are refused, reads work
        r = c.post("/feedback", json={"user_id": "u1", "movie_id": "m00001", "rating": 4}, headers=AUTH)
        assert r.status_code == 503 and "MOVIEREC_SERVE_TOKEN" in r.json()["error"]
    with client(fresh, "serve.protect_reads=true") as c:
        assert c.get("/users/u00003/recommendations").status_code == 401
        assert c.get("/users/u00003/recommendations", headers=AUTH).status_code == 200
        assert c.get("/").status_code == 200  # the page holds no data: it asks the API with the token


def test_feedback_is_in_the_next_list_and_metrics_count_it(fresh):
    with client(fresh) as c:
        before = c.get("/users/u00005/recommendations").json()
        top = before["items"][0]["movie_id"]
        r = c.post("/feedback", json={"user_id": "u00005", "movie_id": top, "rating": 1}, headers=AUTH)
        assert r.status_code == 201 and r.json()["recorded"]["rating"] == 1.0
        after = c.get("/users/u00005/recommendations").json()
        assert top not in [i["movie_id"] for i in after["items"]] and after["feedback_events"] == 1
        # the CLI reads the same log: the same list
        assert after == cli_json(fresh, "--user", "u00005")
        h = c.get("/health").json()
        assert h["status"] == "ok" and h["data"]["feedback_events_since_training"] == 1
        assert h["version"] == before["served_by"]["version"] and h["trained"].endswith("Z")
        text = c.get("/metrics").text
        assert 'movierec_feedback_events_total{kind="rating"} 1.0' in text
        assert 'movierec_requests_total{endpoint="/users/{user_id}/recommendations",method="GET",status="200"} 2.0' \
            in text
        assert f'movierec_model_info{{version="{h["version"]}"}} 1.0' in text
        assert "movierec_request_seconds_bucket" in text
        docs = c.get("/openapi.json").json()
        assert {"/users/{user_id}/recommendations", "/recommendations", "/movies/{movie_id}/similar", "/feedback",
                "/health", "/metrics"} <= set(docs["paths"])


def test_python_api(fresh):
    import movierec

    svc = movierec.load(str(fresh))
    one = svc.recommend("u00007", n=5)
    assert one == cli_json(fresh, "--user", "u00007", "-n", "5")
    new = svc.recommend_new({"m00001": 5, "m00010": 4}, n=3)
    assert new["fallback"] == "fold-in" and len(new["items"]) == 3
    top = one["items"][0]["movie_id"]
    svc.feedback("u00007", top, rating=1)
    assert top not in [i["movie_id"] for i in svc.recommend("u00007", n=5)["items"]]
    from movierec.errors import DataError

    with pytest.raises(DataError, match="not in the catalogue"):
        svc.feedback("u00007", "no-such-movie", rating=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a thread over create_app (a real HTTP server, requests from other threads)."""

    def __init__(self, cfg_path, *overrides):
        import uvicorn

        from movierec.server import create_app

        self.port = _free_port()
        cfg = load_config(cfg_path, ["serve.reload_seconds=0.1", *overrides])
        self.app = create_app(cfg)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        import httpx

        self.thread.start()
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        for _ in range(200):
            try:
                self.http.get("/health")
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc):
        self.http.close()
        self.server.should_exit = True
        self.thread.join(10)


def _versions(cfg) -> list[str]:
    from movierec.registry import Registry

    return sorted(v.name for v in Registry.of(load_config(cfg)).versions())


def test_reloads_on_promotion_and_rollback_with_requests_in_flight(fresh):
    first = _versions(fresh)
    assert len(first) == 1
    with Server(fresh) as s:
        seen, errors, stop = [], [], threading.Event()

        def hammer():
            import httpx

            with httpx.Client(base_url=f"http://127.0.0.1:{s.port}", timeout=30) as h:
                while not stop.is_set():
                    r = h.get("/users/u00011/recommendations")
                    (seen if r.status_code == 200 else errors).append(r.headers.get("x-model-version") or r.text)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            r = run_cli("run", "--config", str(fresh), "model.seed=1")  # config changed: a new version, gated
            assert r.returncode == 0, r.stderr
            second = [v for v in _versions(fresh) if v not in first]
            assert len(second) == 1
            deadline = time.time() + 20
            while time.time() < deadline and s.http.get("/health").json()["version"] != second[0]:
                time.sleep(0.05)
            assert s.http.get("/health").json()["version"] == second[0]
            r = run_cli("models", "rollback", "--config", str(fresh))
            assert r.returncode == 0, r.stderr
            deadline = time.time() + 20
            while time.time() < deadline and s.http.get("/health").json()["version"] != first[0]:
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[:3]
        assert set(seen) == {first[0], second[0]} and seen[-1] == first[0]
        # every list between two switches came from one version, in order: first, second, first
        runs = [v for k, v in enumerate(seen) if k == 0 or v != seen[k - 1]]
        assert runs[0] == first[0] and second[0] in runs and runs[-1] == first[0]
        assert 'movierec_model_reloads_total{outcome="switched"} 2.0' in s.http.get("/metrics").text


def test_a_version_that_fails_to_load_is_not_switched_to(fresh):
    r = run_cli("train", "--config", str(fresh), "model.seed=3")
    assert r.returncode == 0, r.stderr
    old, new = sorted(_versions(fresh))
    work = Path(load_config(fresh).workdir)
    (work / "models" / "current").write_text(old + "\n")
    with client(fresh, "serve.reload_seconds=0.05") as c:
        assert c.get("/health").json()["version"] == old
        model = work / "models" / new / "model.npz"
        model.write_bytes(model.read_bytes()[:-100] + b"\0" * 100)  # damaged: same size, other bytes
        (work / "models" / "current").write_text(new + "\n")
        time.sleep(0.1)
        r = c.get("/users/u00001/recommendations")
        assert r.status_code == 200 and r.headers["x-model-version"] == old  # the old one keeps serving
        h = c.get("/health").json()
        assert h["status"] == "degraded" and h["version"] == old
        assert h["reload_error"]["version"] == new and "damaged" in h["reload_error"]["error"]
        assert 'movierec_model_reloads_total{outcome="refused"} 1.0' in c.get("/metrics").text


def test_no_model_yet_is_503_then_the_first_promoted_serves(tmp_path):
    data = make_data(tmp_path / "data", n_users=120, n_movies=60)
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "work")
    with client(cfg, "serve.reload_seconds=0.05") as c:
        r = c.get("/users/u00001/recommendations")
        assert r.status_code == 503 and "movierec train" in r.json()["error"]
        assert c.get("/health").status_code == 503
        assert run_cli("train", "--config", str(cfg)).returncode == 0
        time.sleep(0.1)
        assert c.get("/users/u00001/recommendations").status_code == 200


def test_ab_assignment_is_stable_and_splits_traffic():
    from movierec.experiment import assign

    users = [f"user-{k}" for k in range(20000)]
    arms = [assign("exp1", u, 0.3) for u in users]
    assert abs(arms.count("b") / len(arms) - 0.3) < 0.015
    assert arms == [assign("exp1", u, 0.3) for u in users]  # stable
    other = [assign("exp2", u, 0.3) for u in users]  # another experiment reshuffles viewers
    assert 0.3 < np.mean([a == b for a, b in zip(arms, other)]) < 0.8


def test_experiment_exposures_attribution_and_report(fresh):
    first = _versions(fresh)[0]
    assert run_cli("train", "--config", str(fresh), "model.seed=5").returncode == 0
    second = [v for v in _versions(fresh) if v != first][0]
    exp = [f"serve.experiment.name=exp1", f"serve.experiment.versions=[{first},{second}]",
           "serve.experiment.split=0.5"]
    users = [f"u{k:05d}" for k in range(120)]
    with client(fresh, *exp) as c:
        served = {}
        for u in users:
            r = c.get(f"/users/{u}/recommendations", params={"n": 5})
            assert r.status_code == 200
            served[u] = (r.headers["x-experiment-arm"], r.headers["x-model-version"], r.json()["items"])
        again = c.get(f"/users/{users[0]}/recommendations", params={"n": 5})
        assert again.headers["x-experiment-arm"] == served[users[0]][0]  # stable
        assert {a for a, _, _ in served.values()} == {"a", "b"}
        assert all(v == (first if a == "a" else second) for a, v, _ in served.values())
        # arm b's viewers like what they get, arm a's do not; one rating of an unlisted movie
        for u, (arm, _, items) in served.items():
            c.post("/feedback", json={"user_id": u, "movie_id": items[0]["movie_id"],
                                      "rating": 5 if arm == "b" else 2}, headers=AUTH)
        u0 = users[0]
        listed = {i["movie_id"] for i in served[u0][2]}
        other = next(m for m in (f"m{k:05d}" for k in range(150)) if m not in listed)
        c.post("/feedback", json={"user_id": u0, "movie_id": other, "rating": 5}, headers=AUTH)
        exp_api = c.get("/api/experiment").json()
        assert exp_api["experiment"]["arms"]["b"]["version"] == second
    log = [json.loads(x) for x in (Path(load_config(fresh).workdir) / "serve" / "exposures.jsonl").read_text().splitlines()]
    assert len(log) == len(users) + 1 and {e["experiment"] for e in log} == {"exp1"}
    assert log[0]["movies"] == [i["movie_id"] for i in served[users[0]][2]]
    r = run_cli("experiment", "report", "--config", str(fresh), *exp, "--format", "json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    n_b = sum(a == "b" for a, _, _ in served.values())
    assert rep["feedback_attributed"] == len(users)  # the unlisted movie's rating is not attributed
    assert rep["arms"]["b"]["viewers"] == n_b and rep["arms"]["a"]["viewers"] == len(users) - n_b
    # users[0] was listed twice: its one hit counts for the later list
    assert rep["arms"]["b"]["hit_rate"] == pytest.approx(n_b / (n_b + (served[users[0]][0] == "b")))
    assert rep["arms"]["a"]["hit_rate"] == 0.0 and rep["arms"]["a"]["mean_rating"] == 2.0
    assert rep["arms"]["b"]["mean_rating"] == 5.0
    assert rep["comparison"]["verdict"].startswith("b is better")
    lo, hi = rep["arms"]["b"]["hit_rate_ci"]
    assert lo <= rep["arms"]["b"]["hit_rate"] <= hi
    assert 0 < rep["arms"]["a"]["coverage"] <= 1
    assert "gender" in rep["groups"]  # fairness: per group of viewers
    table = run_cli("experiment", "report", "--config", str(fresh), *exp)
    assert "verdict: b is better" in table.stdout and "fairness, gender" in table.stdout


def test_attribution_window():
    from movierec.experiment import attribute

    ex = pd.DataFrame({"list": [0, 0, 1], "time": [100.0, 100.0, 5000.0], "arm": ["a", "a", "b"],
                       "version": "v", "user_id": ["u1", "u1", "u1"], "movie_id": ["m1", "m2", "m1"],
                       "position": [0, 1, 0]})
    ev = pd.DataFrame({"time": [50.0, 200.0, 3700.0 + 100, 5100.0], "user_id": "u1",
                       "movie_id": ["m1", "m1", "m2", "m1"], "rating": [5.0, 4.0, 5.0, 1.0],
                       "share_with": np.nan})
    got = attribute(ex, ev, hours=1.0, threshold=4.0)
    # before any list: no; within the hour of list 0: list 0; an hour later: no; after list 1: list 1
    assert got[["list", "arm", "rating"]].values.tolist() == [[0, "a", 4.0], [1, "b", 1.0]]
    assert got["positive"].tolist() == [True, False]


def test_serve_command_with_two_workers(fresh):
    port = _free_port()
    env = dict(os.environ, MOVIEREC_SERVE_TOKEN=TOKEN, HF_HUB_OFFLINE="1")
    p = subprocess.Popen([sys.executable, "-m", "movierec", "serve", "--config", str(fresh), "--port", str(port),
                          "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import httpx

    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        lists = {json.dumps(httpx.get(f"http://127.0.0.1:{port}/users/u00002/recommendations").json()["items"])
                 for _ in range(6)}
        assert len(lists) == 1  # every worker serves the same list
        r = httpx.post(f"http://127.0.0.1:{port}/feedback", headers=AUTH,
                       json={"user_id": "u00002", "movie_id": json.loads(lists.pop())[0]["movie_id"], "rating": 1})
        assert r.status_code == 201
        after = [httpx.get(f"http://127.0.0.1:{port}/users/u00002/recommendations").json() for _ in range(6)]
        assert all(a["feedback_events"] == 1 for a in after)  # whichever worker answers
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert "movierec_requests_total" in text and 'kind="rating"' in text
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err[-2000:]
    assert not list((Path(load_config(fresh).workdir) / "serve").glob("prometheus-*"))  # cleaned up


def test_serve_without_the_extra_is_a_config_error(site, monkeypatch, capsys):
    from tests.conftest import call

    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert call("serve", "--config", str(site)) == 78
    assert "pip install 'movierec[serve]'" in capsys.readouterr().err
