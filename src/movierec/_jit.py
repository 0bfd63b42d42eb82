"""numba kernels loaded from numba's on-disk cache without compiling-only set-up.

Before numba looks in its cache for a kernel's machine code, it refreshes its CPU target:
it imports every implementation it might need to *compile* something (numpy's array math,
linear algebra, typed containers, random generators, datetime...) and registers them. On a
cache hit nothing is compiled, yet that refresh costs 0.15-0.3 s in every process: half of
what numba costs a `movierec evaluate` on MovieLens-100K.

:func:`lean_cache_loads` gives movierec's own kernels a loader that, on a hit, starts only
numba's runtime (NRT: what compiled code allocates arrays with) and loads the machine code.
A miss, or any error on the way, goes to numba's own loader, which refreshes as before; so
does compiling (numba's compiler refreshes the target itself). With a numba whose cache
lacks the private methods used here, the kernels keep numba's loader.
"""

from __future__ import annotations

import functools


def lean_cache_loads(*kernels) -> None:
    """Give each of ``kernels`` (``numba.njit(cache=True)`` dispatchers) the lean loader."""
    try:
        from numba.core.caching import Cache
        from numba.core.runtime.nrt import rtsys
    except ImportError:  # pragma: no cover - numba moved its internals: numba's own loader
        return
    for kernel in kernels:
        cache = getattr(kernel, "_cache", None)
        if isinstance(cache, Cache) and callable(getattr(cache, "_load_overload", None)) \
                and callable(getattr(cache, "_guard_against_spurious_io_errors", None)):
            cache.load_overload = functools.partial(_lean_load, cache, Cache.load_overload, rtsys)


def _lean_load(cache, numba_load, rtsys, sig, target_context):
    """The cached overload of ``sig`` (None: not cached), loaded after starting only the
    runtime; numba's own ``load_overload`` where that does not give one."""
    try:
        rtsys.initialize(target_context)
        with cache._guard_against_spurious_io_errors():
            hit = cache._load_overload(sig, target_context)
    except Exception:  # noqa: BLE001 - anything odd: numba's own path decides (and reports)
        hit = None
    return hit if hit is not None else numba_load(cache, sig, target_context)
