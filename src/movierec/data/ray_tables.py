"""Ratings that stay in the cluster: ingest and clean of a partitioned ratings table on Ray.

With ``engine.kind: ray`` and ``data.ratings`` (or ``split.train``/``split.test``) a folder
of part files, the driver never holds the ratings:

- **ingest** (:func:`ingest_parts`): one Ray task per part reads and validates it (a path
  every node sees, or a URL), pseudonymizes its ids when privacy asks, and writes its valid
  rows as one Parquet part of the ``ratings_raw`` artifact, a folder. The driver gets what
  it needs to decide and to record (:class:`PartsTable`): row and quarantine counts, the
  rating scale, each part's per-movie counts, null counts, the range of the ratings, and
  its distinct viewers only where social ties are to be checked against them. Ratings from
  the feedback log are one part more (:func:`append_part`), written last; whether a shared
  movie was rated is looked up in the parts (:func:`rated_pairs`).
- **clean** (:func:`clean_parts`): the viewers are numbered in the cluster, range by range.
  Each part's distinct viewer ids are written by a worker, the driver gets a sample of them;
  the samples cut the ids into ranges, and a task per range gathers and sorts its ids (a
  range's dense ids start where the range before ends: the local engine's sorted id table).
  The movie ids (O(movies)) are numbered in the driver with the small tables. Then two
  passes of Ray tasks partitioned by range of viewer id: each task of the first writes its
  part's rows (movie ids mapped) in buckets by range; each task of the second reads one
  bucket of every part, numbers the range's viewers (its part of ``user_ids``), keeps the
  latest rating of each (user, movie) ("latest wins": by timestamp, then by place in the
  input, across parts), assigns the split, and writes one part of ``ratings_clean``.

The artifacts hold the rows of the local engine's (tested): ``ratings_clean`` in another
row order (bucket by bucket; within a bucket in input order), ``user_ids`` the same table
in parts. The workers write into the workdir, so on a cluster it must be on storage every
node sees; the other tables (users, movies, reviews, social) are small and stay on the
driver as with the local engine, which maps their viewer ids through the dense ids the
range tasks gave them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from movierec.catalog import atomic_path, file_hash, read_parts
from movierec.config import Config, EngineConfig
from movierec.data.readers import ReadResult, empty_counts
from movierec.data.scale import RatingScale
from movierec.data.schemas import FileSchema
from movierec.errors import ConfigError, DataError
from movierec.locations import Remote, location
from movierec.stages.clean import (CleanResult, IdCodes, _codes, _dedupe, _index, _uniques, assign_folds,
                                   clean_side_tables, cold_set)

log = logging.getLogger(__name__)

#: the folder of parts of a partitioned artifact: part-00000.parquet, part-00001.parquet, ...
PART = "part-{:05d}.parquet"


@dataclass
class PartsTable:
    """A table written as Parquet parts by Ray workers (not loaded): where the parts are and
    what the driver knows of it without reading it."""

    folder: Path
    files: list[dict] = field(default_factory=list)  # per part: file, rows, hash, bytes
    # the distinct viewer ids, where a check needs them (social ties against known viewers);
    # None: not gathered (the driver holds no per-viewer data)
    user_ids: np.ndarray | None = None
    movie_counts: pd.Series = field(default_factory=lambda: pd.Series(dtype=np.int64))  # ratings a movie
    nulls: dict[str, int] = field(default_factory=dict)  # empty values a column
    rating_min: float = np.inf
    rating_max: float = -np.inf
    rated: int = 0  # finite ratings

    def __len__(self) -> int:
        return int(sum(f["rows"] for f in self.files))

    @property
    def empty(self) -> bool:
        return len(self) == 0

    def to_frame(self) -> pd.DataFrame:
        """The whole table in the driver (where a step has no distributed form)."""
        return read_parts(self.folder)


def _write_part(df: pd.DataFrame, path: Path) -> dict:
    """``df`` as one Parquet part (written beside, then renamed): its entry."""
    with atomic_path(path, durable=False) as tmp:  # (the manifest records its size: see catalog)
        df.to_parquet(tmp, index=False, compression=None)
    return {"file": path.name, "rows": int(len(df)), "hash": file_hash(path), "bytes": path.stat().st_size}


def _ingest_one(i: int, where: str, schema: FileSchema, out_dir: str, key: bytes | None, users: bool, kw: dict):
    """One part, in a worker: read, validate, pseudonymize, write; its summary."""
    from movierec.data.parts import read_part

    try:
        res = read_part(location(where), schema, **kw)
    except DataError as exc:  # raised again in the driver, with its message
        return exc
    valid = res.valid
    if key is not None:
        from movierec.privacy import pseudonymize_tables

        pseudonymize_tables({"v": valid}, key)  # (the quarantine: by the driver, as for one file)
    entry = _write_part(valid, Path(out_dir) / PART.format(i))
    r = valid["rating"].to_numpy(np.float64) if "rating" in valid.columns else np.zeros(0)
    r = r[np.isfinite(r)]
    counts = valid["movie_id"].value_counts(sort=False) if "movie_id" in valid.columns else pd.Series(dtype=np.int64)
    counts = counts[counts > 0]
    counts.index = counts.index.astype(str)
    return {"i": i, "path": res.path, "total_rows": res.total_rows, "quarantine": res.quarantine, "scale": res.scale,
            "entry": entry,
            "users": _uniques(valid["user_id"]) if users and "user_id" in valid.columns else np.array([], object),
            "movie_counts": counts.astype(np.int64), "nulls": empty_counts(valid), "columns": list(valid.columns),
            "rmin": float(r.min()) if len(r) else np.inf, "rmax": float(r.max()) if len(r) else -np.inf,
            "rated": int(len(r))}


def ingest_parts(folder: Path | Remote, parts: Sequence[Path | Remote], schema: FileSchema, engine: EngineConfig,
                 staging: Path, key: bytes | None = None, users: bool = False, **kw) -> ReadResult:
    """Read, validate and write each part on Ray (see the module's note); a ReadResult whose
    ``valid`` is the :class:`PartsTable` in ``staging``. ``users``: gather the distinct viewer
    ids in the driver (for a check that needs them; O(viewers))."""
    from movierec.data.parts import _inside
    from movierec.engine import in_order, session

    staging.mkdir(parents=True, exist_ok=True)
    table = PartsTable(staging, user_ids=np.array([], dtype=object) if users else None)
    qs, scales, columns_of, total = [], [], [], 0
    with session(engine) as ray:  # (a failure: the caller removes ``staging``)
        task = ray.remote(num_cpus=engine.cpus_per_worker)(_ingest_one)
        refs = [task.remote(i, p.url if isinstance(p, Remote) else str(p), schema, str(staging), key, users, kw)
                for i, p in enumerate(parts)]
        for g in in_order(ray, refs):
            # folded in as it comes: the driver keeps the distinct ids and counts, not the parts'
            table.files.append(g["entry"])
            total += g["total_rows"]
            if len(g["quarantine"]):
                q = g["quarantine"].copy()
                q.insert(0, "file", _inside(g["path"] if isinstance(g["path"], Remote) else Path(g["path"]), folder))
                qs.append(q)
            if users:
                table.user_ids = pd.unique(np.concatenate([table.user_ids, g["users"]]))
            table.movie_counts = table.movie_counts.add(g["movie_counts"], fill_value=0).astype(np.int64)
            for c, n in g["nulls"].items():
                table.nulls[c] = table.nulls.get(c, 0) + n
            columns_of.append(g["columns"])
            table.rating_min, table.rating_max = min(table.rating_min, g["rmin"]), max(table.rating_max, g["rmax"])
            table.rated += g["rated"]
            if g["scale"] is not None:
                scales.append(g["scale"])
    for c in list(table.nulls):  # a column some parts lack is empty in them
        table.nulls[c] += sum(e["rows"] for e, cols in zip(table.files, columns_of) if c not in cols)
    quarantine = pd.concat(qs, ignore_index=True) if qs else pd.DataFrame(columns=["file", "row", "reason"])
    log.info("ingest: %s: %d part files, %d rows, read and written by Ray workers", getattr(folder, "name", folder),
             len(parts), total)
    return ReadResult(path=folder, valid=table, quarantine=quarantine, total_rows=int(total),
                      scale=RatingScale.union(scales) if scales else None)


# ----------------------------------------------------------------------------- feedback
def _pairs_one(path: str, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """Which of the (user, movie) pairs one part holds."""
    users, movies = pd.Index(users, dtype=object).astype(str), pd.Index(movies, dtype=object).astype(str)
    df = pd.read_parquet(path, columns=["user_id", "movie_id"])
    df = df[df["user_id"].isin(users)]  # the rows of these viewers only (ids as categories: cheap)
    held = pd.MultiIndex.from_arrays([df["user_id"].astype(str), df["movie_id"].astype(str)])
    return pd.MultiIndex.from_arrays([users, movies]).isin(held)


def rated_pairs(table: PartsTable, engine: EngineConfig, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """Which (user, movie) pairs the ratings in parts hold: one Ray task per part looks them
    up (the pairs are few: shared movies from the feedback log)."""
    from movierec.engine import in_order, session

    got = np.zeros(len(users), bool)
    if not len(users):
        return got
    with session(engine) as ray:
        task = ray.remote(num_cpus=engine.cpus_per_worker)(_pairs_one)
        for found in in_order(ray, [task.remote(str(table.folder / f["file"]), users, movies) for f in table.files]):
            got |= found
    return got


def append_part(table: PartsTable, frame: pd.DataFrame) -> None:
    """``frame`` (ratings folded in from the feedback log: few) written as the table's last
    part, after the input's parts (so in clean the latest rating wins over theirs on equal
    times, as when the local engine appends them), its figures added to the table's."""
    import pyarrow.parquet as pq

    before = len(table)
    frame = frame.copy()
    for c in ("user_id", "movie_id"):  # ids as the parts hold them: dictionaries
        frame[c] = frame[c].astype(str).astype("category")
    if table.files:  # the other columns in the parts' types (one table when read as a whole)
        schema = pq.read_schema(table.folder / table.files[0]["file"])
        for c in frame.columns:
            if c in schema.names and c not in ("user_id", "movie_id"):
                frame[c] = frame[c].astype(schema.field(c).type.to_pandas_dtype())
    table.files.append(_write_part(frame, table.folder / PART.format(len(table.files))))
    counts = frame["movie_id"].astype(str).value_counts(sort=False)
    table.movie_counts = table.movie_counts.add(counts[counts > 0], fill_value=0).astype(np.int64)
    nulls = empty_counts(frame)
    for c in set(table.nulls) | set(nulls):
        # a column the parts lack (the time, say) is empty in them; one the new rows lack, in those
        table.nulls[c] = table.nulls.get(c, before) + nulls.get(c, len(frame))
    r = frame["rating"].to_numpy(np.float64)
    r = r[np.isfinite(r)]
    if len(r):
        table.rating_min, table.rating_max = min(table.rating_min, float(r.min())), max(table.rating_max, float(r.max()))
        table.rated += int(len(r))
    if table.user_ids is not None:
        table.user_ids = pd.unique(np.concatenate([table.user_ids, _uniques(frame["user_id"])]))


def staging_folder(artifacts: Path, name: str) -> Path:
    """A new folder for an artifact's parts, named as the workdir's clean-up of a killed run
    expects (``.<name>.<8 characters>.tmp``)."""
    from movierec.catalog import umask_mode

    artifacts.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=artifacts))
    os.chmod(folder, umask_mode(0o777))  # as a folder made by mkdir (mkdtemp's is 0700)
    return folder


# ----------------------------------------------------------------------------- clean
#: ids sampled from each part's sorted distinct viewer ids, to cut the ids into ranges
SAMPLES = 64


def _sample(sorted_ids: np.ndarray, k: int = SAMPLES) -> np.ndarray:
    if not len(sorted_ids):
        return sorted_ids
    return sorted_ids[np.unique(np.linspace(0, len(sorted_ids) - 1, min(len(sorted_ids), k)).astype(np.int64))]


#: rows per row group of a file of sorted ids: a range's task decodes only the groups whose
#: min/max statistics overlap its range
IDS_GROUP = 1 << 14


def _write_ids(ids: np.ndarray, path: Path) -> None:
    pd.DataFrame({"user_id": pd.Series(ids, dtype=object)}).to_parquet(path, index=False, row_group_size=IDS_GROUP)


def _read_ids(path: Path, lo=None, hi=None) -> np.ndarray:
    """The ids of a file written by :func:`_write_ids`; with ``lo``/``hi``, those in [lo, hi)
    (the row groups outside it are not read)."""
    import pyarrow.parquet as pq

    filters = ([("user_id", ">=", lo)] if lo is not None else []) + ([("user_id", "<", hi)] if hi is not None else [])
    table = pq.read_table(path, columns=["user_id"], filters=filters or None)
    return np.asarray(table.column("user_id").to_numpy(zero_copy_only=False), dtype=object)


def _ids_one(i: int, path: str, ids_dir: str):
    """One part's distinct viewer ids, sorted, written beside the buckets (the driver gets a
    sample of them and their number), and its distinct movie ids."""
    df = pd.read_parquet(path, columns=["user_id", "movie_id"])
    users = np.sort(_uniques(df["user_id"]))
    _write_ids(users, Path(ids_dir) / f"ids-{i:05d}.parquet")
    return _sample(users), len(users), _uniques(df["movie_id"])


def _bounds(samples: list[np.ndarray], ranges: int) -> np.ndarray:
    """At most ``ranges - 1`` viewer ids that cut the ids into ranges of about equal size:
    range k holds the ids from ``bounds[k - 1]`` (included) to ``bounds[k]`` (excluded)."""
    allv = np.unique(np.concatenate(samples)) if samples else np.array([], dtype=object)
    if len(allv) < 2 or ranges < 2:
        return np.array([], dtype=object)
    return np.unique(allv[1:][(np.arange(1, ranges) * (len(allv) - 1)) // ranges])


def _range_of(ids: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    return np.searchsorted(bounds, ids, side="right") if len(bounds) else np.zeros(len(ids), np.int64)


def _number_one(k: int, ids_dir: str, bounds: np.ndarray) -> int:
    """The viewer ids of range ``k`` over every part (and the driver's tables), sorted and
    written: their dense ids are the range's offset plus their place. Their number."""
    lo = bounds[k - 1] if k > 0 else None
    hi = bounds[k] if k < len(bounds) else None
    got = [_read_ids(f, lo, hi) for f in sorted(Path(ids_dir).glob("ids-*.parquet"))]
    ids = np.unique(np.concatenate(got)) if got else np.array([], dtype=object)
    _write_ids(ids, Path(ids_dir) / f"range-{k:05d}.parquet")
    return len(ids)


def _user_ranges(ids: pd.Series, bounds: np.ndarray) -> np.ndarray:
    """The range of each row's viewer id (a categorical: looked up once per distinct id, as
    its string, the form the id tables hold)."""
    cats = np.asarray(ids.cat.categories.astype(str), dtype=object)
    return _range_of(cats, bounds)[ids.cat.codes.to_numpy()]


def _map_one(i: int, path: str, source: int, bounds: np.ndarray, mid, with_ts: bool, out_dir: str) -> int:
    """First pass: one part's rows with dense movie ids, written in buckets by range of
    viewer id (the viewer ids are numbered in the second pass, a range's ids in its bucket)."""
    df = pd.read_parquet(path)
    u = df["user_id"]  # (categories, as the parts hold them: read as strings wherever compared)
    out = pd.DataFrame({"user_id": u if isinstance(u.dtype, pd.CategoricalDtype) else u.astype("category"),
                        "movie_idx": _codes(mid, df["movie_id"]), "rating": df["rating"].to_numpy(np.float32)})
    if with_ts:
        out["timestamp"] = df["timestamp"].to_numpy(np.float64) if "timestamp" in df.columns else np.nan
    out["pos"] = (np.int64(i) << 40) + np.arange(len(out), dtype=np.int64)
    out["source"] = np.int8(source)
    b = _user_ranges(out["user_id"], bounds)
    order = np.argsort(b, kind="stable")  # each bucket's rows together, in input order
    counts = np.bincount(b, minlength=len(bounds) + 1)
    starts = np.cumsum(counts) - counts
    for k in np.flatnonzero(counts):
        rows = out.iloc[order[starts[k]: starts[k] + counts[k]]].copy()
        rows["user_id"] = rows["user_id"].cat.remove_unused_categories()
        d = Path(out_dir) / f"b{k:05d}"
        d.mkdir(exist_ok=True)
        rows.to_parquet(d / f"p{i:05d}.parquet", index=False, compression=None)
    return len(out)


def _reduce_one(k: int, in_dir: str, out_dir: str, ids_out: str, cfg: Config, offset: int, mid, cold,
                n_items: int, side: np.ndarray) -> dict:
    """Second pass: one range of viewers, every part's rows: the viewers numbered (their
    part of ``user_ids`` written), the rows deduplicated, split and written; the dense ids of
    ``side`` (the driver's tables' viewer ids in this range)."""
    ids = _read_ids(Path(in_dir) / f"range-{k:05d}.parquet")
    index = pd.Index(ids)
    uids = None
    if len(ids):
        uids = _write_part(pd.DataFrame({"user_idx": np.arange(offset, offset + len(ids), dtype=np.int32),
                                         "user_id": pd.Series(ids, dtype=object)}), Path(ids_out) / PART.format(k))
    side_at = index.get_indexer(pd.Index(side, dtype=object))
    if len(side_at) and side_at.min() < 0:  # (the driver's ids were numbered with the parts': a bug)
        raise RuntimeError("clean on Ray: a viewer id of the users, reviews or social table is not in its range's table")
    side_codes = offset + side_at
    d = Path(in_dir) / f"b{k:05d}"
    files = sorted(d.glob("p*.parquet")) if d.exists() else []
    if not files:
        return {"entry": None, "dups": 0, "test": 0, "ids": uids, "side": side_codes}
    frames = []
    for f in files:  # each viewer's dense id: the range's offset plus its place in the range
        part = pd.read_parquet(f)  # (its viewer ids a categorical: looked up once each)
        at = _codes(index, part.pop("user_id"))
        if len(at) and at.min() < 0:  # (the range tables hold every id of every part: a bug)
            raise RuntimeError(f"clean on Ray: a viewer id of {f.name} is not in its range's table")
        part.insert(0, "user_idx", (at + offset).astype(np.int32))
        frames.append(part)
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values(["source", "pos"], kind="stable").reset_index(drop=True)
    kept, dups = [], 0
    for source in (0, 1):  # the training ratings, then a given split's test ratings
        part = df[df["source"].to_numpy() == source].drop(columns=["source", "pos"]).reset_index(drop=True)
        if len(part):
            part, n = _dedupe(part, n_items)
            part["fold"] = np.int16(-1 if source == 0 else 0)
            kept.append(part)
            dups += n
    if cfg.split.method == "given":
        r = pd.concat(kept, ignore_index=True)
    else:
        r = kept[0].drop(columns="fold")
        if cold is not None:
            col = "movie_idx" if cfg.split.method == "cold_items" else "user_idx"
            fold = np.full(len(r), -1, dtype=np.int16)
            fold[np.isin(r[col].to_numpy(), cold)] = 0
            r["fold"] = fold
        else:  # (the pair hash reads the id strings: this range's, by their place in it)
            r["fold"] = assign_folds(r.assign(user_idx=r["user_idx"].to_numpy() - offset), cfg, (index, mid))
    entry = _write_part(r, Path(out_dir) / PART.format(k))
    test = int((r["fold"] == 0).sum()) if cfg.split.method != "kfold" else 0
    return {"entry": entry, "dups": dups, "test": test, "ids": uids, "side": side_codes}


def clean_parts(cfg: Config, engine: EngineConfig, raw: dict[str, tuple[Path, list[dict]] | pd.DataFrame],
                staging: Path, scratch: Path):
    """clean (:func:`movierec.stages.clean.clean`) with the ratings (and a given split's test
    ratings) as folders of parts: ``raw`` holds those as (folder, part entries) and the other
    tables as frames. Returns the CleanResult: the small tables, and ``ratings`` and
    ``user_ids`` as :class:`PartsTable` (``ratings_clean`` in ``staging``, ``user_ids`` in a
    folder beside it; both removed on a failure, as the buckets in ``scratch`` always are)."""

    def parts_of(name: str) -> list[str]:
        v = raw.get(name)
        if v is None:
            return []
        if isinstance(v, tuple):
            return [str(Path(v[0]) / f["file"]) for f in v[1]]
        return []

    ids_staging = staging_folder(staging.parent, "user_ids")
    try:
        return _clean_parts(cfg, engine, raw, staging, ids_staging, scratch, parts_of)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(ids_staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _side_user_ids(users, reviews, social) -> np.ndarray:
    """The distinct viewer ids the driver's own tables name, sorted."""
    cols = [None if users is None else users["user_id"], None if reviews is None else reviews["user_id"],
            None if social is None else social["user_id"], None if social is None else social["friend_id"]]
    got = [_uniques(c) for c in cols if c is not None]
    return np.unique(np.concatenate(got)) if got else np.array([], dtype=object)


class Tasks:
    """How a pass's calls run: as Ray tasks of ``cpus`` CPUs each (results taken in order, the
    first error raised), or one after another in this process (``ray`` None: tests)."""

    def __init__(self, ray=None, cpus: float = 1.0) -> None:
        self.ray, self.cpus = ray, cpus

    def map(self, fn, calls: list[tuple]):
        if self.ray is None:
            return (fn(*c) for c in calls)
        from movierec.engine import in_order

        task = self.ray.remote(num_cpus=self.cpus)(fn)
        return in_order(self.ray, [task.remote(*c) for c in calls])

    def put(self, obj):
        return obj if self.ray is None else self.ray.put(obj)


def _clean_parts(cfg, engine, raw, staging: Path, ids_staging: Path, scratch: Path, parts_of):
    from movierec.engine import session

    with session(engine) as ray:
        return clean_passes(cfg, Tasks(ray, engine.cpus_per_worker), raw, parts_of, staging, ids_staging, scratch)


def clean_passes(cfg: Config, tasks: Tasks, raw: dict, parts_of, staging: Path, ids_staging: Path,
                 scratch: Path) -> CleanResult:
    """The passes of :func:`clean_parts`, run by ``tasks``."""
    sources = [(0, p) for p in parts_of("ratings")] + [(1, p) for p in parts_of("test")]
    test_frame = raw.get("test") if isinstance(raw.get("test"), pd.DataFrame) else None
    with_ts = any("timestamp" in _schema_names(p) for _, p in sources) or \
        (test_frame is not None and "timestamp" in test_frame.columns)
    scratch.mkdir(parents=True, exist_ok=True)
    if test_frame is not None:  # a given split's test file (one file): one more part
        tp = scratch / "test-part.parquet"
        test_frame.to_parquet(tp, index=False)
        sources.append((1, str(tp)))
    others = {k: v for k, v in raw.items() if isinstance(v, pd.DataFrame) and k not in ("ratings", "test")}
    users, movies = others.get("users"), others.get("movies")
    reviews, social = others.get("reviews"), others.get("social")
    side = _side_user_ids(users, reviews, social)
    _write_ids(side, scratch / "ids-side.parquet")
    res = CleanResult()
    # 1. each part's distinct ids: the viewers' written beside the buckets (a sample and their
    # number to the driver), the movies' to the driver (O(movies))
    samples, seen_m = [_sample(side)], np.array([], dtype=object)
    for smp, _, m in tasks.map(_ids_one, [(i, p, str(scratch)) for i, (_, p) in enumerate(sources)]):
        samples.append(smp)
        seen_m = pd.unique(np.concatenate([seen_m, m]))
    mid = _index([pd.Series(seen_m, dtype=object),
                  None if reviews is None else reviews["movie_id"], None if movies is None else movies["movie_id"]])
    # 2. the viewer ids cut into ranges, each numbered by a task: range k's dense ids start
    # where range k - 1's end (the order of the local engine's sorted id table)
    bounds = _bounds(samples, max(1, len(sources)))
    ranges = len(bounds) + 1
    counts = np.array(list(tasks.map(_number_one, [(k, str(scratch), bounds) for k in range(ranges)])), np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_users = int(counts.sum())
    cold = None
    if cfg.split.method in ("cold_items", "cold_users"):
        cold = _cold(cfg, scratch, len(sources), ranges, reviews, mid, seen_m)
    # 3. the rows into buckets by range of viewer id; 4. per range: the viewers numbered, the
    # rows deduplicated, split and written
    mid_ref = tasks.put(mid)
    list(tasks.map(_map_one, [(i, p, s, bounds, mid_ref, with_ts, str(scratch)) for i, (s, p) in enumerate(sources)]))
    side_at = _range_of(side, bounds)
    out = list(tasks.map(_reduce_one, [(k, str(scratch), str(staging), str(ids_staging), cfg, int(offsets[k]), mid_ref,
                                        cold, len(mid), side[side_at == k]) for k in range(ranges)]))
    table = PartsTable(staging, files=[o["entry"] for o in out if o["entry"] is not None])
    if table.empty:
        raise DataError("no ratings left after cleaning")
    res.stats["duplicate_ratings_removed"] = int(sum(o["dups"] for o in out))
    res.stats["ratings"] = len(table)
    res.stats["test_ratings"] = int(sum(o["test"] for o in out))
    res.tables["ratings"] = table
    res.tables["user_ids"] = PartsTable(ids_staging, files=[o["ids"] for o in out if o["ids"] is not None])
    side_codes = np.concatenate([o["side"] for o in out])
    clean_side_tables(res, users, movies, reviews, social, IdCodes(side, side_codes), mid, n_users=n_users)
    log.info("clean: %d ratings deduplicated and split by Ray workers in %d parts (%d viewers numbered in %d ranges)",
             len(table), len(table.files), n_users, ranges)
    return res


def _cold(cfg: Config, scratch: Path, n_sources: int, ranges: int, reviews, mid: pd.Index, seen_m) -> np.ndarray:
    """A cold-start split's cold movies (viewers): picked in the driver, as by the local
    engine. cold_users reads every viewer id here (the one case that does)."""
    if reviews is None or not len(reviews):
        raise ConfigError(f"split.method {cfg.split.method!r} needs reviews (reviews.csv): the new movies "
                          "(viewers) are those that have reviews")
    if cfg.split.method == "cold_items":
        ids, rated = mid, mid.get_indexer(pd.Index(seen_m, dtype=object))
        reviewed = _codes(mid, reviews["movie_id"])
    else:
        log.info("clean: split.method cold_users: the viewer ids are gathered in the driver to pick the cold viewers")
        ids = pd.Index(np.concatenate([_read_ids(scratch / f"range-{k:05d}.parquet") for k in range(ranges)]))
        rated = ids.get_indexer(pd.Index(np.unique(np.concatenate(
            [_read_ids(scratch / f"ids-{i:05d}.parquet") for i in range(n_sources)])), dtype=object))
        reviewed = _codes(ids, reviews["user_id"])
    return cold_set(ids, rated, reviewed, cfg.split.cold_fraction, cfg.split.seed)


def _schema_names(path: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_schema(path).names
