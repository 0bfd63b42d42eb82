"""Fault injection for tests: ``MOVIEREC_FAILPOINT=<name>`` makes that point fail.

Names: ``sentiment`` (SIGKILL while scoring), ``sentiment_checkpoint`` (SIGKILL right
after the first checkpoint of the score cache), ``train`` (SIGKILL after the first
epoch), ``promote`` (SIGKILL between writing a model version and switching to it),
``write_version`` (an ENOSPC error while writing a model version), ``switched`` (SIGKILL
right after ``current`` names a new version, before it is marked promoted), ``prune`` (SIGKILL
between renaming a pruned version to its trash name and deleting it). Unset in production.
"""

from __future__ import annotations

import errno
import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("MOVIEREC_FAILPOINT") != name:
        return
    if name == "write_version":
        raise OSError(errno.ENOSPC, "No space left on device (injected)")
    os.kill(os.getpid(), signal.SIGKILL)
