"""The one-core SGD epoch through movierec._lean: numba's kernel bit for bit, its machine code
kept and loaded by later processes without numba, and numba unharmed when it comes after."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from movierec import _lean
from movierec.models import _kernels

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="lean kernels are Linux-only")


def _problem(seed=0, nu=300, ni=200, k=12, nr=6000):
    rng = np.random.default_rng(seed)
    users = np.sort(rng.integers(0, nu, nr))
    ptr = np.zeros(nu + 1, np.int64)
    ptr[1:] = np.cumsum(np.bincount(users, minlength=nu))
    return dict(
        r_ptr=ptr, r_items=rng.integers(0, ni, nr).astype(np.int32), r_vals=rng.uniform(1, 5, nr).astype(np.float32),
        bu=np.zeros(nu, np.float32), bi=np.zeros(ni, np.float32),
        P=rng.normal(0, 0.1, (nu, k)).astype(np.float32), Q=rng.normal(0, 0.1, (ni, k)).astype(np.float32),
        orders=[rng.permutation(nu).astype(np.int32) for _ in range(4)])


def _epochs(kernel, p):
    """Four epochs of ``kernel``; the losses and the trained arrays."""
    losses = [kernel(order, p["r_ptr"], p["r_items"], p["r_vals"], np.float32(3.5), p["bu"], p["bi"], p["P"], p["Q"],
                     np.float32(0.01), np.float32(0.02), np.float32(0.03)) for order in p["orders"]]
    return losses, p["bu"], p["bi"], p["P"], p["Q"]


def test_the_lean_epoch_is_numbas_kernel_bit_for_bit():
    from movierec.models._sgd import sgd_epoch_by_user

    lean, numba = _epochs(_kernels.sgd_epoch_by_user, _problem()), _epochs(sgd_epoch_by_user, _problem())
    assert _kernels._EPOCH_BY_USER.function() is not None
    assert lean[0] == numba[0] and lean[0][-1] < lean[0][0]  # the same losses, and it learns
    for a, b in zip(lean[1:], numba[1:]):
        assert np.array_equal(a, b)


def test_arrays_the_cfunc_cannot_read_go_to_numbas_kernel():
    """Another dtype, a non-contiguous or read-only factor table, inconsistent sizes: the lean
    kernel is not called (it would read the memory wrongly); numba's kernel runs as before."""
    from movierec.models._sgd import sgd_epoch_by_user

    base = _problem(1)
    args = (base["orders"][0], base["r_ptr"], base["r_items"], base["r_vals"], base["bu"], base["bi"], base["P"],
            base["Q"])
    assert _kernels._lean_ready(*args)
    wide = np.zeros((base["P"].shape[0], 2 * base["P"].shape[1]), np.float32)
    frozen = base["Q"].copy()
    frozen.flags.writeable = False
    for i, bad in ((2, base["r_items"].astype(np.int64)), (6, wide[:, ::2]), (7, frozen), (4, base["bu"][:-1]),
                   (1, base["r_ptr"][:-1])):
        assert not _kernels._lean_ready(*args[:i], bad, *args[i + 1:])
    p, q = _problem(1), _problem(1)
    p["Q"], q["Q"] = np.asfortranarray(p["Q"]), np.asfortranarray(q["Q"])  # numba's kernel takes it, the cfunc not
    assert _epochs(_kernels.sgd_epoch_by_user, p)[0] == _epochs(sgd_epoch_by_user, q)[0]


def test_grouping_by_numpy_is_the_counting_sort():
    from movierec.models._sgd import group_rows as counting_sort

    rng = np.random.default_rng(2)
    keys = rng.integers(0, 50, 5000).astype(np.int32)
    rows = rng.permutation(5000)[:4000].astype(np.int64)
    assert np.array_equal(_kernels.group_rows(rows, keys, 50), counting_sort(rows, keys, 50))


_CHILD = """
import json, sys
import numpy as np
from tests.models.test_lean import _epochs, _problem
from movierec.models import _kernels
losses = _epochs(_kernels.sgd_epoch_by_user, _problem(3))[0]
out = {"losses": losses, "from": _kernels._EPOCH_BY_USER.loaded_from, "numba": "numba" in sys.modules}
if sys.argv[1] == "then-numba":  # numba after a lean load: its own symbols still bind (errors included)
    from numba import njit

    @njit
    def fails(x):
        if x > 0:
            raise ValueError("numba raised")
        return x
    try:
        fails(1)
    except ValueError as e:
        out["numba_error"] = str(e)
print(json.dumps(out))
"""


def _child(env, mode="plain"):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", _CHILD, mode], cwd=root, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_kept_object_loads_in_the_next_process_without_numba(tmp_path):
    """The first process compiles the cfunc with numba and keeps its object; the next loads
    it without importing numba and computes the same; numba, imported after, still works."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    first = _child(env)
    assert first["from"] == "numba" and first["numba"]
    kept = list((tmp_path / "movierec").glob("_sgd_c.epoch_by_user-*.lean.o"))
    assert len(kept) == 1 and oct(kept[0].stat().st_mode & 0o777) == "0o644"
    # the one compile kept every kernel of the module (not one compile for each, later)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "movierec").glob("*.lean.o")) == [
        "_sgd_c.block", "_sgd_c.epoch_by_user", "_sgd_c.group", "_sgd_c.topk"]
    second = _child(env)
    assert second == {**first, "from": "disk", "numba": False}
    third = _child(env, "then-numba")
    assert third["from"] == "disk" and third["numba_error"] == "numba raised" and third["losses"] == first["losses"]


def test_a_torn_or_foreign_object_is_recompiled_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    spec = _kernels._EPOCH_BY_USER

    def fresh():
        k = _lean.LeanKernel(spec.builder, spec.sources, spec.prototype._restype_, spec.prototype._argtypes_)
        assert k.function() is not None
        return k

    assert fresh().loaded_from == "numba"  # nothing kept in this folder yet: numba compiles, the object is kept
    path, = (tmp_path / "movierec").glob("_sgd_c.epoch_by_user-*.lean.o")
    good = path.read_bytes()
    assert fresh().loaded_from == "disk"
    head, obj = good.split(b"\n", 1)
    meta = json.loads(head)
    for bad in (good[: len(good) // 2],  # torn
                head + b"\n" + obj[:-1] + bytes([obj[-1] ^ 1]),  # a byte changed
                json.dumps({**meta, "key": "0" * 64}).encode() + b"\n" + obj,  # another machine's or version's
                b"not an object"):
        path.write_bytes(bad)
        assert fresh().loaded_from == "numba"
        assert path.read_bytes() == good  # compiled again and kept again, whole
    with pytest.raises(ValueError):
        _lean.undefined_symbols(b"MZ not ELF")
    assert "PyErr_SetString" in _lean.undefined_symbols(obj)  # numba's wrapper's error path


def test_no_lean_kernel_where_numba_is_told_not_to_compile(monkeypatch):
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    spec = _kernels._EPOCH_BY_USER
    k = _lean.LeanKernel(spec.builder, spec.sources, spec.prototype._restype_, spec.prototype._argtypes_)
    assert k.function() is None


def test_block_by_block_epochs_group_and_topk_are_numbas_kernels_bit_for_bit():
    """Several cores: the lean block epoch (Python threads, one kernel call each) against
    numba's parallel kernel; the counting sort and the top-n kernel likewise."""
    from movierec import _topk
    from movierec.models import _sgd
    from movierec.models.mf import _block_layout
    from movierec.models.train_data import TrainData

    rng = np.random.default_rng(5)
    n_users, n_items, n = 400, 250, 20000
    data = TrainData(users=rng.integers(0, n_users, n), items=rng.integers(0, n_items, n),
                     ratings=rng.uniform(1, 5, n), n_users=n_users, n_items=n_items)
    rows = np.arange(n, dtype=np.int64)
    b_ptr, items, vals, parts, n_blocks = _block_layout(rows, data, 2, 4, np.random.default_rng(0))
    runs = []
    for kernel in (_kernels.sgd_epoch_blocks, _sgd.sgd_epoch_blocks):
        p = _problem(6, nu=n_users, ni=n_items)
        losses = [kernel(np.random.default_rng(e).permutation(n_users).astype(np.int32), parts, b_ptr, items, vals,
                         np.float32(3.0), p["bu"], p["bi"], p["P"], p["Q"], np.float32(0.01), np.float32(0.02),
                         np.float32(0.02), n_blocks) for e in range(3)]
        runs.append((losses, p["P"], p["Q"], p["bu"], p["bi"]))
    assert _kernels._BLOCK.function() is not None
    assert runs[0][0] == runs[1][0] and runs[0][0][-1] < runs[0][0][0]
    for a, b in zip(runs[0][1:], runs[1][1:]):
        assert np.array_equal(a, b)
    # grouping over NUMPY_GROUPING rows: the lean counting sort
    keys = rng.integers(0, 3000, _kernels.NUMPY_GROUPING + 10).astype(np.int32)
    shuffled = rng.permutation(len(keys)).astype(np.int64)
    grouped = _kernels.group_rows(shuffled, keys, 3000)
    assert _kernels._GROUP.function() is not None
    assert np.array_equal(grouped, _sgd.group_rows(shuffled, keys, 3000))
    assert np.array_equal(grouped, shuffled[np.argsort(keys[shuffled], kind="stable")])
    # top-n with ties and masked entries, rows split among threads
    s = rng.integers(-2, 3, (300, 500)).astype(np.float32)
    s[rng.random(s.shape) < 0.5] = -np.inf
    s[7] = -np.inf  # a row with nothing to rank: the lowest columns
    for threads in (1, 2, 3):
        a, b = _kernels.topk_rows(s, 25, threads), _topk.topk_rows(s, 25)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0][7].tolist() == list(range(25))


def test_kernel_threads_end_with_their_work(tmp_path):
    """A command that ran the kernels on several cores ends (it waits for every thread it
    started; threads kept for later would keep it waiting), and a child forked after them
    runs them too."""
    import multiprocessing
    import threading

    s = np.random.default_rng(0).random((256, 50)).astype(np.float32)
    before = threading.active_count()
    parent = _kernels.topk_rows(s, 5, 2)
    assert threading.active_count() == before
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply_async(_kernels.topk_rows, (s, 5, 2)).get(timeout=60)
    assert np.array_equal(parent[0], child[0])


def test_the_thread_count_is_numbas_without_numba(monkeypatch):
    import numba

    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    assert _kernels.threads_available() == numba.config.NUMBA_DEFAULT_NUM_THREADS
    monkeypatch.setenv("NUMBA_NUM_THREADS", "3")
    assert _kernels.threads_available() == 3
