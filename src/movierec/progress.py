"""Progress for long work: a tqdm bar on a terminal, periodic log lines otherwise (cron).

One job, one progress: work done in parts (the sentiment cache scores its misses in chunks,
and the scorer of each chunk keeps its own :class:`Progress`) reports through the job's
:class:`Progress`: inside ``with job.part(n):`` a new :class:`Progress` draws no bar and logs
no line of its own but counts toward the job's (at most ``n`` units of it), so a bar or a log
line shows the whole job's total, never a restart per chunk.

:class:`TqdmLoggingHandler` is the log handler of the command line: while a bar is open it
writes log records through ``tqdm.write``, above the bar, instead of over it."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Iterator

log = logging.getLogger("movierec.progress")

#: seconds between two progress lines in a log (no terminal)
EVERY = 10.0
#: bars on a terminal (off with --log-format json: stderr then holds JSON lines only)
BARS = True

_lock = threading.Lock()
#: the jobs whose ``part`` is running, innermost last: a new Progress counts toward the last
_jobs: list["Progress"] = []
#: tqdm bars open now (the log handler writes through tqdm.write while there are any)
_open_bars = 0


def fmt_duration(seconds: float) -> str:
    """``45s``, ``1m08s``, ``2h03m``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_rate(rate: float) -> str:
    """``410``, ``12.5``, ``0.52`` (three significant figures at most, below 100)."""
    if rate >= 100:
        return f"{rate:,.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    return f"{rate:.2f}"


class Progress:
    """``update(n)`` as work gets done; a bar when stderr is a terminal, else a log line at
    most every ``every`` seconds (:data:`EVERY`; and none for work that ends sooner), such as
    ``sentiment: 12,288/40,000 texts (31%), 410 texts/s, ETA 1m08s``. Work that logged a line
    logs a last one when it closes. Made inside another Progress's :meth:`part`, it counts
    toward that one instead (no bar, no lines of its own)."""

    def __init__(self, total: int, desc: str, unit: str = "it", every: float | None = None) -> None:
        self.total, self.desc, self.unit, self.done = total, desc, unit, 0
        self.every = EVERY if every is None else every
        self.bar = None
        self.parent: Progress | None = _jobs[-1] if _jobs else None
        self.cap: int | None = None  # inside part(): the most that inner progress may count to
        self.start = self.last = time.monotonic()
        self.lines = 0
        self.closed = False
        if self.parent is None and total and BARS and sys.stderr.isatty():
            from tqdm import tqdm

            global _open_bars
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
            with _lock:
                _open_bars += 1

    def update(self, n: int = 1, **postfix) -> None:
        if self.cap is not None:
            n = max(0, min(n, self.cap - self.done))
        self.done += n
        if self.parent is not None:
            if n:
                self.parent.update(n)
            return
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._log_line(now, postfix)

    def update_to(self, done: int) -> None:
        """Set the count to ``done`` (never backwards), whatever inner progress counted."""
        cap, self.cap = self.cap, None
        try:
            if done > self.done:
                self.update(done - self.done)
        finally:
            self.cap = cap

    @contextlib.contextmanager
    def part(self, n: int) -> Iterator["Progress"]:
        """The next ``n`` units of this job: a Progress made inside counts toward this one
        (no further than these ``n``); when the part ends without an error the count is
        exactly ``n`` more than at its start."""
        start = self.done
        outer_cap, self.cap = self.cap, start + n
        with _lock:
            _jobs.append(self)
        try:
            yield self
        finally:
            with _lock:
                _jobs.remove(self)
            self.cap = outer_cap
        self.update_to(start + n)

    def _rate_eta(self, now: float) -> tuple[float, float | None]:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 and self.total else None
        return rate, eta

    def _log_line(self, now: float, postfix: dict) -> None:
        rate, eta = self._rate_eta(now)
        shown = "".join(f", {k} {v}" for k, v in postfix.items())
        pct = ""
        if self.total:
            p = round(100 * self.done / self.total)
            pct = f" ({min(p, 99) if self.done < self.total else p}%)"
        msg = (f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}{shown}{pct}, "
               f"{fmt_rate(rate)} {self.unit}/s, ETA {'?' if eta is None else fmt_duration(eta)}")
        extra = {"progress": self.desc, "done": self.done, "total": self.total, "unit": self.unit,
                 "rate": round(rate, 3), "eta_s": None if eta is None else round(eta, 1), **postfix}
        log.info("%s", msg, extra=_safe_extra(extra))
        self.lines += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            global _open_bars
            self.bar.close()
            with _lock:
                _open_bars -= 1
        elif self.parent is None and self.lines:  # it logged progress: say how it ended
            now = time.monotonic()
            rate, _ = self._rate_eta(now)
            log.info("%s: %s/%s %s in %s, %s %s/s", self.desc, f"{self.done:,}", f"{self.total:,}", self.unit,
                     fmt_duration(now - self.start), fmt_rate(rate), self.unit,
                     extra=_safe_extra({"progress": self.desc, "done": self.done, "total": self.total,
                                        "unit": self.unit, "rate": round(rate, 3),
                                        "seconds": round(now - self.start, 3)}))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _safe_extra(extra: dict) -> dict:
    """``extra`` without keys that a LogRecord holds already (logging refuses those)."""
    return {(k if k not in _RESERVED else f"{k}_"): v for k, v in extra.items()}


def bars_open() -> bool:
    return _open_bars > 0


class TqdmLoggingHandler(logging.StreamHandler):
    """A stream handler that, while a progress bar is open, writes each record with
    ``tqdm.write``: the bar is cleared, the line written, the bar drawn again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        if not _open_bars:
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)  # handle() holds self.lock
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as logging.StreamHandler does
            self.handleError(record)
