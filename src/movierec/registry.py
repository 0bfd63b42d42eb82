"""Model versions: the one module that writes, lists, loads, promotes and prunes them.

Layout of ``workdir/models``::

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
        meta.json              format, creation time (UTC), rows trained on, fit seconds,
                               feedback offset, rating scale, privacy key fingerprint
        metrics.json           holdout metrics of holdout.npz (written by run's gate or evaluate)
        gate.json              the gate's verdict: passed / promoted / rejected, and why
        run.json               the summary of the run that made it
    current                    the name of the serving version (one line)

Everything ``recommend``, ``--explain`` and fold-in read is inside the version folder, so a
version serves the same lists whatever happens to the workdir's artifacts afterwards.

A version is written under ``.tmp-<name>-<pid>``, every file and folder fsynced, then
renamed into place; ``current`` is switched by writing a temporary file and renaming it
over the old one. A folder counts as a version only if it holds ``model.npz`` and
``meta.json``; anything else under ``models/`` is left alone (never listed, never pruned).

Why one module of this size: it is the one owner of version folders (the reason it exists);
loading the served bundle is in ``ranking``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from movierec.catalog import fsync_path, fsync_tree, umask_mode, write_json
from movierec.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from movierec.ranking import ModelBundle

log = logging.getLogger("movierec")

#: Version folder format. 2: served model refit on all data beside holdout.npz; seen items
#: over all ratings and reviews; neighbours, genre sentiment and features kept in the folder.
#: 3: the models inside are of model format 3 (EASE arrays).
FORMAT = 3

MODEL, HOLDOUT, META = "model.npz", "holdout.npz", "meta.json"
USER_IDS, MOVIES, SEEN = "user_ids.parquet", "movies.parquet", "seen.npz"
NEIGHBOURS, GENRE_SENTIMENT, FEATURES = "neighbours.parquet", "genre_sentiment.parquet", "features.json"
METRICS, GATE, RUN, CONFIG = "metrics.json", "gate.json", "run.json", "config.yaml"

#: gate.json statuses; a version without gate.json was made by ``movierec train`` ("trained");
#: one an operator rolled back from is "rolled_back" (the next run must not serve it again)
PASSED, PROMOTED, REJECTED, TRAINED = "passed", "promoted", "rejected", "trained"
ROLLED_BACK = "rolled_back"
GOOD = (PASSED, PROMOTED, TRAINED)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def utc_now() -> str:
    """ISO 8601 UTC time with microseconds (sorts as text)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass
class ServingData:
    """What a version holds besides its files' layout: gathered by the train stage."""

    model: Any  # MatrixFactorization refit on all data
    holdout: Any | None  # MatrixFactorization of the training part (None: split none)
    user_ids: pd.DataFrame  # user_idx, user_id
    movies: pd.DataFrame  # movie_idx, movie_id, title, genres, year
    ratings: pd.DataFrame  # every rating: user_idx, movie_idx, rating
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
    def _is_version(self, p: Path) -> bool:
        return (bool(_NAME.match(p.name)) and p.is_dir() and not p.is_symlink()
                and (p / MODEL).is_file() and (p / META).is_file())

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
        vs = [self._version(p) for p in self.root.iterdir() if self._is_version(p)]
        return sorted(vs, key=lambda v: (v.created, v.name))

    def get(self, name: str) -> ModelVersion:
        """The version called ``name``; a ModelError names what is there otherwise."""
        name = str(name).strip()
        p = self.root / name
        if not _NAME.match(name) or not self._is_version(p):
            have = ", ".join(v.name for v in self.versions()) or "none"
            raise ModelError(f"no model version {name!r} in {self.root} (have: {have})")
        return self._version(p)

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
        if not self._is_version(self.root / name):
            raise ModelError(f"the current model {name} is missing from {self.root} (or incomplete); "
                             "roll back with `movierec models rollback` or train a new one")
        v = self._version(self.root / name)
        v.check_format()
        return v

    def load(self, name: str | None = None, model_file: str = MODEL) -> "ModelBundle":
        """Load a version (default: the current one) for serving or scoring."""
        from movierec.ranking import ModelBundle

        v = self.current() if name is None else self.get(name)
        v.check_format()
        if not v.has(model_file):
            raise ModelError(f"model version {v.name} has no {model_file}")
        return ModelBundle.load(v.path, model_file=model_file)

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
                         "config_hash": data.config_hash})
            write_json(meta, tmp / META)
            fsync_tree(tmp)
            os.rename(tmp, self.root / name)
            fsync_path(self.root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self.get(name)

    @staticmethod
    def _write_files(folder: Path, d: ServingData) -> dict:
        d.model.save(folder / MODEL)
        if d.holdout is not None:
            d.holdout.save(folder / HOLDOUT)
        d.user_ids[["user_idx", "user_id"]].to_parquet(folder / USER_IDS, index=False)
        movies = d.movies[["movie_idx", "movie_id", "title", "genres", "year"]]
        movies.to_parquet(folder / MOVIES, index=False)
        n_users, n_items = len(d.user_ids), len(movies)
        r = d.ratings
        rated = sp.csr_matrix((r["rating"].to_numpy(np.float32), (r["user_idx"], r["movie_idx"])),
                              shape=(n_users, n_items))
        rated.sum_duplicates()  # clean keeps one rating per pair
        rated.sort_indices()
        watched = sp.csr_matrix((n_users, n_items), dtype=np.float32)
        if d.reviewed is not None and len(d.reviewed):
            w = sp.csr_matrix((np.ones(len(d.reviewed), np.float32), (d.reviewed["user_idx"], d.reviewed["movie_idx"])),
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
        meta.setdefault("train_ratings", int(len(r)))
        meta.update({
            "all_ratings": int(len(r)),
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

    def set_gate(self, name: str, status: str, reasons: list[str], compared_with: str | None) -> None:
        self.write_file(name, GATE, {"status": status, "reasons": reasons, "compared_with": compared_with,
                                     "at": utc_now()})

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
        if v.status == PASSED:
            gate = v.gate
            self.set_gate(v.name, PROMOTED, gate.get("reasons", []), gate.get("compared_with"))

    def pending(self, latest: str | None) -> ModelVersion | None:
        """``latest`` if it passed the gate but a killed run never promoted it."""
        if not latest or latest == self.current_name():
            return None
        try:
            v = self.get(latest)
        except ModelError:
            return None
        return v if v.status == PASSED and v.format == FORMAT else None

    def rollback(self, name: str | None = None) -> str:
        """Point ``current`` at ``name`` (default: the newest good version older than current)."""
        cur = self.current_name()
        if name is None:
            vs = self.versions()
            created = {v.name: v.created for v in vs}
            older = [v for v in vs if cur is None or (cur in created and (v.created, v.name) < (created[cur], cur))]
            good = [v for v in older if v.status in GOOD and v.format == FORMAT]
            if not good:
                raise ModelError(f"no earlier good model version to roll back to (current: {cur})")
            name = good[-1].name
        self.load(name)  # it must load before it serves
        self.promote(name)
        if cur and cur != name and self._is_version(self.root / cur):
            # the version rolled back from: the next nightly run must not put it back
            self.set_gate(cur, ROLLED_BACK, [f"rolled back to {name} by an operator"], name)
        log.info("models: current is now %s (was %s)", name, cur)
        return name

    def apply_retention(self, keep: int) -> list[str]:
        """Delete versions beyond the newest ``keep`` (by creation time), never the current one
        and never a folder that is not a version."""
        vs = self.versions()
        cur = self.current_name()
        keep_set = {v.name for v in vs[-keep:]} if keep > 0 else set()
        if cur:
            keep_set.add(cur)
        removed = []
        for v in vs:
            if v.name not in keep_set:
                shutil.rmtree(v.path, ignore_errors=True)
                removed.append(v.name)
        if removed:
            fsync_path(self.root)
            log.info("models: removed %d old versions (refresh.keep=%d)", len(removed), keep)
        return removed

    def cleanup_temp(self) -> int:
        """Remove what a killed writer left (call under the workdir lock)."""
        n = 0
        if self.root.is_dir():
            for pat in (".tmp-*", ".current.*"):
                for p in self.root.glob(pat):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    n += 1
        return n

    def summary(self, name: str, k: int) -> dict:
        """A version's row for ``models list`` and ``status``."""
        v = self.get(name)
        m = v.metrics
        out = {"version": v.name, "created": v.created or None, "status": v.status, "format": v.format or 1,
               "train_ratings": v.meta.get("train_ratings")}
        for key in ("rmse", "mae", f"ndcg@{k}", "coverage"):
            if isinstance(m.get(key), (int, float)):
                out[key] = m[key]
        return out
