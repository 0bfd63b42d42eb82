"""pandas and scipy.sparse imported where first used, not where a module is imported.

``movierec recommend --user`` answers from numpy arrays in well under a second; importing
pandas (about 0.3 s) and scipy.sparse (about 0.2 s) would be most of its time. The modules on
that path (the registry, the served bundle, the service, feedback, privacy) name the two
libraries through these stand-ins, so a call that never touches a frame or a sparse matrix
never imports them::

    from movierec._lazy import pd, sp

    pd.DataFrame(...)      # pandas is imported here, once

:func:`is_frame` asks whether a value is a pandas DataFrame without importing pandas (a value
cannot be one before pandas is imported).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


class LazyModule:
    """A module imported on first attribute access (then each access is a ``sys.modules``
    lookup and a ``getattr``)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str) -> Any:
        module = sys.modules.get(self._name) or importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._name in sys.modules else ''}>"


pd: Any = LazyModule("pandas")
sp: Any = LazyModule("scipy.sparse")


def is_frame(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas)."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)
