"""Ratings that stay in the cluster: ingest and clean of a partitioned ratings table on Ray.

With ``engine.kind: ray`` and ``data.ratings`` (or ``split.train``/``split.test``) a folder
of part files, the driver never holds the ratings:

- **ingest** (:func:`ingest_parts`): one Ray task per part reads and validates it (a path
  every node sees, or a URL), pseudonymizes its ids when privacy asks, and writes its valid
  rows as one Parquet part of the ``ratings_raw`` artifact, a folder. The driver gets what
  it needs to decide and to record (:class:`PartsTable`): row and quarantine counts, the
  rating scale, each part's distinct users and per-movie counts, null counts, the range of
  the ratings.
- **clean** (:func:`clean_parts`): the dense ids come from the parts' distinct ids (read by
  the workers) and the other, small tables; the ids are mapped, deduplicated ("latest wins":
  by timestamp, then by place in the input, across parts) and split in two passes of Ray
  tasks, partitioned by user: each task of the first pass writes its part's rows in buckets
  by user, each task of the second reads one bucket of every part, keeps the latest rating
  of each (user, movie), assigns the split, and writes one part of ``ratings_clean``.

The artifacts hold the rows of the local engine's (tested): ``ratings_clean`` in another
row order (bucket by bucket; within a bucket in input order). The workers write into the
workdir, so on a cluster it must be on storage every node sees; the other tables (users,
movies, reviews, social) are small and stay on the driver as with the local engine.
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
from movierec.stages.clean import (CleanResult, _codes, _dedupe, _index, _uniques, assign_folds, clean_side_tables,
                                   cold_set)

log = logging.getLogger(__name__)

#: the folder of parts of a partitioned artifact: part-00000.parquet, part-00001.parquet, ...
PART = "part-{:05d}.parquet"


@dataclass
class PartsTable:
    """A table written as Parquet parts by Ray workers (not loaded): where the parts are and
    what the driver knows of it without reading it."""

    folder: Path
    files: list[dict] = field(default_factory=list)  # per part: file, rows, hash, bytes
    user_ids: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))  # distinct
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


def _ingest_one(i: int, where: str, schema: FileSchema, out_dir: str, key: bytes | None, kw: dict):
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
            "entry": entry, "users": _uniques(valid["user_id"]) if "user_id" in valid.columns else np.array([], object),
            "movie_counts": counts.astype(np.int64), "nulls": empty_counts(valid), "columns": list(valid.columns),
            "rmin": float(r.min()) if len(r) else np.inf, "rmax": float(r.max()) if len(r) else -np.inf,
            "rated": int(len(r))}


def ingest_parts(folder: Path | Remote, parts: Sequence[Path | Remote], schema: FileSchema, engine: EngineConfig,
                 staging: Path, key: bytes | None = None, **kw) -> ReadResult:
    """Read, validate and write each part on Ray (see the module's note); a ReadResult whose
    ``valid`` is the :class:`PartsTable` in ``staging``."""
    from movierec.data.parts import _inside
    from movierec.engine import in_order, session

    staging.mkdir(parents=True, exist_ok=True)
    table = PartsTable(staging)
    qs, scales, columns_of, total = [], [], [], 0
    with session(engine) as ray:  # (a failure: the caller removes ``staging``)
        task = ray.remote(num_cpus=engine.cpus_per_worker)(_ingest_one)
        refs = [task.remote(i, p.url if isinstance(p, Remote) else str(p), schema, str(staging), key, kw)
                for i, p in enumerate(parts)]
        for g in in_order(ray, refs):
            # folded in as it comes: the driver keeps the distinct ids and counts, not the parts'
            table.files.append(g["entry"])
            total += g["total_rows"]
            if len(g["quarantine"]):
                q = g["quarantine"].copy()
                q.insert(0, "file", _inside(g["path"] if isinstance(g["path"], Remote) else Path(g["path"]), folder))
                qs.append(q)
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


def staging_folder(artifacts: Path, name: str) -> Path:
    """A new folder for an artifact's parts, named as the workdir's clean-up of a killed run
    expects (``.<name>.<8 characters>.tmp``)."""
    from movierec.catalog import umask_mode

    artifacts.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=artifacts))
    os.chmod(folder, umask_mode(0o777))  # as a folder made by mkdir (mkdtemp's is 0700)
    return folder


# ----------------------------------------------------------------------------- clean
def _ids_one(path: str):
    df = pd.read_parquet(path, columns=["user_id", "movie_id"])
    return _uniques(df["user_id"]), _uniques(df["movie_id"])


def _map_one(i: int, path: str, source: int, uid, mid, buckets: int, with_ts: bool, out_dir: str) -> int:
    """First pass: one part's rows with dense ids, written in buckets by user."""
    df = pd.read_parquet(path)
    out = pd.DataFrame({"user_idx": _codes(uid, df["user_id"]), "movie_idx": _codes(mid, df["movie_id"]),
                        "rating": df["rating"].to_numpy(np.float32)})
    if with_ts:
        out["timestamp"] = df["timestamp"].to_numpy(np.float64) if "timestamp" in df.columns else np.nan
    out["pos"] = (np.int64(i) << 40) + np.arange(len(out), dtype=np.int64)
    out["source"] = np.int8(source)
    b = out["user_idx"].to_numpy() % buckets
    order = np.argsort(b, kind="stable")  # each bucket's rows together, in input order
    counts = np.bincount(b, minlength=buckets)
    starts = np.cumsum(counts) - counts
    for k in np.flatnonzero(counts):
        rows = out.iloc[order[starts[k]: starts[k] + counts[k]]]
        d = Path(out_dir) / f"b{k:05d}"
        d.mkdir(exist_ok=True)
        rows.to_parquet(d / f"p{i:05d}.parquet", index=False, compression=None)
    return len(out)


def _reduce_one(k: int, in_dir: str, out_dir: str, cfg: Config, uid, mid, cold, n_items: int) -> dict:
    """Second pass: one bucket of users, every part's rows: deduplicated, split, written."""
    d = Path(in_dir) / f"b{k:05d}"
    files = sorted(d.glob("p*.parquet")) if d.exists() else []
    if not files:
        return {"entry": None, "dups": 0, "test": 0}
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
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
        else:
            r["fold"] = assign_folds(r, cfg, (uid, mid))
    entry = _write_part(r, Path(out_dir) / PART.format(k))
    test = int((r["fold"] == 0).sum()) if cfg.split.method != "kfold" else 0
    return {"entry": entry, "dups": dups, "test": test}


def clean_parts(cfg: Config, engine: EngineConfig, raw: dict[str, tuple[Path, list[dict]] | pd.DataFrame],
                staging: Path, scratch: Path):
    """clean (:func:`movierec.stages.clean.clean`) with the ratings (and a given split's test
    ratings) as folders of parts: ``raw`` holds those as (folder, part entries) and the other
    tables as frames. Returns the CleanResult: the small tables, and ``ratings`` as the
    :class:`PartsTable` of ``ratings_clean`` in ``staging`` (removed on a failure, as the
    buckets in ``scratch`` always are)."""

    def parts_of(name: str) -> list[str]:
        v = raw.get(name)
        if v is None:
            return []
        if isinstance(v, tuple):
            return [str(Path(v[0]) / f["file"]) for f in v[1]]
        return []

    try:
        return _clean_parts(cfg, engine, raw, staging, scratch, parts_of)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _clean_parts(cfg, engine, raw, staging: Path, scratch: Path, parts_of):
    from movierec.engine import in_order, session

    sources = [(0, p) for p in parts_of("ratings")] + [(1, p) for p in parts_of("test")]
    test_frame = raw.get("test") if isinstance(raw.get("test"), pd.DataFrame) else None
    with_ts = any("timestamp" in _schema_names(p) for _, p in sources) or \
        (test_frame is not None and "timestamp" in test_frame.columns)
    if test_frame is not None:  # a given split's test file (one file): one more part
        tp = scratch / "test-part.parquet"
        scratch.mkdir(parents=True, exist_ok=True)
        test_frame.to_parquet(tp, index=False)
        sources.append((1, str(tp)))
    res = CleanResult()
    with session(engine) as ray:
        ids_task = ray.remote(num_cpus=engine.cpus_per_worker)(_ids_one)
        seen_u, seen_m = np.array([], dtype=object), np.array([], dtype=object)
        for u, m in in_order(ray, [ids_task.remote(p) for _, p in sources]):  # distinct so far: O(ids)
            seen_u, seen_m = pd.unique(np.concatenate([seen_u, u])), pd.unique(np.concatenate([seen_m, m]))
        others = {k: v for k, v in raw.items() if isinstance(v, pd.DataFrame) and k not in ("ratings", "test")}
        users, movies = others.get("users"), others.get("movies")
        reviews, social = others.get("reviews"), others.get("social")
        uid = _index([pd.Series(seen_u, dtype=object),
                      None if reviews is None else reviews["user_id"], None if users is None else users["user_id"],
                      None if social is None else social["user_id"], None if social is None else social["friend_id"]])
        mid = _index([pd.Series(seen_m, dtype=object),
                      None if reviews is None else reviews["movie_id"], None if movies is None else movies["movie_id"]])
        cold = None
        if cfg.split.method in ("cold_items", "cold_users"):
            side = 1 if cfg.split.method == "cold_items" else 0
            if reviews is None or not len(reviews):
                raise ConfigError(f"split.method {cfg.split.method!r} needs reviews (reviews.csv): the new movies "
                                  "(viewers) are those that have reviews")
            ids = (uid, mid)[side]
            rated = ids.get_indexer(pd.Index((seen_u, seen_m)[side], dtype=object))
            reviewed = _codes(ids, reviews["movie_id" if side else "user_id"])
            cold = cold_set(ids, rated, reviewed, cfg.split.cold_fraction, cfg.split.seed)
        buckets = max(1, len(sources))
        scratch.mkdir(parents=True, exist_ok=True)
        uid_ref, mid_ref = ray.put(uid), ray.put(mid)
        map_task = ray.remote(num_cpus=engine.cpus_per_worker)(_map_one)
        ray.get([map_task.remote(i, p, s, uid_ref, mid_ref, buckets, with_ts, str(scratch))
                 for i, (s, p) in enumerate(sources)])
        reduce_task = ray.remote(num_cpus=engine.cpus_per_worker)(_reduce_one)
        out = ray.get([reduce_task.remote(k, str(scratch), str(staging), cfg, uid_ref, mid_ref, cold, len(mid))
                       for k in range(buckets)])
    table = PartsTable(staging, files=[o["entry"] for o in out if o["entry"] is not None])
    if table.empty:
        raise DataError("no ratings left after cleaning")
    res.stats["duplicate_ratings_removed"] = int(sum(o["dups"] for o in out))
    res.stats["ratings"] = len(table)
    res.stats["test_ratings"] = int(sum(o["test"] for o in out))
    res.tables["ratings"] = table
    clean_side_tables(res, users, movies, reviews, social, uid, mid)
    log.info("clean: %d ratings deduplicated and split by Ray workers in %d parts", len(table), len(table.files))
    return res


def _schema_names(path: str) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_schema(path).names
