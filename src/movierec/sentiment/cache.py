"""The score cache: (scorer's model key + text hash) -> score and text features, so that a
re-run on unchanged data does no model work and reads no text.

On disk the cache is a Parquet file (``cache/sentiment.parquet``, in row groups of
:data:`ROW_GROUP` rows) and the parts a run adds while it scores (``cache/sentiment.parts``:
its checkpoints); a later row of a key wins. :class:`ScoreCache` looks rows up by key without
loading the cache: each file is read a row group at a time, its key column first, and only
the rows of the keys asked for are kept (on Ray, from :data:`RAY_LOOKUP_ROWS` rows on, Ray
tasks read the files' row groups: a semi-join in the cluster). :func:`merge` folds a run's
new rows into the file the same way, a row group of the old file at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from movierec.privacy import key_of_text
from movierec.progress import Progress
from movierec.sentiment.ray_texts import RemoteTexts
from movierec.sentiment.scorers import TextScorer, score_with_features

log = logging.getLogger(__name__)

#: rows per row group of the cache's file (what one read of a lookup or a merge holds)
ROW_GROUP = 65536
#: from this many rows in the cache's files, a lookup on Ray reads them in Ray tasks
RAY_LOOKUP_ROWS = 1_000_000
#: row groups a lookup task on Ray reads, one after the other
GROUPS_PER_TASK = 16


_DTYPES = {"sentiment": np.float32}


def _empty(columns: Sequence[str] = ()) -> pd.DataFrame:
    """No rows: ``key`` and ``columns`` (a score is float32, the others objects)."""
    return pd.DataFrame({"key": pd.Series(dtype=object), **{c: pd.Series(dtype=_DTYPES.get(c, object))
                                                            for c in columns}})


class ScoreCache:
    """The score cache's rows, looked up by key: rows in memory (``frame``) and the cache's
    Parquet files (``files``, in order: a later row of a key wins), never loaded whole.
    ``engine`` (``kind: ray``): a lookup in files of ``ray_rows`` rows or more runs in Ray
    tasks, each reading a slice of a file's row groups."""

    def __init__(self, frame: pd.DataFrame | None = None, files: Sequence[str | Path] = (), engine=None,
                 ray_rows: int = RAY_LOOKUP_ROWS) -> None:
        self.frame = frame if frame is not None else _empty(["sentiment"])
        self.files = [Path(f) for f in files]
        self.engine = engine if engine is not None and getattr(engine, "kind", None) == "ray" else None
        self.ray_rows = ray_rows
        self._names: set[str] | None = None

    @classmethod
    def of(cls, cache: "ScoreCache | pd.DataFrame | None") -> "ScoreCache":
        return cache if isinstance(cache, ScoreCache) else cls(cache)

    def columns(self) -> set[str]:
        """The columns some row of the cache has."""
        if self._names is None:
            import pyarrow.parquet as pq

            self._names = set(self.frame.columns).union(*(pq.read_schema(f).names for f in self.files))
        return self._names

    def file_rows(self) -> int:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)

    def _found(self, wanted, cols: list[str]) -> list:
        """The Arrow tables of the rows of ``wanted`` (keys as an Arrow string array; ``key``
        and those of ``cols`` each source has): the rows in memory, then each file's, in order
        (a later row of a key wins)."""
        import pyarrow as pa

        tables = []
        if len(wanted) and len(self.frame):
            mine = self.frame[self.frame["key"].isin(wanted.to_pandas())]
            tables.append(pa.Table.from_pandas(mine[["key", *(c for c in cols if c in mine.columns)]],
                                               preserve_index=False))
        if len(wanted) and self.files:
            if self.engine is not None and self.file_rows() >= self.ray_rows:
                tables += _lookup_on_ray(self.files, cols, wanted, self.engine)
            else:
                tables += [t for f in self.files for t in lookup_groups(str(f), None, cols, wanted)]
        return [t for t in tables if t.num_rows]

    def lookup(self, keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
        """The rows of ``keys`` (the last row of each), indexed by key, with those of ``columns``
        the cache has; a key without a row is absent."""
        import pyarrow as pa

        cols = [c for c in columns if c in self.columns()]
        tables = self._found(arrow_keys(keys), cols) if len(keys) else []
        if not tables:
            return _empty(cols).set_index("key")
        out = pa.concat_tables(tables, promote_options="default").to_pandas()
        return out.drop_duplicates("key", keep="last").set_index("key")

    def lookup_aligned(self, keys, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """The values of ``columns`` for ``keys`` (str or ``S`` bytes), one per key in its
        order (the last row of each key): ``sentiment`` float32 (NaN: none), the others object
        arrays (None: none; the same str object for each row of one language). Matched in
        Arrow: no Python object per key, whether found or not (what :meth:`lookup` makes)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(keys)
        out = {c: np.full(n, np.nan, np.float32) if c == "sentiment" else np.full(n, None, dtype=object)
               for c in columns}
        cols = [c for c in columns if c in self.columns()]
        if not n or (not len(self.frame) and not self.files):  # (nothing to look in: no copy of the keys)
            return out
        wanted = arrow_keys(keys)  # (once: the lookup's and the matching's)
        tables = self._found(wanted, cols)
        if not tables:
            return out
        found = pa.concat_tables(tables, promote_options="default")
        del tables
        # the last row of each key: the first in the keys reversed (the other columns stay as read)
        last = found.num_rows - 1
        backwards = found["key"].take(pa.array(np.arange(last, -1, -1)))
        at = pc.subtract(last, pc.index_in(wanted, value_set=backwards))  # (null: none)
        del backwards, wanted
        for c in cols:
            if c not in found.column_names:
                continue
            col = found[c].take(at)
            if c == "sentiment":
                out[c] = np.array(pc.fill_null(col.cast(pa.float32()), np.nan).to_numpy(), np.float32)  # (writable)
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                enc = col.combine_chunks().dictionary_encode()
                names = np.array(enc.dictionary.to_pylist() + [None], dtype=object)
                out[c] = names[pc.fill_null(enc.indices, -1).to_numpy()]  # (-1: the None at the end)
            else:
                out[c] = np.array(col.to_numpy(zero_copy_only=False), dtype=object)
        return out

    def load(self) -> pd.DataFrame:
        """Every row (the last of each key): what a test or a tool reads whole."""
        frames = [self.frame, *(pd.read_parquet(f) for f in self.files)]
        frames = [f for f in frames if len(f)] or [self.frame]
        return pd.concat(frames, ignore_index=True).drop_duplicates("key", keep="last").reset_index(drop=True)


def readable(files: Sequence[Path]) -> list[Path]:
    """The cache's files that can be read (a Parquet footer, a ``key`` column); one that cannot
    (torn, truncated, not Parquet) is set aside beside itself as ``NAME.damaged`` and logged:
    the cache is derived data, so its texts are scored again rather than the stage failing."""
    import pyarrow.parquet as pq

    out = []
    for f in files:
        try:
            if "key" not in pq.read_schema(f).names:
                raise ValueError("it has no key column")
            out.append(f)
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a file it cannot read vary
            aside = f.with_name(f.name + ".damaged")
            os.replace(f, aside)
            log.warning("sentiment: the score cache file %s cannot be read (%s); set aside as %s, its texts are "
                        "scored again", f, exc, aside.name)
    return out


def lookup_groups(path: str, groups: Sequence[int] | None, columns: Sequence[str], wanted) -> list:
    """The rows of ``path`` (its row groups ``groups``; None: all) whose key is in ``wanted``
    (an Arrow array), with those of ``columns`` the file has: one row group in memory at a time,
    its other columns read only where some key of it is asked for (a run's texts sit in the
    row groups its runs added: a cache of earlier years costs their keys' column)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    cols = [c for c in columns if c in pf.schema_arrow.names]
    out = []
    for g in range(pf.num_row_groups) if groups is None else groups:
        keys = pf.read_row_group(g, columns=["key"])["key"]
        hit = pc.is_in(keys, value_set=wanted)
        if not pc.any(hit).as_py():
            continue
        t = pf.read_row_group(g, columns=["key", *cols]) if cols else pa.table({"key": keys})
        out.append(t.filter(hit))
    return out


def _lookup_on_ray(files: list[Path], columns: list[str], wanted, engine) -> list:
    """:func:`lookup_groups` in Ray tasks, :data:`GROUPS_PER_TASK` row groups each (the keys
    asked for put in the object store once); the tables in the files' order."""
    import pyarrow.parquet as pq

    from movierec.engine import session

    with session(engine) as ray:
        task = ray.remote(lookup_groups).options(num_cpus=engine.cpus_per_worker)
        shared = ray.put(wanted)
        runs = []
        for f in files:
            n = pq.ParquetFile(f).num_row_groups
            runs += [task.remote(str(f), list(range(a, min(a + GROUPS_PER_TASK, n))), columns, shared)
                     for a in range(0, n, GROUPS_PER_TASK)]
        log.info("sentiment: the score cache's %d files looked up by %d Ray tasks", len(files), len(runs))
        return [t for got in ray.get(runs) for t in got]


def merge(path: Path, earlier: Sequence[Path], new: pd.DataFrame | Sequence[pd.DataFrame] | None,
          row_group: int = ROW_GROUP) -> int:
    """Rewrite the cache's file ``path`` with the rows of ``earlier`` (checkpoint parts: an
    interrupted run's and this run's) and ``new`` (this run's since its last checkpoint: a
    table, or tables in order), later
    rows winning: the old file a row group at a time (its rows whose key has a newer row
    dropped), then each part's rows, then the new rows (each without the rows a later row of
    its key replaces), in row groups of ``row_group`` rows. What is held at once: the added
    rows' keys, and one row group or one part. Atomic: ``path`` is replaced only when the new
    file is whole. Returns its rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from movierec.catalog import atomic_path

    new = [] if new is None else [new] if isinstance(new, pd.DataFrame) else list(new)
    sources = [*earlier, *(f for f in new if len(f))]  # (each in Arrow only while it is written)

    def table(src, columns=None):
        if isinstance(src, pd.DataFrame):
            return pa.Table.from_pandas(src if columns is None else src[columns], preserve_index=False)
        return pq.read_table(src, columns=columns)

    # each added key's last row: the rows kept of each source (hashed by dictionary_encode,
    # a chunk after another: Arrow's group_by took 0.3 KB a key)
    keys = [table(src, ["key"])["key"] for src in sources]
    sizes = [len(k) for k in keys]
    keep = np.zeros(sum(sizes), bool)
    added = pa.array([], pa.large_string())
    if keep.size:
        enc = pc.dictionary_encode(pa.chunked_array([c.cast(pa.large_string()) for k in keys for c in k.chunks],
                                                    pa.large_string()))
        del keys
        codes = np.concatenate([c.indices.to_numpy() for c in enc.chunks])
        _, first_backwards = np.unique(codes[::-1], return_index=True)
        keep[len(codes) - 1 - first_backwards] = True  # each key's last row
        added = enc.chunks[-1].dictionary  # (every chunk's codes index the last chunk's dictionary)
        del enc, codes, first_backwards
    else:
        del keys
    schemas = [pa.Schema.from_pandas(src, preserve_index=False) if isinstance(src, pd.DataFrame)
               else pq.read_schema(src) for src in sources]
    old = pq.ParquetFile(path) if path.exists() else None
    if old is not None:
        schemas.insert(0, old.schema_arrow)
    schema = (pa.unify_schemas(schemas, promote_options="permissive") if schemas
              else pa.Table.from_pandas(_empty(["sentiment"]), preserve_index=False).schema).remove_metadata()
    rows = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for g in range(old.num_row_groups if old is not None else 0):
            t = old.read_row_group(g)
            t = _conform(t.filter(pc.invert(pc.is_in(t["key"], value_set=added))), schema)
            if t.num_rows:
                writer.write_table(t, row_group_size=row_group)
                rows += t.num_rows
        at, buf = 0, []  # (small parts gathered into whole row groups)
        for k, (src, n) in enumerate(zip(sources, sizes)):
            mask, at = keep[at: at + n], at + n
            if mask.any():
                buf.append(_conform(table(src).filter(pa.array(mask)), schema))
            held = sum(t.num_rows for t in buf)
            if held >= row_group or (k + 1 == len(sources) and held):
                t = pa.concat_tables(buf)
                whole = held if k + 1 == len(sources) else held - held % row_group
                writer.write_table(t.slice(0, whole), row_group_size=row_group)
                buf, rows = [t.slice(whole)] if whole < held else [], rows + whole
    return rows


def _conform(t, schema):
    """``t`` with ``schema``'s columns in its order (nulls for those it lacks), cast to its types."""
    import pyarrow as pa

    cols = [t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def cache_keys(text_keys: Sequence[str], model: str) -> np.ndarray:
    """Cache keys: a hash of (model key, text hash); the text itself is never stored. As an
    ``S32`` array (32 hex digits each, ASCII): no Python object per key (a run holds one per
    text for the languages and one per scorer)."""
    prefix = model.encode() + b"\0"
    out = np.empty(len(text_keys), dtype="S32")
    for i, k in enumerate(text_keys):
        out[i] = hashlib.blake2b(prefix + (k if isinstance(k, bytes) else k.encode()), digest_size=16).hexdigest()
    return out


def bytes_array(strings) -> np.ndarray:
    """An Arrow string array or column (ASCII: hashes) as an ``S`` array, a slice at a time
    copied from its buffer: each string padded with NULs to the longest (what an ``S``
    array's items are), no Python object each."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from movierec._memory import returning_pool

    chunks = strings.chunks if isinstance(strings, pa.ChunkedArray) else [strings]
    step, pool, out = 1 << 20, returning_pool(), []
    for chunk in chunks:
        for a in range(0, len(chunk), step):
            part = chunk.slice(a, step).cast(pa.string(), memory_pool=pool)
            width = max(1, pc.max(pc.binary_length(part)).as_py() or 0)
            padded = pc.utf8_rpad(part, width=width, padding="\0", memory_pool=pool)
            start = int(np.frombuffer(padded.buffers()[1], np.int32)[padded.offset])
            out.append(np.frombuffer(padded.buffers()[2], dtype=f"S{width}", count=len(padded), offset=start).copy())
    return np.concatenate(out) if out else np.array([], dtype="S1")


def key_array(keys) -> np.ndarray:
    """Text hashes as an array: an ``S`` array as it is (bytes, no object per key), else objects."""
    return keys if isinstance(keys, np.ndarray) and keys.dtype.kind in "SO" else np.asarray(keys, dtype=object)


def arrow_keys(keys, large: bool = True):
    """Keys (str, or an ``S`` array) as an Arrow string array (``large``: 64-bit offsets, as
    100M keys, 3.2 GB, need)."""
    import pyarrow as pa

    binary, string = (pa.large_binary(), pa.large_string()) if large else (pa.binary(), pa.string())
    if isinstance(keys, np.ndarray) and keys.dtype.kind == "S":
        return pa.array(keys, binary).cast(string)
    return pa.array(np.asarray(keys, dtype=object), string)


def key_column(keys) -> pd.Series:
    """Keys as a column of a table the cache stores (Arrow strings, no Python object per key)."""
    return arrow_keys(keys, large=False).to_pandas()  # (a chunk's keys: the cache's own type, no cast)


class CachedScorer:
    """Scores through a cache of (model key + text hash) -> score (and, with ``features``,
    the text's features as float16 bytes).

    The wrapped model is built only when some text misses the cache, and only the texts
    that miss are read (``score_keys_features`` asks ``fetch`` for them), so a re-run on unchanged
    data does no model work and reads no text. ``misses`` counts the texts actually scored.
    A cached score without the features that are now wanted counts as a miss.
    """

    def __init__(self, factory: Callable[[], TextScorer], key: str, cache: pd.DataFrame | None,
                 features: bool = False, checkpoint: Callable[[pd.DataFrame], None] | None = None,
                 checkpoint_every: int = 4096) -> None:
        self.factory, self.model_id, self.features = factory, key, features
        # scored rows are handed to ``checkpoint`` every ``checkpoint_every`` texts, so a run
        # killed while scoring keeps what it scored
        self.checkpoint, self.checkpoint_every = checkpoint, max(1, checkpoint_every)
        self.cache = ScoreCache.of(cache)
        self.misses = 0
        self.new_rows: list[pd.DataFrame] = []
        self._scorer: TextScorer | None = None

    def _cached(self, text_keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(cache keys, cached scores (NaN: none), cached features, which texts miss)."""
        keys = cache_keys(text_keys, self.model_id)
        found = self.cache.lookup_aligned(keys, ["sentiment", "features"] if self.features else ["sentiment"])
        got, blobs = found["sentiment"], found.get("features")
        if blobs is None:
            blobs = np.full(len(keys), None, dtype=object)
        missing = np.isnan(got)
        if self.features:
            missing |= np.array([not isinstance(b, bytes) for b in blobs], dtype=bool)
        return keys, got, blobs, missing

    def misses_any(self, text_keys: Sequence[str]) -> bool:
        """Whether some of these texts would need the model."""
        return bool(self._cached(text_keys)[3].any())

    def load(self) -> None:
        """Build the wrapped model now (it is built on the first miss otherwise)."""
        if self._scorer is None:
            self._scorer = self.factory()

    def save_pending(self) -> None:
        """Hand the rows scored since the last save to ``checkpoint`` (they are then its to keep)."""
        if self.checkpoint is not None and self.new_rows:
            rows = pd.concat(self.new_rows, ignore_index=True) if len(self.new_rows) > 1 else self.new_rows[0]
            self.new_rows.clear()
            self.checkpoint(rows)

    def score_keys_features(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]
                            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores of the texts behind ``text_keys`` (read through ``fetch`` where the cache has
        none) and, with ``features``, their features as a float16 matrix (None: none)."""
        got, blobs = self.score_keys_blobs(text_keys, fetch)
        feats = None
        if blobs is not None:
            feats = features_from_bytes(blobs, np.float16)  # half the memory; stored as float16 anyway
            feats = feats if feats.shape[1] else None
        return got, feats

    def score_keys_blobs(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]
                         ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`score_keys_features` with the features as stored (an object array of float16
        rows as bytes, one object per text, None without ``features``): no matrix of them.

        Rows handed to ``checkpoint`` are not kept here (the checkpoint holds them; the stage
        folds its files into the cache): a run holds only the rows scored since its last save."""
        text_keys = key_array(text_keys)
        keys, got, blobs, missing = self._cached(text_keys)
        miss = np.flatnonzero(missing)
        if len(miss):
            log.info("sentiment: %d of %d texts not in the cache; scoring them", len(miss), len(keys))
            self.load()
            expect = getattr(fetch, "expect", None)
            if expect is not None:  # a source that reads its inputs: once for all the chunks below
                expect(text_keys[miss])
            step = self.checkpoint_every if self.checkpoint is not None else len(miss)
            # one progress over all the misses: the scorer's own progress of each chunk counts
            # toward it, so a bar or a cron log line shows the whole total, not one chunk's
            with Progress(len(miss), "sentiment", unit="texts") as bar:
                for start in range(0, len(miss), step):
                    part = miss[start: start + step]
                    texts = fetch(text_keys[part])
                    if isinstance(texts, RemoteTexts) and not getattr(self._scorer, "reads_remote_texts", False):
                        texts = texts.get()  # (a scorer in this process: RayScorer's actors fetch them)
                    with bar.part(len(part)):
                        s, f = score_with_features(self._scorer, texts)
                    del texts
                    got[part] = s
                    row = {"key": key_column(keys[part]), "sentiment": got[part]}
                    if self.features:  # a scorer without features stores b"" (known: nothing to add)
                        new_blobs = features_to_bytes(np.zeros((len(part), 0)) if f is None else f)
                        blobs[part] = new_blobs
                        row["features"] = new_blobs
                    self.misses += len(part)
                    self.new_rows.append(pd.DataFrame(row))
                    if start + step < len(miss):
                        self.save_pending()
        else:
            log.info("sentiment: all %d texts found in the cache", len(keys))
        if not self.features or not len(keys) or not all(isinstance(b, bytes) for b in blobs):
            return got, None
        return got, blobs

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_features(texts)[0]

    def score_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        keys = [key_of_text(t) for t in texts]
        by_key = dict(zip(keys, texts))
        return self.score_keys_features(keys, lambda ks: [by_key[k] for k in ks])

    def updated_cache(self) -> pd.DataFrame:
        """The whole cache with this run's new rows (a re-scored text keeps only its newest row;
        with a ``checkpoint``, the rows since the last one: it holds the others)."""
        out = pd.concat([self.cache.load(), *self.new_rows], ignore_index=True)
        return out.drop_duplicates("key", keep="last").reset_index(drop=True)


def features_to_bytes(feats: np.ndarray) -> np.ndarray:
    """An n x d matrix -> n float16 rows as bytes (an object array), how features are stored."""
    return np.array([r.tobytes() for r in np.asarray(feats, np.float16)], dtype=object)


def features_from_bytes(blobs: Sequence[bytes], dtype=np.float32) -> np.ndarray:
    """float16 feature rows stored as bytes -> an n x d matrix (d = 0 for b"")."""
    if not len(blobs):
        return np.zeros((0, 0), dtype)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1).astype(dtype)
