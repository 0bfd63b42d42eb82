"""Issue 26: the workdir is not written through links; an empty workdir is a config error; a
per-language hub model that cannot be had fails in seconds, says so once, and names its key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from movierec.config import load_config
from movierec.errors import EXIT_CONFIG, EXIT_DATA, ConfigError, DataError, StorageError
from tests.conftest import call, write_config

VICTIM = "precious data\nline 2\n"


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config whose workdir exists, and a file outside the workdir that links point at."""
    work = tmp_path / "work"
    work.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM)
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "data", work)
    return cfg, work, victim


# ----------------------------------------------------------------------------- 1. links
def test_a_symlinked_lock_is_refused_and_its_target_kept(site, capsys):
    from movierec.pipeline import workdir_lock

    cfg, work, victim = site
    (work / "lock").symlink_to(victim)
    with pytest.raises(StorageError, match=r"lock .*is a symbolic link") as err:
        with workdir_lock(work):
            pass
    assert str(work / "lock") in str(err.value)
    assert victim.read_text() == VICTIM
    # as a command does it: exit 1 (StorageError), the message names the lock, the target intact
    assert call("ingest", "--config", str(cfg)) == StorageError.exit_code
    assert str(work / "lock") in capsys.readouterr().err
    assert victim.read_text() == VICTIM and (work / "lock").is_symlink()


def test_a_hard_linked_or_odd_lock_is_refused(site):
    from movierec.pipeline import workdir_lock

    _, work, victim = site
    os.link(victim, work / "lock")
    with pytest.raises(StorageError, match="hard link"):
        with workdir_lock(work):
            pass
    assert victim.read_text() == VICTIM
    (work / "lock").unlink()
    os.mkfifo(work / "lock")  # would not block the open either
    with pytest.raises(StorageError, match="not a regular file"):
        with workdir_lock(work):
            pass


def test_the_lock_still_works(site):
    from movierec.errors import LockError
    from movierec.pipeline import workdir_lock

    _, work, _ = site
    with workdir_lock(work):
        assert (work / "lock").read_text().startswith(f"pid {os.getpid()}")
        with pytest.raises(LockError, match="locked by another movierec run"):
            with workdir_lock(work):
                pass
    assert (work / "lock").read_text() == ""
    fd = os.open(work / "lock", os.O_RDONLY)
    try:
        import fcntl

        assert fcntl.fcntl(fd, fcntl.F_GETFD) is not None
    finally:
        os.close(fd)


def test_the_feedback_log_is_not_appended_or_read_through_a_link(site, capsys):
    from movierec import feedback as F

    cfg, work, victim = site
    log = F.events_path(work)
    log.parent.mkdir(parents=True)
    log.symlink_to(victim)
    with pytest.raises(StorageError, match=r"is a symbolic link") as err:
        F.append_event(work, "u1", "m1", 4.0)
    assert str(log) in str(err.value) and victim.read_text() == VICTIM
    for read in (F.read_events, F.snapshot, lambda w: F.read_events_since(w, {"offset": 0})):
        with pytest.raises(DataError, match=str(log)):
            read(work)
    # the command: exit 1, nothing appended to the target
    assert call("feedback", "--config", str(cfg), "--user", "u1", "--movie", "m1", "--rating", "4") == 1
    assert str(log) in capsys.readouterr().err and victim.read_text() == VICTIM
    # a hard link too (an append would write into the other name's file)
    log.unlink()
    os.link(victim, log)
    with pytest.raises(StorageError, match="hard link"):
        F.append_event(work, "u1", "m1", 4.0)
    assert victim.read_text() == VICTIM
    assert DataError.exit_code == EXIT_DATA


def test_the_feedback_log_still_works(site):
    from movierec import feedback as F

    _, work, _ = site
    assert F.read_events(work) is None and F.read_events_since(work, None) is None
    assert F.snapshot(work)[1]["offset"] == 0
    F.append_event(work, "u1", "m1", 4.0)
    df, state = F.snapshot(work)
    assert len(df) == 1 and state["offset"] == F.events_path(work).stat().st_size
    F.append_event(work, "u2", "m2", comment="great")
    new = F.read_events_since(work, state)
    assert new["user_id"].tolist() == ["u2"]
    assert len(F.read_events(work)) == 2


# ----------------------------------------------------------------------------- 2. empty workdir
@pytest.mark.parametrize("how", ["override", "yaml", "blank"])
def test_an_empty_workdir_is_a_config_error(tmp_path, how):
    p = tmp_path / "c.yaml"
    p.write_text({"override": "{}\n", "yaml": 'workdir: ""\n', "blank": 'workdir: "  "\n'}[how])
    overrides = ["workdir="] if how == "override" else []
    with pytest.raises(ConfigError, match="'workdir' must not be empty") as err:
        load_config(p, overrides)
    assert err.value.exit_code == EXIT_CONFIG == 78
    assert load_config(p, ["workdir=w"]).workdir == str((tmp_path / "w").resolve())


def test_an_empty_workdir_exits_78(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("{}\n")
    assert call("status", "--config", str(p), "workdir=") == EXIT_CONFIG
    assert "workdir" in capsys.readouterr().err
    assert not (tmp_path / "lock").exists()


# ----------------------------------------------------------------------------- 3. hub models
def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _score_text(tmp_path: Path, endpoint: str) -> tuple[subprocess.CompletedProcess, float]:
    texts = tmp_path / "t.csv"
    texts.write_text("text\n这部电影非常好看，我很喜欢。\n这部电影太糟糕了，浪费时间。\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text("{}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"))  # an empty cache
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "movierec", "score-text", "--config", str(tmp_path / "c.yaml"),
                          "--input", str(texts), "--text-column", "text", "--output", str(tmp_path / "o.csv"),
                          "sentiment.scorers={zh: some-org/some-model}"],
                         capture_output=True, text=True, env=env, timeout=120)
    return res, time.monotonic() - t0


def _no_line_twice(stderr: str) -> None:
    """No record printed by two handlers: once with the CLI's "HH:MM:SS LEVEL " prefix, once bare."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    prefixed = {line.split(" ", 2)[-1] for line in lines if line[:2].isdigit() and line[2:3] == ":"}
    assert not [line for line in lines if line in prefixed], stderr
    warnings = Counter(line for line in lines if " WARNING " in line)
    assert all(n == 1 for n in warnings.values()), stderr


def test_an_unreachable_hub_fails_fast_and_names_the_scorers_key(tmp_path):
    res, took = _score_text(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    assert res.returncode == EXIT_CONFIG, res.stderr
    err = res.stderr
    assert "error: sentiment.scorers.zh 'some-org/some-model'" in err, err
    assert "cannot be reached" in err and "sentiment.model" not in err, err
    assert "Retrying" not in err, err
    _no_line_twice(err)
    assert took < 20, took


class _NotFound(BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


def test_a_reachable_hub_without_the_model_names_the_scorers_key(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res, took = _score_text(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert res.returncode == EXIT_CONFIG, res.stderr
    assert "error: sentiment.scorers.zh 'some-org/some-model'" in res.stderr, res.stderr
    _no_line_twice(res.stderr)
    assert took < 20, took


def test_offline_names_the_key_without_network(monkeypatch):
    from movierec.config import SentimentConfig
    from movierec.sentiment import routing as R
    from movierec.sentiment import scorers as S

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = SentimentConfig(scorers={"zh": "some-org/some-model@abc123"})
    spec = R.route_spec(cfg, "some-org/some-model@abc123")
    assert S.config_key(spec) == "sentiment.scorers.zh" and S.config_key(cfg) == "sentiment.model"
    with pytest.raises(ConfigError, match=r"^sentiment.scorers.zh 'some-org/some-model': cannot load it offline"):
        S.HFClassifierScorer(spec)


def test_a_hub_warning_is_printed_once():
    """huggingface_hub's own handler and the CLI's root handler both printed its records."""
    code = textwrap.dedent("""
        import logging
        from movierec.cli._app import _setup_logging
        import huggingface_hub  # adds its handler
        from movierec.sentiment.scorers import _one_line_per_hub_warning
        _setup_logging(0, 0, "text")
        _one_line_per_hub_warning()
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("Retrying in 1s") == 1, res.stderr


def test_an_artifact_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    """Writing an artifact through a symbolic link would replace a file outside the workdir."""
    import pandas as pd

    from movierec.catalog import Catalog
    from movierec.errors import StorageError

    outside = tmp_path / "outside.parquet"
    outside.write_bytes(b"precious")
    cat = Catalog(tmp_path / "work")
    cat.artifacts_dir.mkdir(parents=True)
    cat.path("ratings_clean").symlink_to(outside)
    with pytest.raises(StorageError, match="symbolic link"):
        cat.write("ratings_clean", pd.DataFrame({"user_idx": [1]}))
    assert outside.read_bytes() == b"precious" and cat.path("ratings_clean").is_symlink()
