"""The catalogue of named artifacts under the workdir, their manifests, and safe writes.

Layout of a workdir::

    artifacts/<name>.parquet|.npz|.json    stage outputs, each written atomically
    manifests/<stage>.json                 inputs' hashes, config hash, rows, seconds
    quarantine/<file>.csv                  rows ingest refused, with the reason
    models/                                model versions (see :mod:`movierec.registry`)

Every file is written under a temporary name beside its target and renamed into place, so
a crashed process leaves the old file or the new one, never a torn one. What must also
survive a power loss is flushed to disk (fsync) before the rename and its folder entry after:
the feedback log (acknowledged events), model versions and the serving pointer (what serves),
the score cache and its checkpoints (hours of work), run records. The stage artifacts and
manifests here are not: they are derived, each is re-made from its inputs by re-running a
stage, and a first `evaluate` of 2M ratings spent 30-50 ms in their 28 fsyncs on a fast disk
(1%; far more on a slow or network disk, and at 20M ratings). A manifest records
each output's size, and an output whose size on disk differs (its data lost with the power)
makes its stage stale. Files get the permissions of the process umask (a separate serving
user can read what the nightly job writes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from movierec._lazy import pd

from movierec._version import __version__

#: Artifact name -> file name. The contract between stages.
ARTIFACTS: dict[str, str] = {
    "ratings_raw": "ratings_raw.parquet",
    "test_raw": "test_raw.parquet",
    "users_raw": "users_raw.parquet",
    "movies_raw": "movies_raw.parquet",
    "reviews_raw": "reviews_raw.parquet",
    "social_raw": "social_raw.parquet",
    "ratings_clean": "ratings_clean.parquet",
    "users_clean": "users_clean.parquet",
    "movies_clean": "movies_clean.parquet",
    "reviews_clean": "reviews_clean.parquet",
    "social_clean": "social_clean.parquet",
    "user_ids": "user_ids.parquet",
    "movie_ids": "movie_ids.parquet",
    "review_sentiment": "review_sentiment.parquet",
    "message_sentiment": "message_sentiment.parquet",
    "social_features": "social_features.parquet",
    "social_neighbours": "social_neighbours.parquet",
    "user_features": "user_features.npz",
    "item_features": "item_features.npz",
    "feature_transformers": "feature_transformers.json",
    "feedback_state": "feedback_state.json",
}


#: Compression of the parquet artifacts: none. They are intermediate files on the machine
#: that made them, written once and read once or twice: uncompressed, a 2M-rating table is
#: written in 0.08 s and read in 0.02 s, against 0.18 s and 0.08 s with snappy (pandas'
#: default), for 15% more bytes.
PARQUET_COMPRESSION = None


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (streamed), shortened to 16 hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` as the process umask lets a new file have it (what ``open`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def fsync_path(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under ``folder`` and then every folder, deepest first."""
    folder = Path(folder)
    dirs = [folder]
    for p in folder.rglob("*"):
        if p.is_file():
            fsync_path(p)
        elif p.is_dir():
            dirs.append(p)
    for d in sorted(dirs, key=lambda d: -len(d.parts)):
        fsync_path(d)


def open_regular(path: Path, flags: int, what: str, error: type, hint: str) -> int:
    """A descriptor of ``path`` opened with O_NOFOLLOW and O_CLOEXEC (``flags`` added): a
    symbolic link, a hard link or anything but a regular file there is refused with
    ``error`` naming ``what`` and the path (writing through a link would change its target,
    reading through one would take in another file). FileNotFoundError passes through."""
    import errno

    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP or Path(path).is_symlink():
            raise error(f"{what} {path} is a symbolic link; movierec does not read or write it through a "
                        f"link{hint}") from None
        raise error(f"{what} {path} cannot be opened: {exc.strerror or exc}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        kind = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a hard link ({st.st_nlink} names)"
        raise error(f"{what} {path} is {kind}; movierec does not read or write it{hint}")
    os.set_blocking(fd, True)  # non-blocking only for the open: a FIFO there must not hang it
    return fd


@contextlib.contextmanager
def atomic_path(target: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only on success.

    The temporary file has the umask's permissions (``mkstemp`` alone gives 0600); with
    ``durable`` it is fsynced before the rename, and the folder after it.
    """
    target = Path(target)
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        # a device, a pipe, /dev/stdout: write straight to it (renaming over it would replace
        # the device node or link with a regular file)
        yield target
        return
    if target.is_symlink():  # a link to a regular file: replace the file, keep the link
        target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, umask_mode())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if durable:
            fsync_path(tmp_path)
        os.replace(tmp_path, target)
        if durable:
            fsync_path(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: Tables this process wrote or read, by path, with the file's identity then (size, change
#: time, inode): a stage reads what the stage before it just wrote from memory, not from disk,
#: and a table two steps read (the ratings: every fold, evaluate and train) once. Only with
#: pandas' copy-on-write (pandas 3, or the option set): each reader gets a shallow copy whose
#: changes never reach the kept table. A file replaced since (another process) is read again.
_KEPT: "OrderedDict[str, tuple[tuple[int, int, int], pd.DataFrame]]" = OrderedDict()
KEEP_TABLES = 8  # the most recently used; a long-lived process holds no more


def _copy_on_write() -> bool:
    return int(pd.__version__.split(".")[0]) >= 3 or bool(pd.get_option("mode.copy_on_write") is True)


def _identity(p: Path) -> tuple[int, int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_size, st.st_ctime_ns, st.st_ino


def _remember(p: Path, df: pd.DataFrame) -> None:
    ident = _identity(p)
    if ident is not None and _copy_on_write():
        _KEPT[str(p)] = (ident, df)
        _KEPT.move_to_end(str(p))
        while len(_KEPT) > KEEP_TABLES:
            _KEPT.popitem(last=False)


def _remembered(p: Path) -> pd.DataFrame | None:
    got = _KEPT.get(str(p))
    if got is None:
        return None
    if got[0] != _identity(p):
        del _KEPT[str(p)]
        return None
    _KEPT.move_to_end(str(p))
    return got[1].copy(deep=False)


def read_parts(folder: Path) -> pd.DataFrame:
    """A folder of Parquet parts (``part-00000.parquet``, ...) as one frame, in the parts'
    order: columns some parts lack are empty there, and a column each part holds as a
    dictionary (ids) is one categorical over every part's values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(Path(folder).glob("part-*.parquet"))
    if not files:
        return pd.DataFrame()
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    return table.to_pandas()


def forget_tables() -> None:
    """Drop the tables kept in memory (a long-lived process between commands)."""
    _KEPT.clear()


def write_json(obj: Any, target: str | Path, durable: bool = True) -> None:
    with atomic_path(target, durable) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@dataclass
class Catalog:
    """Named artifacts of one workdir."""

    workdir: Path

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)

    # paths -------------------------------------------------------------------------
    @property
    def artifacts_dir(self) -> Path:
        return self.workdir / "artifacts"

    @property
    def manifests_dir(self) -> Path:
        return self.workdir / "manifests"

    @property
    def quarantine_dir(self) -> Path:
        return self.workdir / "quarantine"

    @property
    def models_dir(self) -> Path:
        return self.workdir / "models"

    def path(self, name: str) -> Path:
        if name not in ARTIFACTS:
            raise KeyError(f"unknown artifact {name!r}")
        return self.artifacts_dir / ARTIFACTS[name]

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    # reading / writing ---------------------------------------------------------------
    def read(self, name: str) -> Any:
        p = self.path(name)
        if p.is_dir() and not p.is_symlink():  # parts written by Ray workers (engine.kind: ray)
            return read_parts(p)
        if p.suffix == ".parquet":
            kept = _remembered(p)
            if kept is not None:
                return kept
            df = pd.read_parquet(p)
            _remember(p, df)
            return df
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return json.loads(p.read_text())

    def rows(self, name: str) -> int:
        """The number of rows of a Parquet artifact (a file, or a folder of parts), from the
        files' metadata: the id tables' sizes without reading their ids."""
        import pyarrow.parquet as pq

        p = self.path(name)
        kept = _remembered(p) if p.is_file() else None
        if kept is not None:
            return len(kept)
        files = sorted(p.glob("part-*.parquet")) if p.is_dir() and not p.is_symlink() else [p]
        return int(sum(pq.read_metadata(f).num_rows for f in files))

    def read_optional(self, name: str) -> Any:
        return self.read(name) if self.exists(name) else None

    def write(self, name: str, obj: Any) -> dict:
        """Write an artifact atomically; returns its manifest entry (file, rows, hash).

        Raises:
            StorageError: the artifact's name in the workdir is a symbolic link (writing
                through it would replace a file outside the workdir).
        """
        p = self.path(name)
        if p.is_symlink():
            from movierec.errors import StorageError

            raise StorageError(f"{p}: is a symbolic link; movierec writes its artifacts only inside the workdir. "
                               "Remove the link (the stage then writes a regular file there)")
        if p.is_dir():  # an earlier run's parts (engine.kind: ray): one file now
            _KEPT.pop(str(p), None)
            shutil.rmtree(p)
        with atomic_path(p, durable=False) as tmp:  # derived: see the module's note
            if p.suffix == ".parquet":
                # dictionary encoding only where it pays (ids, texts): on numbers it is most of
                # the write time and keeps nothing smaller
                text = [str(c) for c in obj.columns if not pd.api.types.is_numeric_dtype(obj[c].dtype)]
                obj.to_parquet(tmp, index=False, compression=PARQUET_COMPRESSION, use_dictionary=text or False)
                rows = len(obj)
                written = obj
            elif p.suffix == ".npz":
                with open(tmp, "wb") as fh:
                    np.savez(fh, **obj)
                rows = int(max((np.shape(v)[0] for v in obj.values() if np.ndim(v)), default=0))
            else:
                tmp.write_text(json.dumps(obj, default=_json_default))
                rows = len(obj)
        if p.suffix == ".parquet" and all(pd.api.types.is_numeric_dtype(t) for t in written.dtypes):
            # the next stage of this command reads it back from memory: numbers come back from
            # parquet exactly as they went in (ids and texts may change dtype: read from disk)
            _remember(p, written)
        return {"file": ARTIFACTS[name], "rows": rows, "hash": file_hash(p), "bytes": p.stat().st_size}

    def install_parts(self, name: str, table) -> dict:
        """A folder of Parquet parts that Ray workers wrote (a
        :class:`~movierec.data.ray_tables.PartsTable` in a staging folder of the artifacts
        folder) put in place as artifact ``name``; its manifest entry (the hash: of its parts'
        names and hashes)."""
        p = self.path(name)
        if p.is_symlink():
            from movierec.errors import StorageError

            raise StorageError(f"{p}: is a symbolic link; movierec writes its artifacts only inside the workdir")
        _KEPT.pop(str(p), None)
        old = None
        if p.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
            os.replace(p, old / "x")
        os.replace(table.folder, p)
        table.folder = p
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        h = hashlib.sha256("".join(f"{f['file']}\0{f['hash']}\n" for f in table.files).encode()).hexdigest()[:16]
        return {"file": ARTIFACTS[name], "rows": len(table), "hash": h, "bytes": int(sum(f["bytes"] for f in table.files)),
                "parts": len(table.files)}

    def remove(self, name: str) -> None:
        _KEPT.pop(str(self.path(name)), None)
        p = self.path(name)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            return
        with contextlib.suppress(FileNotFoundError):
            p.unlink()

    # manifests ---------------------------------------------------------------------
    def manifest_path(self, stage: str) -> Path:
        return self.manifests_dir / f"{stage}.json"

    def read_manifest(self, stage: str) -> dict | None:
        p = self.manifest_path(stage)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None

    def write_manifest(
        self,
        stage: str,
        inputs: dict[str, str],
        config_hash: str,
        outputs: dict[str, dict],
        seconds: float,
        extra: dict | None = None,
    ) -> dict:
        manifest = {
            "stage": stage,
            "inputs": inputs,
            "config_hash": config_hash,
            "outputs": outputs,
            "seconds": round(seconds, 3),
            "code_version": __version__,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if extra:
            manifest.update(extra)
        write_json(manifest, self.manifest_path(stage), durable=False)
        return manifest

    def output_hashes(self, stage: str) -> dict[str, str]:
        """Hashes of a stage's outputs as recorded in its manifest (for downstream inputs)."""
        m = self.read_manifest(stage) or {}
        return {f"{stage}.{k}": v["hash"] for k, v in m.get("outputs", {}).items()}
