"""Compiled row-wise top-n (numba, parallel over rows): one pass per row with a small
sorted buffer, instead of numpy's argpartition plus copies of the whole score block."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from movierec._jit import lean_cache_loads


@njit(cache=True, parallel=True)
def topk_rows(s, n):  # pragma: no cover - compiled
    """Indices and values of the n largest entries of each row, best first.

    Ties keep the lower index first; -inf entries (masked) come last.
    """
    rows = s.shape[0]
    idx = np.full((rows, n), -1, dtype=np.int64)
    val = np.full((rows, n), -np.inf, dtype=np.float32)
    for r in prange(rows):
        topk_row(s, n, r, idx, val)
    return idx, val


@njit(cache=True, inline="always")
def topk_row(s, n, r, idx, val):  # pragma: no cover - compiled
    """Row ``r``'s n best into ``idx[r]``, ``val[r]`` (which start at -1 and -inf)."""
    cols = s.shape[1]
    filled = 0
    for c in range(cols):
        v = s[r, c]
        if filled == n and not v > val[r, n - 1]:
            continue
        # insert v, keeping val[r, :filled] sorted descending (stable for ties)
        pos = filled if filled < n else n - 1
        while pos > 0 and v > val[r, pos - 1]:
            if pos < n:
                val[r, pos] = val[r, pos - 1]
                idx[r, pos] = idx[r, pos - 1]
            pos -= 1
        val[r, pos] = v
        idx[r, pos] = c
        if filled < n:
            filled += 1
    # rows with fewer than n finite candidates: fill with the lowest unused indices
    if filled < n:
        k = filled
        for c in range(cols):
            if k >= n:
                break
            used = False
            for j in range(filled):
                if idx[r, j] == c:
                    used = True
                    break
            if not used:
                idx[r, k] = c
                val[r, k] = s[r, c]
                k += 1


@njit(cache=True)
def topk_rows_into(s, n, lo, hi, idx, val):  # pragma: no cover - compiled
    """:func:`topk_rows` of rows ``lo:hi`` into ``idx`` and ``val`` (filled with -1 and -inf):
    nothing allocated (what a cfunc may call)."""
    for r in range(lo, hi):
        topk_row(s, n, r, idx, val)


# a cache hit loads without numba's compile-only set-up (movierec._jit)
lean_cache_loads(topk_rows, topk_rows_into)
