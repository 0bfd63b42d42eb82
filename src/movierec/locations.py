"""Where an input lies: a local path, or a URL read through pyarrow's filesystems.

``data.dir``, ``split.train`` and ``split.test`` may name an object store or a distributed
filesystem instead of a local folder: ``s3://bucket/exports/2026-12-06``,
``gs://bucket/ratings``, ``hdfs://namenode:8020/ratings``, ``file:///mnt/exports``. pyarrow
opens them (:meth:`pyarrow.fs.FileSystem.from_uri`), with its own credentials chain (AWS
environment variables and profiles, Google application credentials) and the options it
reads from the URL's query string (``s3://bucket/x?region=eu-west-1&endpoint_override=...``).

A :class:`Remote` answers what ingest asks of a :class:`~pathlib.Path` (``exists``,
``is_dir``, ``name``, ``/``), lists part files, and is read by :meth:`Remote.fetched`: one
file copied to a private temporary file, then validated by the same reader as a local one
(so a bad row is named by the URL of its part and its row number). With ``engine.kind: ray``
each part is fetched and read by a Ray worker, not by the driver.

A remote file is identified by its path, size and modification time (not its bytes: hashing
a bucket of exports would mean reading all of it on every run). pyarrow is imported only
when a URL is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Iterator

from movierec.errors import DataError

#: ``scheme://``: two letters or more, so a Windows drive (``C:\\``, ``c:/``) is never a URL
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
#: query options that are secrets: shown as ``***`` in every message
_SECRET = ("secret", "key", "token", "password", "credential")
#: bytes per read when a remote file is copied
CHUNK = 8 << 20


def is_url(value) -> bool:
    """Whether ``value`` (a string or a path) names a URL (``s3://...``, ``file:///...``)."""
    return isinstance(value, (str, Remote)) and bool(_URL.match(str(value) if isinstance(value, str) else value.url))


def location(value: "str | Path | Remote") -> "Path | Remote":
    """``value`` as a :class:`Remote` when it is a URL, else as a :class:`~pathlib.Path`."""
    if isinstance(value, Remote):
        return value
    return Remote(value) if is_url(value) else Path(value)


def _cause(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400] or type(exc).__name__


class Remote:
    """A file or folder at a URL (see the module's note)."""

    __slots__ = ("url", "_fs", "_path", "_info")

    def __init__(self, url: str, _fs=None, _path: str | None = None) -> None:
        self.url = str(url)
        self._fs, self._path = _fs, _path
        self._info = None  # the FileInfo a folder's listing gave (one request for every part)

    # ------------------------------------------------------------------ naming
    @property
    def _split(self) -> tuple[str, str]:
        base, sep, query = self.url.partition("?")
        return base, query

    @property
    def name(self) -> str:
        return self._split[0].rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def __truediv__(self, other: str) -> "Remote":
        base, query = self._split
        url = f"{base.rstrip('/')}/{other}" + (f"?{query}" if query else "")
        path = f"{self._path.rstrip('/')}/{other}" if self._path is not None else None
        return Remote(url, self._fs, path)

    def __str__(self) -> str:
        """The URL, its secret query options (``secret_key=...``) masked."""
        base, query = self._split
        if not query:
            return base
        from urllib.parse import parse_qsl, urlencode

        pairs = [(k, "***" if any(s in k.lower() for s in _SECRET) else v)
                 for k, v in parse_qsl(query, keep_blank_values=True)]
        return f"{base}?{urlencode(pairs, safe='*:/')}"

    def __repr__(self) -> str:
        return f"Remote({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Remote) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def relative_to(self, folder: "Remote") -> str:
        """This file's path inside ``folder`` (``date=2/part-2.csv``)."""
        return self.path[len(folder.path.rstrip("/")):].lstrip("/")

    # ------------------------------------------------------------------ the filesystem
    @property
    def fs(self):
        if self._fs is None:
            self._resolve()
        return self._fs

    @property
    def path(self) -> str:
        if self._path is None:
            self._resolve()
        return self._path

    def _resolve(self) -> None:
        try:
            import pyarrow.fs as pafs

            self._fs, self._path = pafs.FileSystem.from_uri(self.url)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ValueError, OSError, ArrowInvalid...
            raise DataError(f"{self}: cannot open this location: {_cause(exc)}") from exc

    def info(self):
        """pyarrow's FileInfo of this location (a DataError naming the URL if the store
        cannot be asked: no credentials, no such bucket, a network error)."""
        try:
            return self.fs.get_file_info(self.path)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{self}: cannot read this location: {_cause(exc)}") from exc

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self.info().type == pafs.FileType.File

    def files(self) -> list["Remote"]:
        """Every file under this folder (recursively), with its size and time known."""
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{self}: cannot list this folder: {_cause(exc)}") from exc
        base = self.path.rstrip("/")
        out = []
        for i in infos:
            if i.type == pafs.FileType.File:
                out.append(self / i.path[len(base):].lstrip("/"))
                out[-1]._info = i
        return out

    def fingerprint(self) -> str:
        """What identifies this file's content: its size and modification time."""
        import pyarrow.fs as pafs

        i = self._info or self.info()
        if i.type == pafs.FileType.NotFound:
            return "absent"
        mtime = i.mtime_ns if i.mtime_ns is not None else ""
        return hashlib.sha256(f"{i.size}\0{mtime}".encode()).hexdigest()[:16]

    @contextlib.contextmanager
    def fetched(self) -> Iterator[Path]:
        """This file copied to a private temporary folder (under its own name, so its suffix
        is kept), removed at the end of the block."""
        import shutil
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="movierec-fetch-"))
        local = tmp / (self.name or "part")
        try:
            try:
                with self.fs.open_input_stream(self.path) as src, open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            except DataError:
                raise
            except FileNotFoundError as exc:
                raise DataError(f"{self}: file not found") from exc
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"{self}: cannot read this file: {_cause(exc)}") from exc
            yield local
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def read_with(self, reader, *args, **kw):
        """``reader(local_copy, *args, **kw)``, with every DataError naming this URL (not the
        temporary copy) and a result's ``path`` set to this location."""
        with self.fetched() as local:
            try:
                out = reader(local, *args, **kw)
            except DataError as exc:
                raise DataError(str(exc).replace(str(local), str(self))) from None
        if hasattr(out, "path"):
            out.path = self
        return out
