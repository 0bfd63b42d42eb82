"""movierec's plain-MF kernels as C-callable functions (numba ``cfunc``), for
:mod:`movierec._lean`: later processes load their machine code without importing numba.

Imported only when no kept object loads (it compiles the cfuncs: a few seconds, once per
machine and version). The arrays arrive as pointers and sizes; each cfunc calls the numba
function that does the work (:mod:`movierec.models._sgd`, :mod:`movierec._topk`), compiled
into it. None allocates: what they write, the caller made.
"""

from numba import carray, cfunc, types

from movierec._topk import topk_rows_into
from movierec.models._sgd import group_rows_into, sgd_block, sgd_epoch_by_user

_I32P, _I64P, _F32P = types.CPointer(types.int32), types.CPointer(types.int64), types.CPointer(types.float32)
_F32, _I64 = types.float32, types.int64

#: (n_order, n_users, n_items, factors, order, r_ptr, r_items, r_vals, mu, bu, bi, P, Q, lr, reg, reg_b)
EPOCH_BY_USER = types.float64(_I64, _I64, _I64, _I64, _I32P, _I64P, _I32P, _F32P, _F32, _F32P, _F32P, _F32P, _F32P,
                              _F32, _F32, _F32)
#: (lo, hi, block, n_blocks, n_order, n_users, n_items, factors, order, b_ptr, n_rated, r_items, r_vals, mu, bu, bi,
#:  P, Q, lr, reg, reg_b)
BLOCK = types.float64(_I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I32P, _I64P, _I64, _I32P, _F32P, _F32,
                      _F32P, _F32P, _F32P, _F32P, _F32, _F32, _F32)
#: (rows, n_rows, keys, n_keys, start, n_groups, out)
GROUP = types.int64(_I64P, _I64, _I32P, _I64, _I64P, _I64, _I64P)
#: (scores, rows, cols, n, lo, hi, idx, val)
TOPK = types.int64(_F32P, _I64, _I64, _I64, _I64, _I64, _I64P, _F32P)


@cfunc(EPOCH_BY_USER, fastmath=True)
def epoch_by_user(n_order, n_users, n_items, k, order, r_ptr, r_items, r_vals, mu, bu, bi, P, Q, lr, reg,
                  reg_b):  # pragma: no cover - compiled
    ptr = carray(r_ptr, (n_users + 1,))
    n = ptr[n_users]
    return sgd_epoch_by_user(carray(order, (n_order,)), ptr, carray(r_items, (n,)), carray(r_vals, (n,)), mu,
                             carray(bu, (n_users,)), carray(bi, (n_items,)), carray(P, (n_users, k)),
                             carray(Q, (n_items, k)), lr, reg, reg_b)


@cfunc(BLOCK, fastmath=True)
def block(lo, hi, b, n_blocks, n_order, n_users, n_items, k, order, b_ptr, n_rated, r_items, r_vals, mu, bu, bi, P,
          Q, lr, reg, reg_b):  # pragma: no cover - compiled
    return sgd_block(carray(order, (n_order,)), lo, hi, b, n_blocks, carray(b_ptr, (n_users * n_blocks + 1,)),
                     carray(r_items, (n_rated,)), carray(r_vals, (n_rated,)), mu, carray(bu, (n_users,)),
                     carray(bi, (n_items,)), carray(P, (n_users, k)), carray(Q, (n_items, k)), lr, reg, reg_b)


@cfunc(GROUP)
def group(rows, n_rows, keys, n_keys, start, n_groups, out):  # pragma: no cover - compiled
    group_rows_into(carray(rows, (n_rows,)), carray(keys, (n_keys,)), carray(start, (n_groups + 1,)),
                    carray(out, (n_rows,)))
    return 0


@cfunc(TOPK)
def topk(s, rows, cols, n, lo, hi, idx, val):  # pragma: no cover - compiled
    topk_rows_into(carray(s, (rows, cols)), n, lo, hi, carray(idx, (rows, n)), carray(val, (rows, n)))
    return 0
