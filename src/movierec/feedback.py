"""Feedback between refreshes: an append-only event log in the workdir.

``movierec feedback`` appends one JSON line per event to ``feedback/events.jsonl``
(``O_APPEND`` plus an exclusive lock on the log for the write, so concurrent writers never
interleave); the next ``run`` reads the whole log and folds it into the input tables. The
log is never consumed or truncated, so no event is lost when a run fails.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from movierec._lazy import pd

log = logging.getLogger(__name__)


def events_path(workdir: str | Path) -> Path:
    return Path(workdir) / "feedback" / "events.jsonl"


def _open_log(p: Path) -> int | None:
    """A read-only descriptor of the log, opened with O_NOFOLLOW and O_CLOEXEC: a log that is a
    symbolic link, a hard link or not a regular file is refused (a read would fold another
    file into the inputs; appends go through :func:`append_line`, which refuses the same);
    None when there is no log.

    Raises:
        DataError: naming the path.
    """
    from movierec.catalog import open_regular
    from movierec.errors import DataError

    try:
        return open_regular(p, os.O_RDONLY, "feedback: the event log", DataError,
                            "; replace it with the log itself (a regular file) or remove it")
    except FileNotFoundError:
        return None


def _read_log(p: Path) -> bytes | None:
    """The whole log (None: no log), through :func:`_open_log`."""
    fd = _open_log(p)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def known_catalogue(cfg) -> tuple[set[str] | None, tuple[float, float] | None]:
    """The movies and the rating scale a feedback event is checked against: the serving
    version's, else the workdir's last ingest; (None, None) before anything was ingested.
    ``data.rating_min``/``rating_max`` override the scale."""
    from movierec.catalog import Catalog
    from movierec.errors import ModelError
    from movierec.registry import MOVIES, Registry

    movies, scale = None, None
    try:
        v = Registry.of(cfg).current()
        import pyarrow.parquet as pq  # one column of the version's catalogue: no pandas for one event

        movies = {str(m) for m in pq.ParquetFile(v.path / MOVIES).read(columns=["movie_id"]).column(0).to_pylist()}
        sc = v.meta.get("rating_scale") or {}
        scale = (sc["min"], sc["max"]) if "min" in sc else None
    except (ModelError, OSError, KeyError):
        cat = Catalog(Path(cfg.workdir))
        if cat.exists("movie_ids"):
            movies = set(cat.read("movie_ids")["movie_id"].astype(str))
        sc = ((cat.read_manifest("ingest") or {}).get("stats") or {}).get("rating_scale") or {}
        scale = (sc["min"], sc["max"]) if "min" in sc else None
    return movies, rating_scale(cfg, scale)


def rating_scale(cfg, scale: tuple[float, float] | None) -> tuple[float, float] | None:
    """The scale feedback ratings are checked against: ``data.rating_min``/``rating_max`` where
    set, else the recorded scale's ends (None: no scale known)."""
    lo = cfg.data.rating_min if cfg.data.rating_min is not None else (scale[0] if scale else None)
    hi = cfg.data.rating_max if cfg.data.rating_max is not None else (scale[1] if scale else None)
    return None if lo is None or hi is None else (float(lo), float(hi))


def check_event(movie: str, rating: float | None, movies: set[str] | None,
                scale: tuple[float, float] | None) -> None:
    """Refuse what the next run would quarantine: a movie no input knows (a typo would become
    a recommendable phantom title) and a rating off the scale.

    Raises:
        DataError: naming the movie or the rating and what is allowed.
    """
    from movierec.errors import DataError

    if movies is not None and str(movie).strip() not in movies:
        raise DataError(f"feedback: movie {movie!r} is not in the catalogue (movies.csv and the ratings); "
                        "check the id")
    if rating is not None:
        if not np.isfinite(rating) or (scale is not None and not scale[0] <= rating <= scale[1]):
            where = f" {scale[0]:g}..{scale[1]:g}" if scale else ""
            raise DataError(f"feedback: rating {rating:g} is outside the rating scale{where}")


def append_event(workdir: str | Path, user: str, movie: str, rating: float | None = None,
                 comment: str | None = None, share_with: str | None = None, pseudonymized: bool = False) -> dict:
    event = {"time": time.time(), "user_id": str(user).strip(), "movie_id": str(movie).strip()}
    if pseudonymized:
        event["pseudonymized"] = True
    if rating is not None:
        event["rating"] = float(rating)
    if comment:
        event["comment"] = comment
    if share_with:
        event["share_with"] = str(share_with).strip()
    append_line(events_path(workdir), event, "feedback: the event log", "the event was not recorded")
    return event


def append_line(p: Path, obj: dict, what: str, lost: str, durable: bool = True) -> None:
    """Append ``obj`` as one JSON line to the log ``p`` (created if missing): one whole line or
    nothing, under an exclusive lock (see :func:`_append_whole`). ``durable``: fsync before
    returning (an acknowledged event must survive a crash; an exposure log line need not).

    Raises:
        StorageError: the log cannot be opened or written (names it, and ``lost``).
    """
    from movierec.catalog import open_regular
    from movierec.errors import StorageError

    line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = open_regular(p, os.O_RDWR | os.O_APPEND | os.O_CREAT, what, StorageError,
                          "; replace it with the log itself (a regular file) or remove it")
    except OSError as exc:  # the folder vanished, permissions
        raise StorageError(f"{what}: cannot open {p}: {exc.strerror or exc}; {lost}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _append_whole(fd, line, p, lost, durable)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def record(cfg, user: str, movie: str, rating: float | None = None, comment: str | None = None,
           share_with: str | None = None, catalogue: tuple | None = None, key_checked: bool = False) -> dict:
    """Check one interaction and append it to the log: what ``movierec feedback``, the Python
    API and the service's ``POST /feedback`` all do. ``user``/``share_with`` are the ids as
    given (pseudonymized here when ``privacy.pseudonymize_ids``); ``catalogue``: the
    (movies, scale) of :func:`known_catalogue`, when the caller holds them already;
    ``key_checked``: the caller checked the privacy key against the serving version.

    Raises:
        DataError: nothing to record, an empty id, a movie not in the catalogue, a rating off
            the scale; ConfigError: another privacy key than the serving version's;
            StorageError: the log cannot be written.
    """
    from movierec.errors import DataError, ModelError
    from movierec.privacy import check_key, maybe_pseudonym

    if rating is None and not comment and not share_with:
        raise DataError("feedback: give at least one of rating, comment, share_with")
    if not str(user).strip() or not str(movie).strip():
        raise DataError("feedback: the user and the movie must not be empty")
    check_event(movie, rating, *(catalogue or known_catalogue(cfg)))
    if not key_checked:
        from movierec.registry import Registry

        try:
            serving = Registry.of(cfg).current()
        except ModelError:  # nothing trained yet: nothing to check the key against
            serving = None
        if serving is not None:  # an id hashed with another key would be an event of nobody
            check_key(serving.meta.get("privacy_key_fingerprint"), cfg.privacy, serving.name)
    return append_event(cfg.workdir, maybe_pseudonym(user, cfg.privacy), movie, rating, comment,
                        maybe_pseudonym(share_with, cfg.privacy) if share_with else None,
                        pseudonymized=cfg.privacy.pseudonymize_ids)


def _append_whole(fd: int, line: bytes, p: Path, lost: str = "the event was not recorded",
                  durable: bool = True) -> None:
    """Append ``line`` as one whole line or not at all (the caller holds the lock).

    A log that ends inside a line (a writer killed mid-write, or an older torn write) gets a
    line break first, so the fragment stays a line of its own (skipped with a warning by the
    reader) and this event is not glued to it. A short or failed write (disk full) is undone
    by truncating the log back to where it was, and raised: an event is acknowledged only
    once it is on disk whole."""
    from movierec.errors import StorageError

    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        line = b"\n" + line
    try:
        done = 0
        while done < len(line):
            n = os.write(fd, line[done:])
            if n <= 0:
                raise OSError(28, "no space left on device (short write)")
            done += n
        if durable:
            os.fsync(fd)
    except OSError as exc:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError:
            pass
        raise StorageError(f"cannot append to {p}: {exc.strerror or exc}; {lost} "
                           "(free some space and send it again)") from exc


def _parse(blob: bytes, p: Path, first_line: int = 1) -> list[dict]:
    rows = []
    for n, line in enumerate(blob.split(b"\n"), first_line):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("feedback: %s line %d is not a complete event; skipped", p, n)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def events_frame(rows: list[dict]) -> pd.DataFrame | None:
    """Event dicts as a frame with the rating, comment and share columns (None: no events)."""
    if not rows:
        return None
    df = pd.DataFrame(rows)
    for c in ("rating", "comment", "share_with"):
        if c not in df.columns:
            df[c] = np.nan
    return df


def snapshot(workdir: str | Path) -> tuple[pd.DataFrame | None, dict]:
    """All complete events so far, and where the log ends: ``offset`` (bytes up to the last
    complete line) and the time of the last event. A model version records the state of
    the events it was trained on, so that later events are known as new. A line left
    incomplete by a crash is skipped with a warning."""
    p = events_path(workdir)
    blob = _read_log(p)
    if blob is None:
        return None, {"offset": 0, "last_time": None}
    end = blob.rfind(b"\n") + 1
    rows = _parse(blob[:end], p)
    times = [r.get("time") for r in rows if isinstance(r.get("time"), (int, float))]
    return events_frame(rows), {"offset": end, "last_time": max(times) if times else None, "head": _head(blob)}


def _head(blob: bytes) -> str:
    """A fingerprint of the log's first line: a log replaced since (rotated) has another one."""
    import hashlib

    return hashlib.sha256(blob[: blob.find(b"\n") + 1 if b"\n" in blob else 0]).hexdigest()[:16]


def read_events(workdir: str | Path) -> pd.DataFrame | None:
    """All complete events so far (see :func:`snapshot`)."""
    return snapshot(workdir)[0]


def read_events_since(workdir: str | Path, state: dict | None) -> pd.DataFrame | None:
    """Events recorded after ``state`` (see :func:`log_state`): read from its byte offset, so
    the cost is that of the new events only. A log that was replaced (shorter than the
    offset) is read whole and filtered by the event time instead."""
    p = events_path(workdir)
    fd = _open_log(p)
    if fd is None:
        return None
    state = state or {}
    offset = int(state.get("offset") or 0)
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        first = fh.readline()
        replaced = state.get("head") is not None and offset > 0 and _head(first) != state["head"]
        fh.seek(min(offset, size))
        blob = b"" if offset > size or replaced else fh.read()
    if offset > size or replaced:  # rotated or replaced: fall back to time
        df = read_events(workdir)
        last = state.get("last_time")
        if df is None or last is None:
            return df
        t = pd.to_numeric(df["time"], errors="coerce")
        return events_frame(df[t > float(last)].to_dict("records"))
    return events_frame(_parse(blob[: blob.rfind(b"\n") + 1], p))


def fold_events(tables: dict[str, pd.DataFrame], events: pd.DataFrame, share_rating: float,
                rated_pairs=None, append_ratings=None) -> dict[str, int]:
    """Fold feedback events into ingested tables (in place); returns counts per kind.

    Ratings join the ratings (with the event time, so the latest wins in clean);
    comments become reviews; a share counts as a positive rating (``share_rating``) of
    the movie unless the user rated it, and strengthens the tie between the two users.

    For ratings not in memory (Ray's parts): ``rated_pairs(users, movies)`` says which
    (user, movie) pairs the ratings hold (a boolean array), ``append_ratings(frame)`` adds
    the new ratings after the others.
    """
    counts = {"ratings": 0, "comments": 0, "shares": 0}
    ev = events.copy()
    ev["user_id"] = ev["user_id"].astype(str).str.strip()
    ev["movie_id"] = ev["movie_id"].astype(str).str.strip()
    ev["timestamp"] = pd.to_numeric(ev["time"], errors="coerce")
    ev["rating"] = pd.to_numeric(ev["rating"], errors="coerce")

    rated = ev[ev["rating"].notna()]
    shared = ev[ev["share_with"].notna() & (ev["share_with"].astype(str) != "")]
    new_r = [rated[["user_id", "movie_id", "rating", "timestamp"]]]
    if len(shared):
        have = set(zip(rated.user_id, rated.movie_id))
        if rated_pairs is None:
            have |= set(zip(tables["ratings"]["user_id"], tables["ratings"]["movie_id"]))
            known = np.zeros(len(shared), bool)
        else:
            known = np.asarray(rated_pairs(shared.user_id.to_numpy(object), shared.movie_id.to_numpy(object)), bool)
        pos = shared[~known & np.array([(u, m) not in have for u, m in zip(shared.user_id, shared.movie_id)], bool)]
        pos = pos.drop_duplicates(["user_id", "movie_id"])
        new_r.append(pos.assign(rating=share_rating)[["user_id", "movie_id", "rating", "timestamp"]])
    add = pd.concat(new_r, ignore_index=True)
    if len(add) and append_ratings is not None:
        append_ratings(add.reset_index(drop=True))
        counts["ratings"] = len(rated)
    elif len(add):
        r = tables["ratings"]
        if "timestamp" not in r.columns:
            r = r.assign(timestamp=np.nan)
        tables["ratings"] = pd.concat([r, add], ignore_index=True)
        counts["ratings"] = len(rated)
    com = ev[ev["comment"].notna() & (ev["comment"].astype(str).str.strip() != "")]
    if len(com):
        from movierec.data.readers import normalize_text

        rv = pd.DataFrame({"user_id": com.user_id, "movie_id": com.movie_id,
                           "text": com["comment"].astype(str).map(normalize_text),
                           "rating": com["rating"], "timestamp": com["timestamp"]})
        old = tables.get("reviews")
        tables["reviews"] = rv if old is None else pd.concat([old, rv], ignore_index=True)
        counts["comments"] = len(rv)
    if len(shared):
        ties = shared.groupby(["user_id", "share_with"]).size().reset_index(name="n")
        social = tables.get("social")
        if social is None:
            social = pd.DataFrame({"user_id": pd.Series(dtype=str), "friend_id": pd.Series(dtype=str),
                                   "weight": pd.Series(dtype=float)})
        if "weight" not in social.columns:
            social = social.assign(weight=1.0)
        social = social.copy()
        top = float(social["weight"].max()) if len(social) and social["weight"].notna().any() else 1.0
        for u, f, n in ties.itertuples(index=False):
            if u == f:
                continue
            m = ((social.user_id == u) & (social.friend_id == f)) | ((social.user_id == f) & (social.friend_id == u))
            if m.any():
                social.loc[m, "weight"] = np.minimum(social.loc[m, "weight"].fillna(top) + 0.1 * top * n, top)
            else:
                social = pd.concat([social, pd.DataFrame({"user_id": [u], "friend_id": [f],
                                                          "weight": [min(0.5 * top + 0.1 * top * (n - 1), top)]})],
                                   ignore_index=True)
        tables["social"] = social
        counts["shares"] = int(ties["n"].sum())
    return counts


class FeedbackTail:
    """The events recorded since a model version was trained, kept up to date for a process
    that stays running (the service): each :meth:`refresh` reads only the bytes appended since
    the last one (a stat when nothing was), so a feedback event is in the viewer's next list
    at once. A log replaced since (rotated, shorter) is read again as
    :func:`read_events_since` does. Thread-safe."""

    def __init__(self, workdir: str | Path, state: dict | None) -> None:
        import threading

        self.workdir, self.state = Path(workdir), dict(state or {})
        self._lock = threading.Lock()
        self._by_user: dict[str, list[dict]] = {}
        self._count = 0
        self._offset: int | None = None  # None: not read yet
        self._size = -1
        self._ino: int | None = None
        self.last_time: float | None = None

    def _reset(self, p: Path) -> None:
        """Everything since the version, as :func:`read_events_since` selects it (read from the
        version's byte offset: the cost of the new events only, unless the log was replaced),
        and where to read on from."""
        self._by_user, self._count, self.last_time = {}, 0, None
        self._offset = self._size = 0
        fd = _open_log(p)
        if fd is None:
            return
        offset = int(self.state.get("offset") or 0)
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            first = fh.readline()
            replaced = offset > size or (self.state.get("head") is not None and offset > 0
                                         and _head(first) != self.state["head"])
            start = 0 if replaced else offset
            fh.seek(start)
            blob = fh.read()
        end = blob.rfind(b"\n") + 1
        rows = _parse(blob[:end], p)
        last = self.state.get("last_time")
        if replaced and last is not None:
            rows = [r for r in rows if isinstance(r.get("time"), (int, float)) and r["time"] > float(last)]
        self._add(rows)
        self._offset, self._size = start + end, start + len(blob)

    def _add(self, rows: list[dict]) -> None:
        for r in rows:
            self._by_user.setdefault(str(r.get("user_id", "")).strip(), []).append(r)
            t = r.get("time")
            if isinstance(t, (int, float)):
                self.last_time = t if self.last_time is None else max(self.last_time, t)
        self._count += len(rows)

    def refresh(self) -> None:
        p = events_path(self.workdir)
        try:
            st = os.stat(p)
            size, ino = st.st_size, st.st_ino
        except FileNotFoundError:
            size, ino = 0, None
        with self._lock:
            if size == self._size and ino == self._ino:
                return
            if self._offset is None or size < self._size or ino != self._ino:  # first read, or replaced
                self._reset(p)
                self._ino = ino
                return
            fd = _open_log(p)
            if fd is None:
                return
            with os.fdopen(fd, "rb") as fh:
                fh.seek(self._offset)
                blob = fh.read()
            end = blob.rfind(b"\n") + 1
            self._add(_parse(blob[:end], p))
            self._offset += end
            self._size = self._offset + (len(blob) - end)

    def rows(self, user: str) -> list[dict]:
        """The events of ``user`` (a model id: pseudonymized where ids are) since the version,
        as the log's dicts, in log order."""
        self.refresh()
        with self._lock:
            return list(self._by_user.get(str(user).strip(), ()))

    def events(self, user: str) -> pd.DataFrame | None:
        """:meth:`rows` as a frame (None: no events)."""
        return events_frame(self.rows(user))

    @property
    def count(self) -> int:
        """How many events were recorded since the version was trained."""
        return self._count
