"""What a plain fit and its ranking run without importing numba (0.35-0.45 s with loading its
kernels: a third of a small ``movierec evaluate``, a tenth of one on 2M ratings): the SGD epoch
on one core and block by block on several, grouping rows by key, and the rows' top-n, as kept
machine code through :mod:`movierec._lean` (on several cores, a thread for each kernel call
of a round: ctypes lets go of the GIL). Below 1M rows, grouping is numpy's stable sort.

Each function does exactly what its numba kernel does (the same compiled code: the cfuncs
call those kernels), and hands over to it where the lean kernels are off (not Linux,
``NUMBA_DISABLE_JIT``) or the arrays are not as a cfunc reads them.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from movierec._lean import LeanKernel

#: below this many rows, grouping sorts with numpy (a stable argsort: 5 ms at 100k rows)
NUMPY_GROUPING = 1_000_000

_P, _I, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
_SOURCES = ("movierec.models._sgd", "movierec._topk")
_EPOCH_BY_USER = LeanKernel("movierec.models._sgd_c:epoch_by_user", _SOURCES, ctypes.c_double,
                            (_I,) * 4 + (_P,) * 4 + (_F,) + (_P,) * 4 + (_F,) * 3)
_BLOCK = LeanKernel("movierec.models._sgd_c:block", _SOURCES, ctypes.c_double,
                    (_I,) * 8 + (_P, _P, _I, _P, _P, _F) + (_P,) * 4 + (_F,) * 3)
_GROUP = LeanKernel("movierec.models._sgd_c:group", _SOURCES, ctypes.c_int64, (_P, _I, _P, _I, _P, _I, _P))
_TOPK = LeanKernel("movierec.models._sgd_c:topk", _SOURCES, ctypes.c_int64, (_P,) + (_I,) * 5 + (_P, _P))


def threads_available() -> int:
    """The cores SGD and ranking may use: numba's thread count (``NUMBA_NUM_THREADS``, else
    the CPUs this process may run on), without importing numba."""
    if os.environ.get("NUMBA_NUM_THREADS", "").strip().isdigit():
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _in_parallel(calls: list[tuple]) -> list:
    """Run each ``(function, *args)`` at once, the first in this thread and each other in a
    thread of its own; their results, in order. Threads are made per call, not pooled: a
    pool's threads would outlive the work (and the command's end waits for every thread), and
    a forked child would have none of them; starting one costs about 0.1 ms."""
    results: list = [None] * len(calls)
    errors: list = []

    def run(k: int) -> None:
        try:
            results[k] = calls[k][0](*calls[k][1:])
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,), name="movierec-kernel", daemon=True)
               for k in range(1, len(calls))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _typed(*arrays) -> bool:
    """Each (array, dtype, ndim) is a C-contiguous numpy array of that dtype and rank."""
    return all(isinstance(a, np.ndarray) and a.dtype == t and a.ndim == d and a.flags.c_contiguous
               for a, t, d in arrays)


def _model_ready(bu, bi, P, Q) -> bool:
    return (_typed((bu, np.float32, 1), (bi, np.float32, 1), (P, np.float32, 2), (Q, np.float32, 2))
            and all(a.flags.writeable for a in (bu, bi, P, Q))
            and P.shape == (len(bu), P.shape[1]) and Q.shape == (len(bi), P.shape[1]))


def _ratings_ready(ptr, r_items, r_vals, n_groups: int) -> bool:
    """Ratings grouped by ``ptr`` (``n_groups + 1`` starts) as a cfunc reads them."""
    return (_typed((ptr, np.int64, 1), (r_items, np.int32, 1), (r_vals, np.float32, 1))
            and len(ptr) == n_groups + 1 and len(r_items) == len(r_vals) and int(ptr[-1]) <= len(r_items))


def _lean_ready(order, r_ptr, r_items, r_vals, bu, bi, P, Q) -> bool:
    """The arrays are as the one-core cfunc reads them: dtypes, C order, consistent sizes."""
    return (_typed((order, np.int32, 1)) and _model_ready(bu, bi, P, Q)
            and _ratings_ready(r_ptr, r_items, r_vals, len(bu)))


def group_rows(rows: np.ndarray, keys: np.ndarray, n_groups: int) -> np.ndarray:
    """``rows`` grouped by ``keys[row]`` in key order, keeping their order within a key (as
    :func:`movierec.models._sgd.group_rows`: a counting sort; numpy's stable sort below
    ``NUMPY_GROUPING`` rows)."""
    rows = np.asarray(rows, np.int64)
    if len(rows) < NUMPY_GROUPING:
        return rows[np.argsort(keys[rows], kind="stable")]
    if _typed((rows, np.int64, 1), (keys, np.int32, 1)):
        fn = _GROUP.function()
        if fn is not None:
            start = np.zeros(int(n_groups) + 1, np.int64)
            out = np.empty(len(rows), np.int64)
            fn(rows.ctypes.data, len(rows), keys.ctypes.data, len(keys), start.ctypes.data, int(n_groups),
               out.ctypes.data)
            return out
    from movierec.models._sgd import group_rows as counting_sort

    return counting_sort(rows, keys, n_groups)


def sgd_epoch_by_user(user_order, r_ptr, r_items, r_vals, mu, bu, bi, P, Q, lr, reg, reg_b) -> float:
    """One pass of plain biased MF on one core, user by user: numba's
    :func:`~movierec.models._sgd.sgd_epoch_by_user`. Updates ``bu``, ``bi``, ``P``, ``Q`` in
    place; returns the training squared error."""
    if _lean_ready(user_order, r_ptr, r_items, r_vals, bu, bi, P, Q):
        fn = _EPOCH_BY_USER.function()
        if fn is not None:
            return fn(len(user_order), len(bu), len(bi), P.shape[1], user_order.ctypes.data, r_ptr.ctypes.data,
                      r_items.ctypes.data, r_vals.ctypes.data, float(mu), bu.ctypes.data, bi.ctypes.data,
                      P.ctypes.data, Q.ctypes.data, float(lr), float(reg), float(reg_b))
    from movierec.models._sgd import sgd_epoch_by_user as kernel

    return kernel(user_order, r_ptr, r_items, r_vals, np.float32(mu), bu, bi, P, Q, np.float32(lr),
                  np.float32(reg), np.float32(reg_b))


def sgd_epoch_blocks(user_order, u_bounds, b_ptr, r_items, r_vals, mu, bu, bi, P, Q, lr, reg, reg_b,
                     n_blocks) -> float:
    """One pass of plain biased MF on several cores, block by block: numba's
    :func:`~movierec.models._sgd.sgd_epoch_blocks` (the same rounds, blocks and sums), each
    round's blocks run by a pool of threads."""
    p = len(u_bounds) - 1
    n_users = len(bu)
    if (_typed((user_order, np.int32, 1), (u_bounds, np.int64, 1)) and _model_ready(bu, bi, P, Q)
            and _ratings_ready(b_ptr, r_items, r_vals, n_users * n_blocks) and p >= 1 and n_blocks % p == 0
            and u_bounds[0] >= 0 and u_bounds[-1] <= len(user_order)):
        fn = _BLOCK.function()
        if fn is not None:
            stride = n_blocks // p
            fixed = (n_blocks, len(user_order), n_users, len(bi), P.shape[1], user_order.ctypes.data,
                     b_ptr.ctypes.data, len(r_items), r_items.ctypes.data, r_vals.ctypes.data, float(mu),
                     bu.ctypes.data, bi.ctypes.data, P.ctypes.data, Q.ctypes.data, float(lr), float(reg),
                     float(reg_b))
            sse = np.zeros(p)
            for s in range(n_blocks):
                done = _in_parallel([(fn, int(u_bounds[c]), int(u_bounds[c + 1]), (s + c * stride) % n_blocks, *fixed)
                                     for c in range(p)])
                for c in range(p):
                    sse[c] += done[c]
            return float(sse.sum())
    from movierec.models._sgd import sgd_epoch_blocks as kernel

    return kernel(user_order, u_bounds, b_ptr, r_items, r_vals, np.float32(mu), bu, bi, P, Q, np.float32(lr),
                  np.float32(reg), np.float32(reg_b), n_blocks)


def topk_rows(s: np.ndarray, n: int, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the n largest entries of each row of ``s``, best first (ties: the
    lower index; -inf last): :func:`movierec._topk.topk_rows`, the rows shared among threads."""
    if _typed((s, np.float32, 2)) and n >= 1:
        fn = _TOPK.function()
        if fn is not None:
            rows, cols = s.shape
            idx = np.full((rows, n), -1, dtype=np.int64)
            val = np.full((rows, n), -np.inf, dtype=np.float32)
            p = max(1, min(threads or threads_available(), rows // 64 or 1))
            bounds = np.linspace(0, rows, p + 1).astype(np.int64)
            args = (s.ctypes.data, rows, cols, n)
            _in_parallel([(fn, *args, int(lo), int(hi), idx.ctypes.data, val.ctypes.data)
                          for lo, hi in zip(bounds[:-1], bounds[1:])])
            return idx, val
    from movierec._topk import topk_rows as kernel

    return kernel(s, n)
