"""Batch commands reuse the memory they free instead of asking the system again.

A batch command allocates and frees arrays of tens to hundreds of megabytes: the ratings'
columns and their filtered, sorted and converted copies, blocks of scores. By default
glibc's malloc maps large blocks fresh from the system (every block over 32 MB; smaller ones
down to 128 KB until a free raises that threshold) and unmaps each one when it is freed; the
next array pays the page faults and the zeroing again. On a virtual machine a page fault is dear: on the 2-core VM of
``benchmarks/results/command_speed.md``, 2M ratings through ``movierec evaluate`` spent
about a second of 4.8 in them.

:func:`reuse_freed_memory`, called by every command but ``serve``, has glibc (Linux) serve
blocks under 1 GB from the heap and keep up to 1 GB of freed heap for the next block
(``mallopt``: ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``). What was freed goes back to the
system when the command ends. Measured on 20M ratings (``movierec evaluate``, one run each):
83 s and 3.00 GB peak before, 73 s and 3.14 GB after. Arrow's allocator (mimalloc) is left
as it is: sending Arrow through the same malloc gained nothing more and took 0.5-0.9 GB more
at the peak.

``movierec serve`` keeps the defaults: a long-lived service gives back what it frees.
Elsewhere (macOS, musl) nothing changes.

The sentiment stage is the exception for Arrow: it hashes, looks up and merges a key per
text in Arrow, and mimalloc keeps what those free until the process ends, so the stage runs
with :func:`returning_pool` as Arrow's default pool.
"""

from __future__ import annotations

import sys

#: blocks below this size come from the heap, and this much freed heap is kept (bytes)
KEEP_BYTES = 1 << 30
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def reuse_freed_memory() -> bool:
    """Set glibc's malloc as the module says; True where it took the settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library with mallopt (musl, static builds)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))


def returning_pool():
    """An Arrow memory pool that gives freed memory back to the system: jemalloc's where
    pyarrow has it (its own arenas: the heap kept by :func:`reuse_freed_memory` is glibc's),
    else the system allocator's."""
    import pyarrow as pa

    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.system_memory_pool()
