import io
import logging
import sys

from movierec.progress import Progress


def test_log_lines_under_cron(caplog):
    caplog.set_level(logging.INFO, logger="movierec.progress")
    p = Progress(10, "training", unit="epoch", every=0.0)  # stderr is not a terminal under pytest
    assert p.bar is None
    p.update(3, train_rmse="0.9")
    p.close()
    assert "training: 3/10 epoch, train_rmse 0.9" in caplog.text


def test_bar_on_a_terminal(monkeypatch):
    fake = io.StringIO()
    fake.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", fake)
    with Progress(4, "sentiment", unit="text") as p:
        assert p.bar is not None
        p.update(4)
        assert p.bar.n == 4
    assert "sentiment:" in fake.getvalue() and "/4 [" in fake.getvalue()  # a tqdm bar was drawn
