"""The rating scale: learned from the data when the config does not set it.

Platforms rate on 1–5, 0.5–5, 1–10 or 0–100; a scale is learned from the bulk of the
ratings so that one absurd value (1e30, a -1 sentinel, a 90 among stars) is set aside
instead of becoming the scale, and so that training sees every scale alike.

Star ratings also sit on a grid (whole stars, or halves): when the bulk does, the grid is
part of the learned scale, so that a 5.5 among whole stars (or a 5.0000001 written by some
export) is set aside too, and so is a 0 or a 6 that a handful of rows hold among thousands
of 1–5 stars. Ratings without a grid (continuous scores) keep the fence alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatingScale:
    lo: float
    hi: float
    inferred: bool
    step: float | None = None  # the grid the learned ratings sit on (1: whole stars, 0.5: halves)

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def contains(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, np.float64)
        return np.isfinite(r) & (r >= self.lo) & (r <= self.hi)

    def on_grid(self, r: np.ndarray) -> np.ndarray:
        """True where ``r`` lies on the scale's grid (everywhere when it has none)."""
        r = np.asarray(r, np.float64)
        if self.step is None:
            return np.ones(r.shape, bool)
        return _on_grid(r, self.step)

    def describe(self) -> str:
        return f"{self.lo:g}..{self.hi:g}" + (", learned from the data" if self.inferred else "")

    def describe_grid(self) -> str:
        """``1..5 in steps of 1`` (the range alone where there is no grid)."""
        return f"{self.lo:g}..{self.hi:g}" + (f" in steps of {self.step:g}" if self.step is not None else "")

    def to_dict(self) -> dict:
        return {"min": self.lo, "max": self.hi, "inferred": self.inferred}

    @classmethod
    def union(cls, scales) -> "RatingScale":
        """One scale spanning ``scales`` (several files, or the parts of one table)."""
        steps = [s.step for s in scales]
        step = None
        if steps and all(st is not None for st in steps):
            step = min(steps)  # halves and whole stars: halves
            if not all(abs(st / step - round(st / step)) < 1e-9 for st in steps):
                step = None
        return cls(min(s.lo for s in scales), max(s.hi for s in scales), any(s.inferred for s in scales), step)


def outlier_fence(r: np.ndarray) -> tuple[float, float]:
    """Where ratings stop being plausible members of the bulk's scale.

    The core is the 0.1%..99.9% quantile range; the fence lies a quarter of its width
    beyond it (room for a rare top or bottom mark), and never further than ten
    interquartile ranges from the quartiles (on a small file the extreme quantiles are the
    outliers themselves).
    """
    r = np.asarray(r, np.float64)
    return _fence(*levels(r[np.isfinite(r)]))


def _fence(values: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """:func:`outlier_fence` of the ratings that :func:`levels` gives as ``values``, ``counts``."""
    if not len(values):
        return -np.inf, np.inf
    q_lo, c_lo, q1, q3, c_hi, q_hi = quantile(values, counts, [0.001, 0.01, 0.25, 0.75, 0.99, 0.999])
    width = q_hi - q_lo
    if width <= 0:
        width = max(abs(q_hi), 1.0)
    # the floor of the spread comes from the 1%..99% range: on a file of a few hundred rows the
    # 0.1%..99.9% range is the absurd value itself (one age of 1e30 among 300 users)
    central = c_hi - c_lo
    iqr = max(q3 - q1, 0.05 * (central if central > 0 else width), 1e-9)
    return max(q_lo - 0.25 * width, q1 - 10 * iqr), min(q_hi + 0.25 * width, q3 + 10 * iqr)


#: a sample of this many ratings tells whether :func:`levels` counts or sorts
LEVEL_SAMPLE = 4096


def levels(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``r`` (finite numbers), ascending, and how often each occurs.

    Ratings hold a handful of values (stars, halves, 0..100): they are counted in a hash
    table (pandas' value_counts), not sorted (2M ratings: about 15 ms against 0.1 s). Where
    a sample shows mostly distinct values (continuous scores), the values are sorted.
    """
    r = np.asarray(r, np.float64)
    if len(r) > LEVEL_SAMPLE and len(np.unique(r[:: len(r) // LEVEL_SAMPLE])) <= LEVEL_SAMPLE // 4:
        import pandas as pd

        vc = pd.Series(r, copy=False).value_counts(sort=False)
        values, counts = vc.index.to_numpy(np.float64), vc.to_numpy(np.int64)
        order = np.argsort(values)
        return values[order], counts[order]
    return np.unique(r, return_counts=True)


def quantile(values: np.ndarray, counts: np.ndarray, q, method: str = "linear"):
    """``np.quantile(data, q, method=method)`` of the data that ``values`` occurring
    ``counts`` times make up (``method``: "linear", "lower" or "higher"), without the data."""
    n = int(counts.sum())
    ends = np.cumsum(counts)  # the k-th smallest value (from 0) is values[first end > k]
    h = (n - 1) * np.asarray(q, np.float64)
    if method == "lower":
        return values[np.searchsorted(ends, np.floor(h), side="right")]
    if method == "higher":
        return values[np.searchsorted(ends, np.ceil(h), side="right")]
    below = np.floor(h)
    a = values[np.searchsorted(ends, below, side="right")]
    b = values[np.searchsorted(ends, np.minimum(below + 1, n - 1), side="right")]
    t = h - below
    # numpy's interpolation, to the last bit: from the nearer end
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


#: the grids ratings are looked for on, coarsest first: whole stars (or points), half stars
GRID_STEPS = (1.0, 0.5)
#: the bulk sits on a grid when at most this share of it lies off the grid
GRID_OFF_SHARE = 0.01
#: a grid of at most this many levels is a star scale: its range is that of the levels that at
#: least TAIL_SHARE of the ratings reach (a 0 or a 6 held by a few rows among thousands of
#: 1–5 stars is not a level of the scale); a finer grid (0..100) keeps the fence alone
STAR_LEVELS = 21
TAIL_SHARE = 0.001


def _on_grid(r: np.ndarray, step: float) -> np.ndarray:
    """|x - round(x)| <= 1e-9 * max(1, |x|) for x = r / step, in two temporaries (not seven:
    called several times per ratings file, 2.5x faster on 2M ratings)."""
    x = r / step
    d = np.round(x)
    np.subtract(x, d, out=d)
    np.abs(d, out=d)
    np.abs(x, out=x)
    np.maximum(x, 1.0, out=x)
    x *= 1e-9
    return d <= x


def find_grid(r: np.ndarray) -> float | None:
    """The grid step the finite values ``r`` sit on (see :data:`GRID_STEPS`), else None."""
    r = np.asarray(r, np.float64)
    return _grid(*levels(r[np.isfinite(r)]))


def _grid(values: np.ndarray, counts: np.ndarray) -> float | None:
    """:func:`find_grid` of the ratings that :func:`levels` gives as ``values``, ``counts``."""
    if not len(values):
        return None
    for step in GRID_STEPS:
        if counts[~_on_grid(values, step)].sum() <= GRID_OFF_SHARE * counts.sum():
            return step
    return None


def learn_scale(r: np.ndarray, lo: float | None = None, hi: float | None = None) -> RatingScale:
    """The scale of ``r``: the configured bounds where given, else the range of the ratings
    inside :func:`outlier_fence`; on a star grid (:func:`find_grid`, at most
    :data:`STAR_LEVELS` levels) the range of the on-grid levels that at least
    :data:`TAIL_SHARE` of the ratings reach. Computed on the distinct values and their
    counts (:func:`levels`), not on every rating."""
    r = np.asarray(r, np.float64)
    if lo is not None and hi is not None:
        return RatingScale(float(lo), float(hi), False)
    values, counts = levels(r[np.isfinite(r)])
    f_lo, f_hi = _fence(values, counts)
    keep = (values >= (lo if lo is not None else f_lo)) & (values <= (hi if hi is not None else f_hi))
    if keep.any():
        values, counts = values[keep], counts[keep]
    step = _grid(values, counts)
    if step is not None:
        on = _on_grid(values, step)
        grid, grid_counts = values[on], counts[on]
        g_lo, g_hi = float(grid.min()), float(grid.max())
        if (g_hi - g_lo) / step + 1 <= STAR_LEVELS:
            # the lowest level with more than TAIL_SHARE of the ratings at or below it, and the
            # same from the top ("lower"/"higher": real levels, never a value in between)
            g_lo = float(quantile(grid, grid_counts, TAIL_SHARE, "lower"))
            g_hi = float(quantile(grid, grid_counts, 1 - TAIL_SHARE, "higher"))
        values = values[(values >= g_lo) & (values <= g_hi)]
        if g_lo >= g_hi:  # every rating alike: no grid to speak of
            step = None
    return RatingScale(float(lo if lo is not None else values.min()),
                       float(hi if hi is not None else values.max()), True, step)
