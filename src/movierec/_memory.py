"""Batch commands reuse the memory they free instead of asking the system again.

A batch command allocates and frees arrays of tens to hundreds of megabytes: the ratings'
columns and their filtered, sorted and converted copies, blocks of scores. By default
glibc's malloc maps every block over 32 MB (and, after a free, smaller ones too) fresh from
the system and unmaps it when it is freed, and Arrow's allocator gives freed pages back as
well; the next array pays the page faults and the zeroing again. On a virtual machine a page
fault is dear: on the 2-core VM of ``benchmarks/results/command_speed.md``, 2M ratings
through ``movierec evaluate`` spent about a second of 4.8 in them.

:func:`reuse_freed_memory`, called by every command but ``serve``:

- glibc (Linux): blocks under 1 GB come from the heap, and up to 1 GB of freed heap is
  kept for the next block (``mallopt``: ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``). The
  peak memory is the same; what was freed goes back to the system when the command ends.
- Arrow allocates through the same malloc (``ARROW_DEFAULT_MEMORY_POOL=system``) unless the
  environment names a pool already. It is read at pyarrow's first allocation, which comes
  after this call (pyarrow is imported inside the commands).

``movierec serve`` keeps the defaults: a long-lived service gives back what it frees.
Elsewhere (macOS, musl) it changes nothing.
"""

from __future__ import annotations

import os
import sys

#: blocks below this size come from the heap, and this much freed heap is kept (bytes)
KEEP_BYTES = 1 << 30
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_freed_memory() -> bool:
    """Set the allocators as the module says; True where glibc took the settings."""
    if "pyarrow" not in sys.modules:  # read at pyarrow's first allocation
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library with mallopt (musl, static builds)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
