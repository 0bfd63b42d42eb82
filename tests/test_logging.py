"""Logging and progress output (issue 26, "Clear errors and honest output"): one progress over
a chunked sentiment job, log lines above a progress bar, -v / -vv, and --log-format json."""

import datetime
import io
import json
import logging
import re
import sys
import time

import numpy as np
import pytest

from movierec import progress
from movierec.cli._app import _setup_logging
from movierec.progress import Progress
from movierec.sentiment.cache import CachedScorer
from movierec.sentiment.encoder import TextProgress
from tests.conftest import make_data, run_cli, write_config


@pytest.fixture
def fresh_logging():
    """Put the root logger (and the loggers _setup_logging touches) back as they were."""
    root = logging.getLogger()
    names = ("numba", "tensorflow", "absl", "h5py", "urllib3", "httpx", "huggingface_hub", "transformers")
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in names}, progress.BARS
    yield
    root.handlers[:], root.level, progress.BARS = saved[0], saved[1], saved[3]
    for n, level in saved[2].items():
        logging.getLogger(n).setLevel(level)


def fake_stderr(monkeypatch, tty: bool) -> io.StringIO:
    fake = io.StringIO()
    fake.isatty = lambda: tty
    monkeypatch.setattr(sys, "stderr", fake)
    return fake


class ChunkScorer:
    """A scorer like the real ones: its own progress over the texts of each call, in batches of 2."""

    model_id = "fake"

    def score_features(self, texts):
        bar = TextProgress(len(texts), "sentiment")
        for i in range(0, len(texts), 2):
            bar.update(len(texts[i: i + 2]))
        bar.close()
        return np.zeros(len(texts), np.float32), None


# ---------------------------------------------------------------- 1. one progress over the job
def test_cron_progress_counts_across_chunks_and_shows_the_total(caplog, monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 0.0)  # a line for every update
    caplog.set_level(logging.INFO, logger="movierec.progress")
    c = CachedScorer(ChunkScorer, "m", None, checkpoint=lambda rows: None, checkpoint_every=4)
    texts = [f"text {i}" for i in range(10)]  # chunks of 4, 4, 2
    c.score(texts)
    assert c.misses == 10
    lines = [r.getMessage() for r in caplog.records if r.name == "movierec.progress"]
    counts = [(int(m.group(1)), int(m.group(2)))
              for m in (re.match(r"sentiment: (\d+)/(\d+) texts", x) for x in lines) if m]
    assert counts and all(total == 10 for _, total in counts), lines  # the job's total, not a chunk's
    done = [d for d, _ in counts]
    assert done == sorted(done) and done[-1] == 10, lines  # never backwards
    assert done.count(10) == 2  # the last update, and the closing line
    assert any(re.fullmatch(r"sentiment: \d+/10 texts \(\d+%\), [\d.,]+ texts/s, ETA \S+", x) for x in lines), lines
    assert re.fullmatch(r"sentiment: 10/10 texts in \S+, [\d.,]+ texts/s", lines[-1]), lines


def test_progress_line_format(caplog):
    caplog.set_level(logging.INFO, logger="movierec.progress")
    p = Progress(40_000, "sentiment", unit="texts", every=0.0)
    p.start = time.monotonic() - 30.0
    p.update(12_288)
    rec = caplog.records[-1]
    assert rec.getMessage() == "sentiment: 12,288/40,000 texts (31%), 410 texts/s, ETA 1m08s"
    assert (rec.done, rec.total, rec.unit) == (12_288, 40_000, "texts")  # structured fields for JSON logs
    p.close()


def test_progress_is_quiet_for_short_work(caplog):
    caplog.set_level(logging.INFO, logger="movierec.progress")
    with Progress(10, "short", unit="it") as p:
        p.update(10)
    assert not caplog.records


def test_one_bar_over_the_chunks_on_a_terminal(monkeypatch):
    fake = fake_stderr(monkeypatch, tty=True)
    c = CachedScorer(ChunkScorer, "m", None, checkpoint=lambda rows: None, checkpoint_every=4)
    bars = []
    real_init = Progress.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        if self.bar is not None:
            bars.append(self)

    monkeypatch.setattr(Progress, "__init__", spy)
    c.score([f"t{i}" for i in range(10)])
    assert len(bars) == 1 and bars[0].bar.total == 10 and bars[0].done == 10
    assert "/4 [" not in fake.getvalue() and "/10 [" in fake.getvalue()
    assert not progress.bars_open()


def test_a_failed_chunk_leaves_the_count(monkeypatch):
    class Failing(ChunkScorer):
        def score_features(self, texts):
            raise RuntimeError("boom")

    c = CachedScorer(Failing, "m", None)
    with pytest.raises(RuntimeError):
        c.score(["a", "b"])
    assert not progress._jobs and not progress.bars_open()


# ---------------------------------------------------------------- 2. log lines above the bar
def test_log_lines_go_above_an_open_bar(monkeypatch, fresh_logging):
    fake = fake_stderr(monkeypatch, tty=True)
    _setup_logging(0, 0, "text")
    log = logging.getLogger("movierec.test")
    with Progress(4, "sentiment", unit="text") as p:
        p.update(2)
        log.info("hello from the pipeline")
        p.update(2)
    out = fake.getvalue()
    line = next(x for x in out.split("\n") if "hello from the pipeline" in x)
    # what shows of that line on a terminal is what follows its last carriage return
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO hello from the pipeline", line.split("\r")[-1]), repr(line)
    after = out.split("hello from the pipeline\n", 1)[1]
    assert "sentiment:" in after  # the bar is drawn again below the line
    log.info("no bar now")
    assert fake.getvalue().endswith(" INFO no bar now\n")


# ---------------------------------------------------------------- 3. -v and -vv
def _emit_all():
    logging.getLogger("movierec.models.mf").debug("epoch 1/3: train RMSE 0.9")
    logging.getLogger("somelib").debug("somelib debug")
    logging.getLogger("somelib").info("somelib info")
    # a library movierec quiets below -vv (not transformers: once imported by another test in
    # this process, its logger stops propagating to the root handler)
    logging.getLogger("urllib3").debug("noisy lib debug")
    logging.getLogger("movierec.native").debug("native debug")


@pytest.mark.parametrize("verbose, shown, hidden", [
    (0, ["somelib info"], ["epoch 1/3", "somelib debug", "noisy lib debug", "native debug"]),
    (1, ["epoch 1/3", "somelib info"], ["somelib debug", "noisy lib debug", "native debug"]),
    (2, ["epoch 1/3", "somelib info", "somelib debug", "noisy lib debug", "native debug"], []),
])
def test_verbosity(monkeypatch, fresh_logging, verbose, shown, hidden):
    fake = fake_stderr(monkeypatch, tty=False)
    _setup_logging(verbose, 0, "text")
    _emit_all()
    out = fake.getvalue()
    for s in shown:
        assert s in out, (verbose, s, out)
    for s in hidden:
        assert s not in out, (verbose, s, out)
    if verbose:
        assert "DEBUG movierec.models.mf: epoch 1/3" in out  # which logger said it
        assert logging.getLogger().level == logging.DEBUG  # the CLI prints tracebacks at -v


def test_quiet_and_verbose_cancel(monkeypatch, fresh_logging):
    fake = fake_stderr(monkeypatch, tty=False)
    _setup_logging(1, 1, "text")
    _emit_all()
    assert "somelib info" in fake.getvalue() and "epoch" not in fake.getvalue()


# ---------------------------------------------------------------- 4. --log-format json
def test_json_lines_have_utc_time_and_extras(monkeypatch, fresh_logging):
    fake = fake_stderr(monkeypatch, tty=False)
    _setup_logging(0, 0, "json")
    log = logging.getLogger("movierec.stages")
    log.info("ingest: done in %.2fs", 0.25, extra={"stage": "ingest", "seconds": 0.25, "rows": np.int64(7),
                                                  "level": "clash"})
    log.warning("two\nlines")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    lines = fake.getvalue().splitlines()
    assert len(lines) == 3  # one JSON document per line
    first, second, third = (json.loads(x) for x in lines)
    assert first["time"].endswith("Z")
    t = datetime.datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert t.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()) < 60
    assert first["level"] == "info" and first["logger"] == "movierec.stages"
    assert first["message"] == "ingest: done in 0.25s"
    assert first["stage"] == "ingest" and first["seconds"] == 0.25 and first["rows"] == 7
    assert first["level_"] == "clash"  # an extra never overwrites the standard fields
    assert second["message"] == "two\nlines" and second["level"] == "warning"
    assert "ValueError: bad" in third["exception"]


def test_json_progress_lines_are_structured(monkeypatch, fresh_logging):
    fake = fake_stderr(monkeypatch, tty=False)
    _setup_logging(0, 0, "json")
    p = Progress(100, "sentiment", unit="texts", every=0.0)
    p.update(25)
    doc = json.loads(fake.getvalue().splitlines()[-1])
    assert doc["progress"] == "sentiment" and doc["done"] == 25 and doc["total"] == 100 and doc["unit"] == "texts"
    p.close()


def test_cli_json_and_verbose(tmp_path):
    data = make_data(tmp_path / "data", n_users=60, n_movies=40, seed=2)
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "work")
    r = run_cli("--log-format", "json", "-v", "ingest", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    docs = [json.loads(x) for x in r.stderr.splitlines()]
    assert docs and all(d["time"].endswith("Z") and d["message"] for d in docs)


def test_json_format_draws_no_bar_on_a_terminal(monkeypatch, fresh_logging):
    fake = fake_stderr(monkeypatch, tty=True)
    monkeypatch.setattr(progress, "EVERY", 0.0)
    _setup_logging(0, 0, "json")
    with Progress(4, "sentiment", unit="texts") as p:
        assert p.bar is None
        p.update(2)
    assert all(json.loads(x)["progress"] == "sentiment" for x in fake.getvalue().splitlines())
