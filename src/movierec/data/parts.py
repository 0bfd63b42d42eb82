"""Partitioned inputs: a table given as a folder of CSV or Parquet part files.

Each part is read and validated like a single file (rows numbered within their part, the
part named in every quarantined row and error), then the parts are concatenated in the
order of their paths, so "latest wins" at clean time means the same as in one file whose
rows follow that order. With ``engine.kind: ray`` the parts are read in parallel by Ray
tasks, each in a worker that opens its part itself (:func:`read_parts_ray`, in the Ray
session of :func:`movierec.engine.session`); the result is the same. The folder may be at a
URL (``s3://``, ``gs://``, ``hdfs://``: :mod:`movierec.locations`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import pandas as pd
from pandas.api.types import union_categoricals

from movierec.catalog import file_hash
from movierec.config import EngineConfig
from movierec.data.readers import ReadResult, missing_columns, read_table, validate_rows
from movierec.data.scale import RatingScale
from movierec.data.schemas import FileSchema
from movierec.engine import in_order, session
from movierec.errors import DataError
from movierec.locations import Remote, location

log = logging.getLogger(__name__)

PART_SUFFIXES = (".csv", ".parquet")


def _inside(path: Path | Remote, folder: Path | Remote) -> str:
    """``path``'s place inside ``folder`` (``date=2/part-2.csv``), as a POSIX path."""
    if isinstance(path, Remote):
        return path.relative_to(folder)
    return Path(path).relative_to(folder).as_posix()


def part_files(folder: Path | Remote) -> list[Path | Remote]:
    """The part files of a partitioned table, in path order (sub-folders such as Hive's
    ``date=2026-12-01/`` included; hidden files and markers like ``_SUCCESS`` skipped): a
    local folder's, or those under a URL (listed by pyarrow's filesystem)."""
    folder = folder if isinstance(folder, Remote) else Path(folder)
    files = folder.files() if isinstance(folder, Remote) else (p for p in folder.rglob("*") if p.is_file())
    parts = sorted((p for p in files if p.suffix.lower() in PART_SUFFIXES
                    and not any(s.startswith((".", "_")) for s in _inside(p, folder).split("/"))),
                   key=lambda p: _inside(p, folder))
    if not parts:
        raise DataError(f"{folder}: a folder with no .csv or .parquet part files")
    return parts


def read_parquet_part(path: Path, schema: FileSchema, *, rating_range=(None, None), redact: bool = False,
                      **_csv_options) -> ReadResult:
    """One Parquet part, validated like a CSV file (ids and texts as strings; ``encoding`` and
    ``delimiter`` mean nothing to Parquet)."""
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0][:300]}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in schema.required if c not in df.columns]
    if missing:
        raise missing_columns(path, missing, df.columns, redact)
    for c in df.columns:
        if c in schema.numeric:
            if not pd.api.types.is_numeric_dtype(df[c].dtype):
                df[c] = df[c].astype("string").fillna("").astype(object)
            else:
                df[c] = df[c].astype("float64")
        elif c == "timestamp" and pd.api.types.is_datetime64_any_dtype(df[c].dtype):
            ts = df[c].dt.tz_localize("UTC") if df[c].dt.tz is None else df[c]
            df[c] = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        elif c == "timestamp" and pd.api.types.is_numeric_dtype(df[c].dtype):
            df[c] = df[c].astype("float64")
        else:
            df[c] = df[c].astype("string").fillna("").astype(object)
    res = validate_rows(path, df, [], schema, rating_range=rating_range, redact=redact)
    for c in schema.id_columns:  # ids as categories, as the CSV reader gives them (a part's
        if c in res.valid.columns:  # 20M ratings: 16 bytes of codes a row, not a string each)
            res.valid[c] = res.valid[c].astype("category")
    return res


def read_part(path: Path | Remote, schema: FileSchema, **kw) -> ReadResult:
    """One part file, by its suffix (``kw``: :func:`~movierec.data.readers.read_table`'s
    options); one at a URL is copied here first and named by its URL in every message."""
    reader = read_parquet_part if path.suffix.lower() == ".parquet" else read_table
    if isinstance(path, Remote):
        return path.read_with(reader, schema, **kw)
    return reader(Path(path), schema, **kw)


def read_parts_ray(parts: Sequence[Path | Remote], schema: FileSchema, engine: EngineConfig,
                   keyed: bool = False, **kw) -> list[ReadResult]:
    """Read and validate part files in parallel on Ray: one task per part, in a worker, which
    opens the part itself (a local path every node sees, or a URL); the results in the order
    of ``parts``, exactly as :func:`read_part` gives. The driver receives each part's valid
    rows (ids as categories) one part at a time; nothing is pickled twice. ``keyed``: each
    text is replaced by its hash in the worker (:func:`movierec.privacy.keyed_texts`), so
    the texts (reviews of 1 KB each) never reach the driver."""
    with session(engine) as ray:
        @ray.remote(num_cpus=engine.cpus_per_worker)
        def read(where: str):
            try:
                res = read_part(location(where), schema, **kw)
            except DataError as exc:  # raised again in the driver, with its message
                return exc
            if keyed:
                from movierec.privacy import keyed_texts

                res.valid = keyed_texts(res.valid)
            return res

        results = list(in_order(ray, [read.remote(p.url if isinstance(p, Remote) else str(p)) for p in parts]))
    for r in results:
        if not isinstance(r.path, Remote):
            r.path = Path(r.path)
    return results


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The parts' rows in order; a column that is categorical in every part (ids) stays
    categorical over the union of the parts' categories. pandas' concat would give an object
    column (a pointer a row to a shared string): clean then hashes strings instead of
    reading codes, 20M ratings in 16 parts: clean 17.1 -> 12.1 s, its peak 3.06 -> 1.99 GB
    (benchmarks/results/ray_driver_memory.md)."""
    if not frames:
        return pd.DataFrame()
    if len(frames) == 1:
        return frames[0]
    cats = [c for c in frames[0].columns
            if all(c in f.columns and isinstance(f[c].dtype, pd.CategoricalDtype) for f in frames)]
    order = list(dict.fromkeys(c for f in frames for c in f.columns))
    rest = pd.concat([f.drop(columns=cats) for f in frames], ignore_index=True) \
        if len(cats) < len(order) else pd.DataFrame(index=pd.RangeIndex(sum(len(f) for f in frames)))
    cols = {c: union_categoricals([_object_categories(f[c]) for f in frames]) for c in cats}
    return pd.DataFrame({c: cols[c] if c in cols else rest[c] for c in order})


def _object_categories(s: pd.Series) -> pd.Series:
    """``s`` with its categories as Python strings (a Parquet part's may be pandas' string
    dtype, a CSV part's are objects: the union needs one kind)."""
    cats = s.cat.categories
    if cats.dtype == object:
        return s
    return s.cat.set_categories(pd.Index(cats.astype(object), dtype=object), rename=True)


def combine(folder: Path | Remote, results: list[ReadResult]) -> ReadResult:
    """One result from the parts' results, in path order; quarantined rows name their part."""
    qs = []
    for r in results:
        if len(r.quarantine):
            q = r.quarantine.copy()
            q.insert(0, "file", _inside(r.path, folder))
            qs.append(q)
    valid = _concat([r.valid for r in results])
    quarantine = pd.concat(qs, ignore_index=True) if qs else pd.DataFrame(columns=["file", "row", "reason"])
    scales = [r.scale for r in results if r.scale is not None]
    scale = RatingScale.union(scales) if scales else None
    return ReadResult(path=folder, valid=valid, quarantine=quarantine,
                      total_rows=int(sum(r.total_rows for r in results)), scale=scale)


def read_input(path: Path | Remote, schema: FileSchema, *, engine=None, keyed: bool = False, **kw) -> ReadResult:
    """A table from one CSV file or from a folder of part files (in parallel on Ray when
    ``engine`` is a ray :class:`~movierec.config.EngineConfig`), local or at a URL.
    ``keyed``: the parts read on Ray come with their texts' hashes, not their texts
    (:func:`read_parts_ray`)."""
    path = path if isinstance(path, Remote) else Path(path)
    if not path.is_dir():
        if isinstance(path, Remote):
            if not path.exists():
                raise DataError(f"{path}: file not found (the {schema.name} file is required)")
            return read_part(path, schema, **kw)
        return read_table(path, schema, **kw)
    parts = part_files(path)
    if engine is not None and engine.kind == "ray":
        results = read_parts_ray(parts, schema, engine, keyed=keyed, **kw)
    else:
        results = [read_part(p, schema, **kw) for p in parts]
    log.info("ingest: %s: %d part files, %d rows", path.name, len(parts), sum(r.total_rows for r in results))
    return combine(path, results)


def folder_hash(folder: Path | Remote) -> str:
    """A hash of every part's name and bytes (a new, changed or removed part changes it); of
    a folder at a URL, every part's name, size and modification time."""
    h = hashlib.sha256()
    for p in part_files(folder):
        h.update(f"{_inside(p, folder)}\0{input_hash(p)}\n".encode())
    return h.hexdigest()[:16]


def input_hash(path: Path | Remote) -> str:
    """What identifies an input's content: a file's hash, a folder's :func:`folder_hash`
    (``absent`` where there is none); at a URL, from sizes and modification times."""
    if isinstance(path, Remote):
        return folder_hash(path) if path.is_dir() else path.fingerprint()
    path = Path(path)
    return folder_hash(path) if path.is_dir() else file_hash(path) if path.exists() else "absent"

