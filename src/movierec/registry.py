"""Model versions: the one module that writes, lists, loads, promotes and prunes them.

Layout of ``workdir/models`` (the file names are in :mod:`movierec.version_layout`)::

    <version>/                 one trained model, self-contained (FORMAT below)
        model.npz              the served model: refit on every rating and feedback event
        holdout.npz            the measured model: same hyperparameters, training part only
                               (absent with split.method none)
        user_ids.parquet       dense index -> user id
        movies.parquet         dense index -> movie id, title, genres, year
        seen.npz               every rating (any part of the split) and every reviewed movie;
                               popularity over all ratings
        neighbours.parquet     the social neighbourhood the model was trained with
        genre_sentiment.parquet  each user's mean review sentiment per genre
        features.json          the fitted feature transformers as numbers and names
        config.yaml            the resolved config
        meta.json              format, name, creation time (UTC), rows trained on, fit seconds,
                               feedback offset, rating scale, privacy key fingerprint, and the
                               size and SHA-256 of every file written with it ("files")
        metrics.json           holdout metrics of holdout.npz (written by run's gate or evaluate)
        gate.json              the gate's verdict: passed / promoted / rejected, and why
        run.json               the summary of the run that made it
    current                    the name of the serving version (one line)

Everything ``recommend``, ``--explain`` and fold-in read is inside the version folder, so a
version serves the same lists whatever happens to the workdir's artifacts afterwards.

A version is written under ``.tmp-<name>-<pid>``, every file and folder fsynced, then
renamed into place; ``current`` is switched by writing a temporary file and renaming it
over the old one. A pruned version is first renamed to ``.trash-<name>-<pid>`` (gone from
every listing in one step) and then deleted; a later locked command sweeps what a killed
one left of either.

A folder counts as a version only if its name is one this registry gives versions
(``<UTC stamp>-<config hash>``, ``.N`` on a clash), it holds ``model.npz`` and
``meta.json``, and its meta.json names that folder (a ``cp -a`` copy under another name is
not a version). Anything else under ``models/`` is left alone: never listed, never pruned,
never swept. Loading a version checks its files' sizes against meta.json and the loaded
model file's SHA-256 (versions written before the digests were recorded load unchecked).

Why one module of this size: it is the one owner of version folders (the reason it exists);
loading the served bundle is in ``ranking``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from movierec._lazy import pd
from movierec._lazy import sp
import yaml

from movierec.catalog import fsync_path, fsync_tree, umask_mode, write_json
from movierec.errors import ModelError
from movierec.ranking import ModelBundle
from movierec.version_layout import (CONFIG, FEATURES, GATE, GENRE_SENTIMENT, HOLDOUT, META, METRICS, MODEL,
                                     MOVIES, NEIGHBOURS, RUN, SEEN, USER_IDS)

log = logging.getLogger("movierec")

#: Version folder format. 2: served model refit on all data beside holdout.npz; seen items
#: over all ratings and reviews; neighbours, genre sentiment and features kept in the folder.
#: 3: the models inside are of model format 3 (EASE arrays).
FORMAT = 3


#: gate.json statuses; a version without gate.json was made by ``movierec train`` ("trained");
#: one an operator rolled back from is "rolled_back" (the next run must not serve it again)
PASSED, PROMOTED, REJECTED, TRAINED = "passed", "promoted", "rejected", "trained"
ROLLED_BACK = "rolled_back"
GOOD = (PASSED, PROMOTED, TRAINED)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: the names :meth:`Registry.new_name` gives versions: UTC stamp, config hash, ``.N`` on a clash
#: (movierec before format 2 stamped local time, without the Z)
_VERSION = re.compile(r"^\d{8}T\d{6}Z?-[0-9A-Za-z]{1,8}(\.\d+)?$")
#: what a killed writer, pruner or ``current`` switch leaves: ``.tmp-<name>-<pid>``,
#: ``.trash-<version>-<pid>``, ``.current.<pid>`` (anything else is not the registry's to remove)
_TEMP = re.compile(r"^\.tmp-[A-Za-z0-9][A-Za-z0-9._-]*-\d+$")
_TRASH = re.compile(r"^\.trash-(.+)-\d+$")
_CURRENT_TMP = re.compile(r"^\.current\.\d+$")
#: files a version cannot serve without (checked by presence where no sizes were recorded)
_REQUIRED = (USER_IDS, MOVIES, SEEN)


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _leftover(name: str) -> bool:
    """A temporary or trash name of this registry's own making."""
    if _TEMP.match(name) or _CURRENT_TMP.match(name):
        return True
    m = _TRASH.match(name)
    return bool(m and _VERSION.match(m.group(1)))


def utc_now() -> str:
    """ISO 8601 UTC time with microseconds (sorts as text)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass
class ServingData:
    """What a version holds besides its files' layout: gathered by the train stage."""

    model: Any  # MatrixFactorization refit on all data
    holdout: Any | None  # MatrixFactorization of the training part (None: split none)
    user_ids: Any  # user_idx, user_id: a frame, or parts with write_parquet() (engine ray)
    movies: pd.DataFrame  # movie_idx, movie_id, title, genres, year
    ratings: Any  # every rating: user_idx, movie_idx, rating (a frame, or parts with write_seen())
    reviewed: pd.DataFrame | None = None  # user_idx, movie_idx of every review
    neighbours: pd.DataFrame | None = None  # user_idx, neighbour_idx, strength
    genre_sentiment: pd.DataFrame | None = None  # user_idx, genre, mean_sentiment, reviews
    features: dict | None = None  # fuse's transformer description (JSON-ready)
    config: dict = field(default_factory=dict)
    config_hash: str = ""
    meta: dict = field(default_factory=dict)  # extra meta.json entries


@dataclass(frozen=True)
class ModelVersion:
    """One version folder and its meta.json."""

    name: str
    path: Path
    meta: dict

    @property
    def created(self) -> str:
        return str(self.meta.get("created") or "")

    @property
    def format(self) -> Any:
        return self.meta.get("format")

    def read(self, filename: str) -> dict | None:
        """A JSON file of the version, or None when absent or unreadable."""
        p = self.path / filename
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    @property
    def gate(self) -> dict:
        return self.read(GATE) or {}

    @property
    def status(self) -> str:
        return str(self.gate.get("status", TRAINED))

    @property
    def metrics(self) -> dict:
        return self.read(METRICS) or {}

    def has(self, filename: str) -> bool:
        return (self.path / filename).exists()

    @property
    def files(self) -> dict:
        """{filename: {"bytes", "sha256"}} recorded when the version was written ({} before that)."""
        f = self.meta.get("files")
        return {k: v for k, v in f.items() if _NAME.match(str(k)) and isinstance(v, dict)} \
            if isinstance(f, dict) else {}

    def damage(self, full: tuple[str, ...] = ()) -> str | None:
        """What is wrong with the version's files, or None: each recorded file must be there
        with its recorded size, and the files in ``full`` must match their SHA-256 too.
        Without records (versions written before them) the required files must be there."""
        files = self.files
        for filename in files or {f: {} for f in _REQUIRED}:
            p = self.path / filename
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                return f"{filename} is missing"
            except OSError as exc:
                return f"{filename} cannot be read ({exc.strerror})"
            want = files.get(filename, {})
            if "bytes" in want and size != want["bytes"]:
                return f"{filename} has {size} bytes, {want['bytes']} were written (truncated or replaced)"
            if filename in full and want.get("sha256") and file_sha256(p) != want["sha256"]:
                return f"{filename} does not match the SHA-256 recorded when it was written"
        return None

    def verify(self, full: tuple[str, ...] = (MODEL,)) -> None:
        """Raise ModelError naming the damaged file (see :meth:`damage`)."""
        why = self.damage(full)
        if why:
            raise ModelError(f"model version {self.name} is damaged: {why} (in {self.path}); roll back with "
                             "`movierec models rollback` or train a new version")

    def check_format(self) -> None:
        if self.format != FORMAT:
            raise ModelError(
                f"model version {self.name} has format {self.format or 1}, and this movierec reads format "
                f"{FORMAT}: train a new version (`movierec train` or `movierec run`), or roll back to a "
                f"version of format {FORMAT}")


class Registry:
    """The model versions under one ``models/`` folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, cfg) -> "Registry":
        """The registry of a config's workdir."""
        return cls(Path(cfg.workdir) / "models")

    @property
    def current_file(self) -> Path:
        return self.root / "current"

    # ------------------------------------------------------------------ reading
    def _read(self, p: Path) -> ModelVersion | None:
        """The version in folder ``p``, or None when ``p`` is not a version this registry wrote."""
        if not (_VERSION.match(p.name) and p.is_dir() and not p.is_symlink()
                and (p / MODEL).is_file() and (p / META).is_file()):
            return None
        v = self._version(p)
        # meta.json names the folder it was written in: a copy under another name is not a version
        return v if v.meta.get("version") in (None, p.name) else None

    def _version(self, p: Path) -> ModelVersion:
        try:
            meta = json.loads((p / META).read_text())
        except (OSError, ValueError):
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        return ModelVersion(p.name, p, meta)

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first by UTC creation time (then name)."""
        if not self.root.is_dir():
            return []
        vs = [v for v in map(self._read, self.root.iterdir()) if v is not None]
        return sorted(vs, key=lambda v: (v.created, v.name))

    def get(self, name: str) -> ModelVersion:
        """The version called ``name``; a ModelError names what is there otherwise."""
        name = str(name).strip()
        v = self._read(self.root / name) if _NAME.match(name) else None
        if v is None:
            have = ", ".join(v.name for v in self.versions()) or "none"
            raise ModelError(f"no model version {name!r} in {self.root} (have: {have})")
        return v

    def current_name(self) -> str | None:
        """The name ``current`` holds (None when nothing was promoted yet)."""
        try:
            name = self.current_file.read_text().strip()
        except FileNotFoundError:
            return None
        if not _NAME.match(name):
            raise ModelError(f"{self.current_file} holds {name[:80]!r}, which is not a version name inside "
                             f"{self.root}; point it at a version with `movierec models rollback VERSION`")
        return name

    def current(self) -> ModelVersion:
        """The serving version, checked: it exists and its format is readable."""
        name = self.current_name()
        if name is None:
            raise ModelError(f"no trained model in {self.root.parent}; run `movierec train --config ...` first")
        v = self._read(self.root / name)
        if v is None:
            raise ModelError(f"the current model {name} is missing from {self.root} (or incomplete); "
                             "roll back with `movierec models rollback` or train a new one")
        v.check_format()
        return v

    def load(self, name: str | None = None, model_file: str = MODEL) -> "ModelBundle":
        """Load a version (default: the current one) for serving or scoring, its files checked
        first (sizes, and the model file's SHA-256: see :meth:`ModelVersion.damage`)."""
        v = self.current() if name is None else self.get(name)
        v.check_format()
        if not v.has(model_file):
            raise ModelError(f"model version {v.name} has no {model_file}")
        v.verify(full=(model_file,))
        try:
            return ModelBundle.load(v.path, model_file=model_file)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            # a version written before sizes and digests were recorded, damaged since
            raise ModelError(f"model version {v.name} is damaged: {model_file} or a file beside it is unreadable "
                             f"({exc.__class__.__name__}: {exc}); roll back with `movierec models rollback` "
                             "or train a new version") from exc

    # ------------------------------------------------------------------ writing
    def new_name(self, config_hash: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = f"{stamp}-{config_hash[:8]}"
        name, n = base, 1
        while (self.root / name).exists():
            name, n = f"{base}.{n}", n + 1
        return name

    def write(self, data: ServingData) -> ModelVersion:
        """Write a complete version folder atomically; returns it (not yet current)."""
        from movierec._faults import failpoint

        self.root.mkdir(parents=True, exist_ok=True)
        name = self.new_name(data.config_hash)
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            failpoint("write_version")
            meta = self._write_files(tmp, data)
            meta.update({"format": FORMAT, "version": name, "created": utc_now(),
                         "config_hash": data.config_hash,
                         "files": {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                                   for p in sorted(tmp.iterdir()) if p.is_file()}})
            write_json(meta, tmp / META)
            fsync_tree(tmp)
            os.rename(tmp, self.root / name)
            fsync_path(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.get(name)

    @staticmethod
    def _write_seen(folder: Path, r: pd.DataFrame, reviewed: pd.DataFrame | None, n_users: int, n_items: int) -> None:
        """seen.npz: every rating (viewers x movies), the reviewed-not-rated pairs, popularity."""
        rated = sp.csr_matrix((r["rating"].to_numpy(np.float32), (r["user_idx"], r["movie_idx"])),
                              shape=(n_users, n_items))
        rated.sum_duplicates()  # clean keeps one rating per pair
        rated.sort_indices()
        watched = sp.csr_matrix((n_users, n_items), dtype=np.float32)
        if reviewed is not None and len(reviewed):
            w = sp.csr_matrix((np.ones(len(reviewed), np.float32), (reviewed["user_idx"], reviewed["movie_idx"])),
                              shape=(n_users, n_items))
            w.sum_duplicates()
            w.data[:] = 1.0
            pattern = rated.copy()  # by structure: a rating of 0 (0-10 scales) is a rating too
            pattern.data[:] = 1.0
            watched = (w - w.multiply(pattern)).tocsr()  # reviewed, not rated
            watched.eliminate_zeros()
            watched.sort_indices()
        pop = np.bincount(r["movie_idx"], minlength=n_items).astype(np.int64)
        np.savez(folder / SEEN, indptr=rated.indptr, indices=rated.indices, ratings=rated.data,
                 watched_indptr=watched.indptr, watched_indices=watched.indices, popularity=pop)

    @staticmethod
    def _write_files(folder: Path, d: ServingData) -> dict:
        d.model.save(folder / MODEL)
        if d.holdout is not None:
            d.holdout.save(folder / HOLDOUT)
        if hasattr(d.user_ids, "write_parquet"):  # the id table in parts (engine ray): copied, not read whole
            n_users = d.user_ids.write_parquet(folder / USER_IDS)
        else:
            d.user_ids[["user_idx", "user_id"]].to_parquet(folder / USER_IDS, index=False)
            n_users = len(d.user_ids)
        movies = d.movies[["movie_idx", "movie_id", "title", "genres", "year"]]
        movies.to_parquet(folder / MOVIES, index=False)
        n_items = len(movies)
        r = d.ratings
        if hasattr(r, "write_seen"):  # ratings that stay in the cluster's parts (engine ray)
            n_ratings = r.write_seen(folder / SEEN, n_users, n_items, d.reviewed)
        else:
            n_ratings = len(r)
            Registry._write_seen(folder, r, d.reviewed, n_users, n_items)
        nb = d.neighbours if d.neighbours is not None else pd.DataFrame(
            {"user_idx": pd.Series(dtype=np.int32), "neighbour_idx": pd.Series(dtype=np.int32),
             "strength": pd.Series(dtype=np.float32)})
        nb[["user_idx", "neighbour_idx", "strength"]].to_parquet(folder / NEIGHBOURS, index=False)
        gs = d.genre_sentiment if d.genre_sentiment is not None else pd.DataFrame(
            {"user_idx": pd.Series(dtype=np.int32), "genre": pd.Series(dtype=str),
             "mean_sentiment": pd.Series(dtype=np.float32), "reviews": pd.Series(dtype=np.int32)})
        gs.to_parquet(folder / GENRE_SENTIMENT, index=False)
        write_json(d.features or {}, folder / FEATURES)
        (folder / CONFIG).write_text(yaml.safe_dump(d.config, sort_keys=False))
        os.chmod(folder / CONFIG, umask_mode())
        meta = dict(d.meta)
        meta.setdefault("train_ratings", int(n_ratings))
        meta.update({
            "all_ratings": int(n_ratings),
            "fit_seconds": d.model.fit_seconds_,
            "history": {"train_rmse": d.model.history_.train_rmse, "val_rmse": d.model.history_.val_rmse}
            if hasattr(d.model, "history_") else None,
        })
        if d.holdout is not None:
            meta["holdout"] = {
                "train_ratings": int(d.holdout.n_train_), "fit_seconds": d.holdout.fit_seconds_,
                "best_epoch": int(d.holdout.history_.best_epoch),
                "history": {"train_rmse": d.holdout.history_.train_rmse, "val_rmse": d.holdout.history_.val_rmse}}
        return meta

    def write_file(self, name: str, filename: str, obj: dict) -> None:
        """Write one of a version's JSON files (metrics, gate, run) atomically."""
        if filename not in (METRICS, GATE, RUN):
            raise ValueError(f"not a version file: {filename}")
        write_json(obj, self.get(name).path / filename)

    def set_gate(self, name: str, status: str, reasons: list[str], compared_with: str | None, **extra) -> None:
        self.write_file(name, GATE, {"status": status, "reasons": reasons, "compared_with": compared_with,
                                     "at": utc_now(), **extra})

    def promote(self, name: str) -> None:
        """Make ``name`` the serving version (atomic switch of ``current``)."""
        v = self.get(name)
        v.check_format()
        tmp = self.root / f".current.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, (v.name + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.current_file)
        fsync_path(self.root)
        from movierec._faults import failpoint

        failpoint("switched")  # serving, not yet marked promoted: the next run finishes it
        if v.status == PASSED:
            gate = v.gate
            self.set_gate(v.name, PROMOTED, gate.get("reasons", []), gate.get("compared_with"))
        elif v.status == TRAINED:  # `movierec train` (or a rollback to such a version): it served
            self.set_gate(v.name, PROMOTED, ["promoted without a gate (movierec train)"], None)

    def pending(self, latest: str | None) -> ModelVersion | None:
        """``latest`` if it passed the gate but a killed run never promoted it."""
        if not latest or latest == self.current_name():
            return None
        try:
            v = self.get(latest)
        except ModelError:
            return None
        return v if v.status == PASSED and v.format == FORMAT else None

    def _rollback_target(self, v: ModelVersion) -> bool:
        """A version a plain rollback may pick: good, or left only because an operator rolled
        forward from it (it was good then), and its files intact."""
        if v.format != FORMAT:
            return False
        if v.status == ROLLED_BACK:
            g = v.gate
            before = g.get("previous") if isinstance(g.get("previous"), dict) else {}
            if not (g.get("forward") is True and before.get("status", TRAINED) in GOOD):
                return False
        elif v.status not in GOOD:
            return False
        elif v.status == TRAINED and "files" in v.meta:
            # written by this movierec, never gated and never served: the twin a run killed
            # before its gate (or before its manifest) left behind; the next run gates it
            return False
        return v.damage() is None

    def rollback(self, name: str | None = None) -> str:
        """Point ``current`` at ``name`` (default: the newest good version older than current).

        The version left is marked rolled_back (the next nightly run must not serve it again);
        the version that serves gets its status from before it was marked, if it was."""
        cur = self.current_name()
        if name is None:
            vs = self.versions()
            created = {v.name: v.created for v in vs}
            older = [v for v in vs if cur is None or (cur in created and (v.created, v.name) < (created[cur], cur))]
            good = [v for v in older if self._rollback_target(v)]
            if not good:
                raise ModelError(f"no earlier good model version to roll back to (current: {cur})")
            name = good[-1].name
        self.load(name)  # it must load before it serves
        target = self.get(name)
        left = self._read(self.root / cur) if cur and cur != target.name and _NAME.match(cur) else None
        # the version left is marked first, the switch comes last: a rollback killed in between
        # leaves the marked version serving (the next nightly run keeps it; the rollback is
        # re-run), never an unmarked one that the next run would gate and put back
        if left is not None:
            # the version rolled back from: the next nightly run must not put it back
            forward = (target.created, target.name) > (left.created, left.name)
            g = left.gate
            # what it was before: its verdict (None: made by `movierec train`); a mark keeps the first
            before = {"previous": g or None} if left.status != ROLLED_BACK else \
                {k: g[k] for k in ("previous",) if k in g}
            self.set_gate(left.name, ROLLED_BACK,
                          [f"rolled {'forward' if forward else 'back'} to {target.name} by an operator"],
                          target.name, forward=forward, **before)
        if target.status == ROLLED_BACK:  # it serves again: the mark goes
            self._unmark(target, cur)
        self.promote(target.name)
        log.info("models: current is now %s (was %s)", target.name, cur)
        return target.name

    def _unmark(self, v: ModelVersion, cur: str | None) -> None:
        """Give a rolled-back version the status it had before it was marked."""
        g = v.gate
        if isinstance(g.get("previous"), dict) and g["previous"].get("status") not in (None, ROLLED_BACK):
            self.write_file(v.name, GATE, g["previous"])
        elif "previous" in g and g["previous"] is None:  # made by `movierec train`: no gate verdict
            self.set_gate(v.name, TRAINED, [f"served again: an operator rolled to it from {cur}"], cur)
        else:  # marked before the previous status was kept
            self.set_gate(v.name, PROMOTED, [f"served again: an operator rolled to it from {cur}"], cur)

    def apply_retention(self, keep: int) -> list[str]:
        """Delete versions beyond the newest ``keep`` (by creation time), never the current one
        and never a folder that is not a version.

        Each is renamed to ``.trash-<name>-<pid>`` first (out of every listing at once), then
        deleted: a kill in between leaves only trash, which the next locked command sweeps."""
        from movierec._faults import failpoint

        self._sweep(trash_only=True)
        vs = self.versions()
        cur = self.current_name()
        keep_set = {v.name for v in vs[-keep:]} if keep > 0 else set()
        if cur:
            keep_set.add(cur)
        removed, trash = [], []
        for v in vs:
            if v.name not in keep_set:
                t = self.root / f".trash-{v.name}-{os.getpid()}"
                try:
                    os.rename(v.path, t)
                except OSError as exc:
                    log.warning("models: could not remove old version %s (%s)", v.name, exc)
                    continue
                removed.append(v.name)
                trash.append(t)
        if removed:
            fsync_path(self.root)
            failpoint("prune")
            for t in trash:
                shutil.rmtree(t, ignore_errors=True)
            log.info("models: removed %d old versions (refresh.keep=%d)", len(removed), keep)
        return removed

    def _sweep(self, trash_only: bool = False) -> int:
        n = 0
        if not self.root.is_dir():
            return n
        for p in self.root.iterdir():
            if not _leftover(p.name) or (trash_only and not _TRASH.match(p.name)):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        return n

    def cleanup_temp(self) -> int:
        """Remove what a killed writer, pruner or switch left (call under the workdir lock):
        only names of the registry's own making (``.tmp-<name>-<pid>``, ``.trash-<version>-<pid>``,
        ``.current.<pid>``)."""
        return self._sweep()

    def summary(self, name: str, k: int) -> dict:
        """A version's row for ``models list`` and ``status``."""
        v = self.get(name)
        m = v.metrics
        out = {"version": v.name, "created": v.created or None, "status": v.status, "format": v.format or 1,
               "train_ratings": v.meta.get("train_ratings")}
        why = v.damage()  # sizes only: cheap enough for every row
        if why:
            out["damaged"] = why
            out["error"] = f"model version {v.name} is damaged: {why}"
        for key in ("rmse", "mae", f"ndcg@{k}", "coverage"):
            if isinstance(m.get(key), (int, float)):
                out[key] = m[key]
        return out
