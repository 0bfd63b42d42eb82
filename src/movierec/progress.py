"""Progress for long work: a tqdm bar on a terminal, periodic log lines otherwise (cron)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("movierec.progress")


class Progress:
    """``update(n)`` as work gets done; a bar when stderr is a terminal, else a log line at
    most every ``every`` seconds (and none for work that ends sooner)."""

    def __init__(self, total: int, desc: str, unit: str = "it", every: float = 10.0) -> None:
        self.total, self.desc, self.unit, self.every, self.done = total, desc, unit, every, 0
        self.bar = None
        self.last = time.monotonic()
        if sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
        elif time.monotonic() - self.last > self.every:
            self.last = time.monotonic()
            extra = "".join(f", {k} {v}" for k, v in postfix.items())
            log.info("%s: %d/%d %s%s", self.desc, self.done, self.total, self.unit, extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
