"""The rating scale: learned from the data when the config does not set it.

Platforms rate on 1–5, 0.5–5, 1–10 or 0–100; a scale is learned from the bulk of the
ratings so that one absurd value (1e30, a -1 sentinel, a 90 among stars) is set aside
instead of becoming the scale, and so that training sees every scale alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatingScale:
    lo: float
    hi: float
    inferred: bool

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def contains(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, np.float64)
        return np.isfinite(r) & (r >= self.lo) & (r <= self.hi)

    def describe(self) -> str:
        return f"{self.lo:g}..{self.hi:g}" + (", learned from the data" if self.inferred else "")

    def to_dict(self) -> dict:
        return {"min": self.lo, "max": self.hi, "inferred": self.inferred}

    @classmethod
    def union(cls, scales) -> "RatingScale":
        """One scale spanning ``scales`` (several files, or the parts of one table)."""
        return cls(min(s.lo for s in scales), max(s.hi for s in scales), any(s.inferred for s in scales))


def outlier_fence(r: np.ndarray) -> tuple[float, float]:
    """Where ratings stop being plausible members of the bulk's scale.

    The core is the 0.1%..99.9% quantile range; the fence lies a quarter of its width
    beyond it (room for a rare top or bottom mark), and never further than ten
    interquartile ranges from the quartiles (on a small file the extreme quantiles are the
    outliers themselves).
    """
    r = np.asarray(r, np.float64)
    r = r[np.isfinite(r)]
    if not len(r):
        return -np.inf, np.inf
    q_lo, q1, q3, q_hi = np.quantile(r, [0.001, 0.25, 0.75, 0.999])
    width = q_hi - q_lo
    if width <= 0:
        width = max(abs(q_hi), 1.0)
    iqr = max(q3 - q1, 0.05 * width, 1e-9)
    return max(q_lo - 0.25 * width, q1 - 10 * iqr), min(q_hi + 0.25 * width, q3 + 10 * iqr)


def learn_scale(r: np.ndarray, lo: float | None = None, hi: float | None = None) -> RatingScale:
    """The scale of ``r``: the configured bounds where given, else the range of the ratings
    inside :func:`outlier_fence`."""
    r = np.asarray(r, np.float64)
    r = r[np.isfinite(r)]
    if lo is not None and hi is not None:
        return RatingScale(float(lo), float(hi), False)
    f_lo, f_hi = outlier_fence(r)
    inside = r[(r >= (lo if lo is not None else f_lo)) & (r <= (hi if hi is not None else f_hi))]
    if not len(inside):
        inside = r
    return RatingScale(float(lo if lo is not None else inside.min()),
                       float(hi if hi is not None else inside.max()), True)
