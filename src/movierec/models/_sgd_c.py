"""The one-core SGD epoch of plain biased MF as a C-callable function (a numba ``cfunc``), for
:mod:`movierec._lean`: later processes load its machine code without importing numba.

Imported only when no kept object loads (it compiles the cfunc: about 1.5 s, once per machine
and version). The arrays arrive as pointers and sizes; the epoch itself is
:func:`movierec.models._sgd.sgd_epoch_by_user`, compiled into the cfunc.
"""

from numba import carray, cfunc, types

from movierec.models._sgd import sgd_epoch_by_user

_I32P, _I64P, _F32P = types.CPointer(types.int32), types.CPointer(types.int64), types.CPointer(types.float32)
_F32 = types.float32

#: (n_order, n_users, n_items, factors, order, r_ptr, r_items, r_vals, mu, bu, bi, P, Q, lr, reg, reg_b)
SIGNATURE = types.float64(types.int64, types.int64, types.int64, types.int64, _I32P, _I64P, _I32P, _F32P, _F32,
                          _F32P, _F32P, _F32P, _F32P, _F32, _F32, _F32)


@cfunc(SIGNATURE, fastmath=True)
def epoch_by_user(n_order, n_users, n_items, k, order, r_ptr, r_items, r_vals, mu, bu, bi, P, Q, lr, reg,
                  reg_b):  # pragma: no cover - compiled
    ptr = carray(r_ptr, (n_users + 1,))
    n = ptr[n_users]
    return sgd_epoch_by_user(carray(order, (n_order,)), ptr, carray(r_items, (n,)), carray(r_vals, (n,)), mu,
                             carray(bu, (n_users,)), carray(bi, (n_items,)), carray(P, (n_users, k)),
                             carray(Q, (n_items, k)), lr, reg, reg_b)
