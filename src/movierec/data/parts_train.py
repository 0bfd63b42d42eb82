"""Training from ratings that stay in the cluster: ``ratings_clean`` as a folder of Parquet
parts (what Ray's clean writes), read by the workers that need them, never by the driver.

With ``engine.kind: ray``, ``model.optimizer: adam`` and a model whose side data is
O(viewers + movies) (see :func:`movierec.pipeline.parts_route`), ``train`` works on these:

- :func:`summarize`: one Ray task per part counts what the driver needs to set the model up
  and to record the fit: the training part's size, range and sum (for the global mean),
  the ratings per viewer and per movie outside the validation slice (which start without
  factors), the validation slice's size;
- :func:`read_rows`: each Ray Train worker reads its own slice of the parts' rows (row
  groups overlapping it, :func:`shards` cuts them), keeps the training part and splits it
  into its training and validation ratings;
- :func:`held_out`: the validation slice is chosen by a hash of (viewer, movie, seed), so
  every worker and every task agrees on it without a mask of the ratings anywhere;
- :func:`write_seen`: the model version's ``seen.npz`` (every rating as a sparse matrix of
  viewers x movies) assembled from per-part pieces that Ray tasks sort and write, streamed
  into the file in viewer order: the driver holds one piece's bytes at a time.

Part k of ``ratings_clean`` holds a range of viewers (clean buckets the rows by range of
viewer id, numbered in order), which is what lets ``seen.npz`` be streamed; a table whose
parts' viewers overlap is refused (:func:`write_seen` raises, the caller reads it whole).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from movierec.errors import ModelError

#: the columns a training worker reads (``fold`` only where a fold is held out)
COLUMNS = ["user_idx", "movie_idx", "rating"]


def held_out(users: np.ndarray, items: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Which (viewer, movie) pairs are in the validation slice: a splitmix64 hash of the pair
    and the seed below ``fraction`` of the hash range (about ``fraction`` of any set of
    pairs, the same wherever it is computed)."""
    if fraction <= 0 or not len(users):
        return np.zeros(len(users), bool)
    with np.errstate(over="ignore"):
        x = (np.asarray(users).astype(np.uint64) << np.uint64(32)) | np.asarray(items).astype(np.uint64)
        x ^= np.uint64((int(seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x < np.uint64(min(fraction, 1.0) * float(2 ** 64 - 1))


@dataclass
class PartsRatings:
    """The training part of ``ratings_clean`` in parts, as the driver knows it."""

    files: list[str]
    rows: list[int]  # rows per part (from the Parquet metadata)
    fold: int | None  # the fold held out as test ratings (None: every rating trains)
    n_users: int
    n_items: int
    # filled by summarize(): the training part (validation slice included)
    rated: int = 0
    rating_min: float = float("inf")
    rating_max: float = float("-inf")
    # outside the validation slice
    n_train: int = 0
    train_sum: float = 0.0
    n_val: int = 0
    # int32: a viewer rates at most every movie, a movie is rated at most once by each viewer
    user_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    item_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    seed: int = 0
    fraction: float = 0.0

    @classmethod
    def of(cls, folder: Path, fold: int | None, n_users: int, n_items: int) -> "PartsRatings":
        import pyarrow.parquet as pq

        files = [str(f) for f in sorted(Path(folder).glob("part-*.parquet"))]
        return cls(files, [pq.read_metadata(f).num_rows for f in files], fold, n_users, n_items)

    @property
    def global_mean(self) -> float:
        return self.train_sum / max(1, self.n_train)


def _training_part(df, fold: int | None):
    """The rows that train (not the held-out fold), as int32/float32 arrays."""
    if fold is not None:
        df = df[df["fold"].to_numpy() != fold]
    return (df["user_idx"].to_numpy(np.int32), df["movie_idx"].to_numpy(np.int32), df["rating"].to_numpy(np.float32))


def _columns(fold: int | None) -> list[str]:
    return COLUMNS + (["fold"] if fold is not None else [])


def _summary_one(path: str, fold: int | None, seed: int, fraction: float) -> dict:
    import pandas as pd

    u, i, r = _training_part(pd.read_parquet(path, columns=_columns(fold)), fold)
    val = held_out(u, i, seed, fraction)
    tr = ~val
    return {"rated": len(r), "min": float(r.min()) if len(r) else float("inf"),
            "max": float(r.max()) if len(r) else float("-inf"), "n_train": int(tr.sum()),
            "sum": float(r[tr].sum(dtype=np.float64)), "n_val": int(val.sum()),
            "users": _counts(u[tr]), "items": _counts(i[tr])}


def _counts(idx: np.ndarray) -> tuple[int, np.ndarray]:
    """(first index, int32 counts of first.. last index): a part's range of viewers only
    (Ray's clean writes each part from one range), not a full-length array per part that
    the driver would gather and keep in its object-store pages."""
    if not len(idx):
        return 0, np.zeros(0, np.int32)
    lo = int(idx.min())
    return lo, np.bincount(idx - lo).astype(np.int32)


def summarize(parts: PartsRatings, tasks, seed: int, fraction: float) -> PartsRatings:
    """Fill ``parts``' figures for a validation slice of ``fraction`` chosen with ``seed``
    (0: none), one task per part (``tasks``: :class:`~movierec.data.ray_tables.Tasks`)."""
    parts.seed, parts.fraction = int(seed), float(fraction)
    parts.user_counts = np.zeros(parts.n_users, np.int32)  # (4 bytes a viewer, kept by each fit's data)
    parts.item_counts = np.zeros(parts.n_items, np.int32)
    parts.rated, parts.n_train, parts.n_val, parts.train_sum = 0, 0, 0, 0.0
    parts.rating_min, parts.rating_max = float("inf"), float("-inf")
    calls = [(f, parts.fold, parts.seed, parts.fraction) for f in parts.files]
    for s in tasks.map(_summary_one, calls):
        parts.rated += s["rated"]
        parts.n_train += s["n_train"]
        parts.n_val += s["n_val"]
        parts.train_sum += s["sum"]
        parts.rating_min, parts.rating_max = min(parts.rating_min, s["min"]), max(parts.rating_max, s["max"])
        for total, (lo, c) in ((parts.user_counts, s["users"]), (parts.item_counts, s["items"])):
            total[lo:lo + len(c)] += c
    return parts


def shards(rows: Sequence[int], workers: int) -> list[tuple[int, int]]:
    """Worker k's rows of the parts taken one after another: [lo, hi), equal in size."""
    n = int(sum(rows))
    return [(n * k // workers, n * (k + 1) // workers) for k in range(workers)]


def read_rows(files: Sequence[str], rows: Sequence[int], lo: int, hi: int, fold: int | None):
    """Rows [lo, hi) of the parts taken one after another (only the row groups that overlap
    them are read), their training part: (users, items, ratings)."""
    import pandas as pd

    got, start = [], 0
    for path, n in zip(files, rows):
        a, b = max(lo, start), min(hi, start + n)
        if a < b:
            got.append(read_row_range(path, a - start, b - start, _columns(fold)).to_pandas())
        start += n
    if not got:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    return _training_part(pd.concat(got, ignore_index=True), fold)


def read_row_range(path: str | Path, lo: int, hi: int, columns: list[str]):
    """Rows [lo, hi) of one Parquet file (a pyarrow table), reading only the row groups that
    overlap them."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    groups, g0, first = [], 0, 0
    for g in range(pf.metadata.num_row_groups):
        gn = pf.metadata.row_group(g).num_rows
        if g0 + gn > lo and g0 < hi:
            first = first if groups else g0
            groups.append(g)
        g0 += gn
    return pf.read_row_groups(groups, columns=columns).slice(lo - first, hi - lo)


# ----------------------------------------------------------------------------- seen.npz
def _seen_one(path: str, n_items: int, out: str, reviewed_u: np.ndarray, reviewed_i: np.ndarray) -> dict:
    """One part's rows as a piece of the viewers x movies matrix: sorted by (viewer, movie),
    the movies, the ratings and the ratings per viewer of its range written to ``out`` (three
    .npy files); returns its viewer range, the ratings per movie, and which reviewed pairs
    it rates."""
    import pandas as pd

    df = pd.read_parquet(path, columns=COLUMNS)
    u, i, r = (df["user_idx"].to_numpy(np.int64), df["movie_idx"].to_numpy(np.int32),
               df["rating"].to_numpy(np.float32))
    del df
    order = np.lexsort((i, u))
    u, i, r = u[order], i[order], r[order]
    lo, hi = (int(u[0]), int(u[-1]) + 1) if len(u) else (0, 0)
    np.save(out + ".indices.npy", i)
    np.save(out + ".ratings.npy", r)
    keys = u * n_items + i
    mine = np.flatnonzero((reviewed_u >= lo) & (reviewed_u < hi))
    rated = mine[np.isin(reviewed_u[mine].astype(np.int64) * n_items + reviewed_i[mine], keys)]
    np.save(out + ".counts.npy", np.bincount(u - lo, minlength=hi - lo).astype(np.int32) if len(u)
            else np.zeros(0, np.int32))
    return {"lo": lo, "hi": hi, "popularity": np.bincount(i, minlength=n_items), "out": out, "n": len(u),
            "reviewed_rated": rated}


def _npy_header(fh, dtype: np.dtype, n: int) -> None:
    np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                              "fortran_order": False, "shape": (int(n),)})


def _write_repeated(fh, value: int, n: int, dtype) -> None:
    """``n`` copies of ``value`` to ``fh``, a block at a time."""
    block = np.full(min(max(n, 0), 1 << 20), value, dtype).tobytes()
    while n > 0:
        k = min(n, 1 << 20)
        fh.write(block[:k * np.dtype(dtype).itemsize])
        n -= k


def write_seen(path: Path, files: Sequence[str], tasks, n_users: int, n_items: int,
               reviewed_u: np.ndarray, reviewed_i: np.ndarray, scratch: Path) -> int:
    """``seen.npz`` (the arrays :meth:`movierec.registry.Registry` writes: ``indptr``,
    ``indices``, ``ratings``, ``watched_indptr``, ``watched_indices``, ``popularity``) from
    the parts, streamed piece by piece in viewer order; returns the number of ratings.

    Raises:
        ValueError: the parts' viewer ranges overlap (a table not written by Ray's clean).
    """
    ru, ri = np.asarray(reviewed_u, np.int64), np.asarray(reviewed_i, np.int64)
    ru_ref, ri_ref = tasks.put(ru), tasks.put(ri)  # once in the object store, not once per task
    calls = [(f, n_items, str(scratch / f"seen-{k:05d}"), ru_ref, ri_ref) for k, f in enumerate(files)]
    pieces = list(tasks.map(_seen_one, calls))
    for p in pieces:
        if not p["n"]:
            for name in ("indices", "ratings", "counts"):
                os.remove(f"{p['out']}.{name}.npy")
    pieces = sorted((p for p in pieces if p["n"]), key=lambda p: p["lo"])
    for a, b in zip(pieces, pieces[1:]):
        if b["lo"] < a["hi"]:
            raise ValueError(f"parts {a['out']} and {b['out']} hold the same viewers ({b['lo']}..{a['hi'] - 1})")
    total = sum(p["n"] for p in pieces)
    popularity = np.zeros(n_items, np.int64)
    rated_reviews = np.zeros(len(ru), bool)
    for p in pieces:
        popularity += p["popularity"]
        rated_reviews[p["reviewed_rated"]] = True
    # watched: reviewed and not rated (few: the reviews are on the driver anyway), as the
    # sorted distinct pairs of a CSR matrix
    keys = np.unique(ru[~rated_reviews] * n_items + ri[~rated_reviews])
    wide = max(n_users, n_items, len(keys)) >= 2 ** 31  # (scipy's choice of index type)
    w_users, w_movies = keys // n_items, (keys % n_items).astype(np.int64 if wide else np.int32)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        # the index streamed from each piece's counts: no array of every viewer in this process
        with z.open("indptr.npy", "w", force_zip64=True) as fh:
            dtype = np.int32 if total < 2 ** 31 else np.int64
            _npy_header(fh, dtype, n_users + 1)
            at, done = 0, 0  # ratings so far; viewers whose end is written
            fh.write(np.zeros(1, dtype).tobytes())
            for p in pieces:
                _write_repeated(fh, at, p["lo"] - done, dtype)  # viewers without ratings before the piece
                counts = np.load(f"{p['out']}.counts.npy")
                fh.write((np.cumsum(counts, dtype=np.int64) + at).astype(dtype).tobytes())
                at, done = at + int(counts.sum()), p["hi"]
                del counts
                os.remove(f"{p['out']}.counts.npy")
            _write_repeated(fh, at, n_users - done, dtype)
        for name, dtype in (("indices", np.int32), ("ratings", np.float32)):
            with z.open(f"{name}.npy", "w", force_zip64=True) as fh:
                _npy_header(fh, dtype, total)
                for p in pieces:
                    piece = np.load(f"{p['out']}.{name}.npy", mmap_mode="r")
                    for a in range(0, len(piece), 1 << 22):
                        fh.write(np.ascontiguousarray(piece[a:a + (1 << 22)], dtype=dtype).tobytes())
                    del piece
                    os.remove(f"{p['out']}.{name}.npy")
        with z.open("watched_indptr.npy", "w", force_zip64=True) as fh:
            _npy_header(fh, w_movies.dtype, n_users + 1)
            for a in range(0, n_users + 1, 1 << 20):  # a block of viewers at a time
                ends = np.searchsorted(w_users, np.arange(a, min(n_users + 1, a + (1 << 20))), side="left")
                fh.write(ends.astype(w_movies.dtype).tobytes())
        for name, arr in (("watched_indices", w_movies), ("popularity", popularity)):
            with z.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(arr), version=(2, 0))
    return total


@dataclass
class SeenParts:
    """Every rating for a model version's ``seen.npz``, as parts (``ratings_clean`` on Ray):
    :meth:`write_seen` has Ray tasks sort each part, and streams the pieces into the file."""

    folder: Path  # the ratings_clean folder (in the artifacts folder: storage the workers see)
    engine: object  # EngineConfig

    def write_seen(self, path: Path, n_users: int, n_items: int, reviewed) -> int:
        import shutil

        from movierec.data.ray_tables import Tasks, staging_folder
        from movierec.engine import session

        files = [str(f) for f in sorted(Path(self.folder).glob("part-*.parquet"))]
        ru = np.zeros(0, np.int64) if reviewed is None else reviewed["user_idx"].to_numpy(np.int64)
        ri = np.zeros(0, np.int64) if reviewed is None else reviewed["movie_idx"].to_numpy(np.int64)
        scratch = staging_folder(Path(self.folder).parent, "seen")  # swept by the workdir's clean-up if killed
        try:
            with session(self.engine) as ray:
                return write_seen(path, files, Tasks(ray, self.engine.cpus_per_worker), n_users, n_items, ru, ri,
                                  scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class IdParts:
    """The viewer id table in parts (``user_ids`` from Ray's clean: part k numbers range k's
    viewers after range k - 1's), for a model version's ``user_ids.parquet``: copied a row
    group at a time, so no process holds every viewer's id; with an ``engine`` of kind ray,
    by a Ray task (the driver does not even decode them)."""

    folder: Path
    engine: object = None  # EngineConfig

    def write_parquet(self, path: Path) -> int:
        """Write the table to ``path`` (user_idx, user_id); returns its rows. The parts must
        number the viewers 0, 1, 2, ... in order (a version's ids are read by position).

        Raises:
            ModelError: the parts do not number the viewers in order, or there are none.
        """
        if self.engine is None or self.engine.kind != "ray":
            got = _copy_ids(str(self.folder), str(path))
        else:
            from movierec.data.ray_tables import Tasks
            from movierec.engine import session

            with session(self.engine) as ray:
                got, = Tasks(ray, self.engine.cpus_per_worker).map(_copy_ids, [(str(self.folder), str(path))])
        if isinstance(got, ModelError):
            raise got
        return got


def _copy_ids(folder: str, path: str) -> int | ModelError:
    """:meth:`IdParts.write_parquet`'s copy (in a Ray task or in this process): the rows, or
    the error (returned, so that a task's reaches the driver as it is)."""
    import pyarrow.parquet as pq

    n, writer = 0, None
    try:
        for f in sorted(Path(folder).glob("part-*.parquet")):
            pf = pq.ParquetFile(f)
            for g in range(pf.metadata.num_row_groups):
                t = pf.read_row_group(g, columns=["user_idx", "user_id"], use_threads=False)
                if not np.array_equal(t.column("user_idx").to_numpy(), np.arange(n, n + t.num_rows)):
                    return ModelError(f"{f}: the viewer id table's parts do not number the viewers "
                                      f"0, 1, 2, ... in order (row group {g}); run `movierec clean --force`")
                writer = writer or pq.ParquetWriter(path, t.schema)
                writer.write_table(t.cast(writer.schema))
                n += t.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return ModelError(f"{folder}: the viewer id table has no parts")
    return n
