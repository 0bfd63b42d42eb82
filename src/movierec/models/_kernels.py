"""What a plain fit below 1M ratings runs without importing numba (0.3-0.4 s with loading its
kernels: a third of a small ``movierec evaluate``): the one-core SGD epoch through
:mod:`movierec._lean`, and the grouping of rows by user with numpy. Larger data, other layouts,
or a machine where the lean kernel is off go to numba's kernels in :mod:`movierec.models._sgd`.
"""

from __future__ import annotations

import ctypes

import numpy as np

from movierec._lean import LeanKernel

#: below this many rows, grouping sorts with numpy (a stable argsort: 5 ms at 100k rows)
#: rather than import numba for its counting sort
NUMPY_GROUPING = 1_000_000

_P = ctypes.c_void_p
_EPOCH_BY_USER = LeanKernel(
    "movierec.models._sgd_c:epoch_by_user", ("movierec.models._sgd",), ctypes.c_double,
    (ctypes.c_int64,) * 4 + (_P,) * 4 + (ctypes.c_float,) + (_P,) * 4 + (ctypes.c_float,) * 3)


def group_rows(rows: np.ndarray, keys: np.ndarray, n_groups: int) -> np.ndarray:
    """``rows`` grouped by ``keys[row]`` in key order, keeping their order within a key (as
    :func:`movierec.models._sgd.group_rows`, which it calls from ``NUMPY_GROUPING`` rows)."""
    if len(rows) < NUMPY_GROUPING:
        rows = np.asarray(rows, np.int64)
        return rows[np.argsort(keys[rows], kind="stable")]
    from movierec.models._sgd import group_rows as counting_sort

    return counting_sort(rows, keys, n_groups)


def _lean_ready(order, r_ptr, r_items, r_vals, bu, bi, P, Q) -> bool:
    """The arrays are as the cfunc reads them: dtypes, C order, consistent sizes."""
    arrays = ((order, np.int32, 1), (r_ptr, np.int64, 1), (r_items, np.int32, 1), (r_vals, np.float32, 1),
              (bu, np.float32, 1), (bi, np.float32, 1), (P, np.float32, 2), (Q, np.float32, 2))
    if not all(isinstance(a, np.ndarray) and a.dtype == t and a.ndim == d and a.flags.c_contiguous
               for a, t, d in arrays) or not all(a.flags.writeable for a in (bu, bi, P, Q)):
        return False
    n_users, n_items = len(bu), len(bi)
    return (P.shape == (n_users, P.shape[1]) and Q.shape == (n_items, P.shape[1]) and len(r_ptr) == n_users + 1
            and len(r_items) == len(r_vals) and int(r_ptr[-1]) <= len(r_items))


def sgd_epoch_by_user(user_order, r_ptr, r_items, r_vals, mu, bu, bi, P, Q, lr, reg, reg_b) -> float:
    """One pass of plain biased MF on one core, user by user: numba's
    :func:`~movierec.models._sgd.sgd_epoch_by_user`, compiled into a cfunc that loads without
    numba where it can (else numba's kernel itself). Updates ``bu``, ``bi``, ``P``, ``Q`` in
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
