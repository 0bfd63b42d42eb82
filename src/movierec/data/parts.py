"""Partitioned inputs: a table given as a folder of CSV or Parquet part files.

Each part is read and validated like a single file (rows numbered within their part, the
part named in every quarantined row and error), then the parts are concatenated in the
order of their paths, so "latest wins" at clean time means the same as in one file whose
rows follow that order. With ``engine.kind: ray`` the parts are read in parallel by Ray
Data (:func:`read_parts_ray`, in the Ray session of :func:`movierec.engine.session`); the
result is the same.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from movierec.catalog import file_hash
from movierec.config import EngineConfig
from movierec.data.readers import ReadResult, missing_columns, read_table, validate_rows
from movierec.data.scale import RatingScale
from movierec.data.schemas import FileSchema
from movierec.engine import blocks, session
from movierec.errors import DataError

log = logging.getLogger(__name__)

PART_SUFFIXES = (".csv", ".parquet")


def part_files(folder: Path) -> list[Path]:
    """The part files of a partitioned table, in path order (sub-folders such as Hive's
    ``date=2026-12-01/`` included; hidden files and markers like ``_SUCCESS`` skipped)."""
    folder = Path(folder)
    parts = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PART_SUFFIXES
                   and not any(s.startswith((".", "_")) for s in p.relative_to(folder).parts))
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
    return validate_rows(path, df, [], schema, rating_range=rating_range, redact=redact)


def read_part(path: Path, schema: FileSchema, **kw) -> ReadResult:
    """One part file, by its suffix (``kw``: :func:`~movierec.data.readers.read_table`'s options)."""
    path = Path(path)
    return (read_parquet_part if path.suffix.lower() == ".parquet" else read_table)(path, schema, **kw)


def read_parts_ray(parts: Sequence[Path], schema: FileSchema, engine: EngineConfig, **kw) -> list[ReadResult]:
    """Read and validate part files in parallel with Ray Data (one row per part); the
    results in the order of ``parts``, exactly as :func:`read_part` gives."""
    with session(engine) as ray:
        import ray.data

        def read(batch: pd.DataFrame) -> pd.DataFrame:
            out = []
            for i, p in zip(batch["i"], batch["path"]):
                try:
                    out.append(pickle.dumps(read_part(Path(p), schema, **kw)))
                except DataError as exc:  # raised again in the driver, with its message
                    out.append(pickle.dumps(exc))
            return pd.DataFrame({"i": batch["i"].to_numpy(), "result": out})

        items = pd.DataFrame({"i": np.arange(len(parts)), "path": [str(p) for p in parts]})
        ds = ray.data.from_pandas(blocks(items, 1))
        rows = ds.map_batches(read, batch_size=1, batch_format="pandas", num_cpus=engine.cpus_per_worker,
                              compute=ray.data.TaskPoolStrategy(size=engine.workers)).to_pandas()
    results = [pickle.loads(b) for b in rows.sort_values("i")["result"]]
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


def combine(folder: Path, results: list[ReadResult]) -> ReadResult:
    """One result from the parts' results, in path order; quarantined rows name their part."""
    qs = []
    for r in results:
        if len(r.quarantine):
            q = r.quarantine.copy()
            q.insert(0, "file", str(Path(r.path).relative_to(folder)))
            qs.append(q)
    valid = pd.concat([r.valid for r in results], ignore_index=True) if results else pd.DataFrame()
    quarantine = pd.concat(qs, ignore_index=True) if qs else pd.DataFrame(columns=["file", "row", "reason"])
    scales = [r.scale for r in results if r.scale is not None]
    scale = RatingScale.union(scales) if scales else None
    return ReadResult(path=folder, valid=valid, quarantine=quarantine,
                      total_rows=int(sum(r.total_rows for r in results)), scale=scale)


def read_input(path: Path, schema: FileSchema, *, engine=None, **kw) -> ReadResult:
    """A table from one CSV file or from a folder of part files (in parallel on Ray when
    ``engine`` is a ray :class:`~movierec.config.EngineConfig`)."""
    path = Path(path)
    if not path.is_dir():
        return read_table(path, schema, **kw)
    parts = part_files(path)
    if engine is not None and engine.kind == "ray":
        results = read_parts_ray(parts, schema, engine, **kw)
    else:
        results = [read_part(p, schema, **kw) for p in parts]
    log.info("ingest: %s: %d part files, %d rows", path.name, len(parts), sum(r.total_rows for r in results))
    return combine(path, results)


def folder_hash(folder: Path) -> str:
    """A hash of every part's name and bytes (a new, changed or removed part changes it)."""
    h = hashlib.sha256()
    for p in part_files(folder):
        h.update(f"{p.relative_to(folder)}\0{file_hash(p)}\n".encode())
    return h.hexdigest()[:16]

