"""The stage graph: staleness from manifests, running stages, training, evaluating, locking.

Stages in order: ingest → clean → sentiment → social → fuse → train. A stage is *fresh*
when its manifest records the same input hashes and the same config hash as now and its
outputs exist; :func:`ensure` runs the stale ones (and says which it skips).

Why one module of this size: the stage table, staleness and the training of a fold share the
catalogue and the manifests; the stages' own work is in ``movierec.stages``, versions in
``registry``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import pandas as pd
from movierec._lazy import sp
from movierec.catalog import Catalog, atomic_path
from movierec.config import Config
from movierec.errors import LockError, ModelError, StorageError

log = logging.getLogger("movierec")

RAW_NAMES = {"ratings": "ratings_raw", "test": "test_raw", "users": "users_raw", "movies": "movies_raw",
             "reviews": "reviews_raw", "social": "social_raw"}
CLEAN_NAMES = {"ratings": "ratings_clean", "users": "users_clean", "movies": "movies_clean",
               "reviews": "reviews_clean", "social": "social_clean", "user_ids": "user_ids", "movie_ids": "movie_ids"}


class Stage(NamedTuple):
    """One stage, declared once (the table is :data:`STAGE_TABLE`, after the runners).

    ``config``: the config sections (``"model"``) or fields (``"split.fold"``) that decide the
    stage's outputs: their values are its config hash, so changing one makes it stale.
    ``reads``: what it may read besides without changing its outputs (where the input files
    lie, ``"*"``: everything, for the train stage, which stores the whole config in the model
    version). A stage runs on a :class:`ConfigView` that refuses anything else.
    """
    name: str
    run: Callable[[Config, Catalog], tuple[dict, dict]]
    upstream: tuple[str, ...]
    outputs: tuple[str, ...]
    config: tuple[str, ...]
    reads: tuple[str, ...] = ()


class ConfigView:
    """A :class:`Config` that lets a stage read only what its :class:`Stage` declares."""

    def __init__(self, cfg: Config, stage: Stage) -> None:
        self._cfg, self._stage = cfg, stage
        allowed = stage.config + stage.reads
        self._all = "*" in allowed
        self._sections = {a for a in allowed if "." not in a}
        self._fields: dict[str, set[str]] = {}
        for a in allowed:
            if "." in a:
                sec, field = a.split(".", 1)
                self._fields.setdefault(sec, set()).add(field)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "workdir" or self._all or name in self._sections:
            return getattr(self._cfg, name)
        if name == "data_path" and ("data" in self._sections or "data" in self._fields):
            return self._cfg.data_path
        if name in self._fields:
            return _SectionView(getattr(self._cfg, name), name, self._fields[name], self._stage.name)
        raise AttributeError(f"stage {self._stage.name!r} reads config '{name}', which its Stage does not declare")


class _SectionView:
    def __init__(self, section: Any, name: str, fields: set[str], stage: str) -> None:
        self._section, self._name, self._fields, self._stage = section, name, fields, stage

    def __getattr__(self, field: str) -> Any:
        if field.startswith("_"):
            raise AttributeError(field)
        if field in self._fields:
            return getattr(self._section, field)
        raise AttributeError(f"stage {self._stage!r} reads config '{self._name}.{field}', which its Stage does "
                             "not declare")


# ----------------------------------------------------------------------------- locking
#: the temporary names :func:`movierec.catalog.atomic_path` gives (``mkstemp``: ".<target>.<8
#: random characters>.tmp"); an operator's ``.notes.tmp`` is left alone
_OWN_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def cleanup_temp(cat: Catalog) -> int:
    """Remove temporary files and folders left by a killed run (call under the lock)."""
    from movierec.registry import Registry

    n = Registry(cat.models_dir).cleanup_temp()
    for folder in (cat.artifacts_dir, cat.manifests_dir, cat.workdir / "cache", cat.workdir / "cache" / "sentiment.parts",
                   cat.workdir / "runs", cat.quarantine_dir):
        if not folder.exists():
            continue
        for p in folder.glob(".*.tmp"):
            if not _OWN_TEMP.match(p.name):  # not a name atomic_path gives: someone else's file
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            n += 1
    if n:
        log.info("run: removed %d temporary files left by an interrupted run", n)
    return n


@contextlib.contextmanager
def workdir_lock(workdir: str | Path) -> Iterator[None]:
    """One writer per workdir: an OS lock the kernel releases if the process dies.

    The lock file is opened with O_NOFOLLOW: a ``lock`` that is a symbolic link (or a hard
    link, or not a regular file) is refused with a StorageError naming it, never written
    through (taking the lock truncates the file: it would truncate the link's target)."""
    from movierec.catalog import open_regular

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fd = open_regular(workdir / "lock", os.O_RDWR | os.O_CREAT, "workdir lock", StorageError,
                      "; remove it (movierec recreates it) and try again")
    fh = os.fdopen(fd, "r+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown process"
        fh.close()
        raise LockError(f"{workdir} is locked by another movierec run ({holder}); try later") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        fh.flush()
        cleanup_temp(Catalog(workdir))  # what a killed command left, under every locked command
        yield
    finally:
        fh.seek(0)
        fh.truncate()
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


# ----------------------------------------------------------------------------- staleness
def stage_inputs(stage: str, cfg: Config, cat: Catalog) -> dict[str, str]:
    """Hashes of everything a stage reads (files for ingest, upstream outputs otherwise)."""
    if stage == "ingest":
        from movierec.stages.ingest import input_files

        from movierec.feedback import events_path

        files = dict(input_files(cfg), feedback=events_path(cfg.workdir))
        from movierec.data.parts import input_hash

        return {name: input_hash(p) for name, p in sorted(files.items())}
    out: dict[str, str] = {}
    for up in STAGE[stage].upstream:
        out.update(cat.output_hashes(up))
    return out


def stage_config_hash(stage: str, cfg: Config) -> str:
    """A hash of the config values that decide the stage's outputs (its ``Stage.config``)."""
    import hashlib
    import json

    d = cfg.to_dict()
    part = {}
    for key in STAGE[stage].config:
        sec, _, field = key.partition(".")
        part[key] = d[sec][field] if field else d[sec]
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _intact(path: Path, size: int | None) -> bool:
    """The artifact is there with the size its manifest recorded (artifacts are not fsynced:
    one whose data a power loss took has another size)."""
    try:
        if path.is_dir() and not path.is_symlink():  # parts written by Ray workers
            return size is None or sum(p.stat().st_size for p in path.glob("part-*.parquet")) == size
        return size is None or path.stat().st_size == size
    except OSError:
        return False


def is_fresh(stage: str, cfg: Config, cat: Catalog) -> bool:
    m = cat.read_manifest(stage)
    if not m or m.get("config_hash") != stage_config_hash(stage, cfg):
        return False
    if m.get("inputs") != stage_inputs(stage, cfg, cat):
        return False
    outputs = m.get("outputs", {}).values()
    if not all(_intact(cat.artifacts_dir / entry["file"], entry.get("bytes")) for entry in outputs):
        return False
    if stage == "train":
        from movierec.registry import FORMAT, Registry

        try:
            return Registry(cat.models_dir).get(str(m.get("version"))).format == FORMAT
        except ModelError:
            return False
    return True


def stage_status(cfg: Config) -> dict[str, str]:
    cat = Catalog(Path(cfg.workdir))
    out = {}
    stale_above = False
    for s in STAGES:
        fresh = not stale_above and is_fresh(s, cfg, cat)
        out[s] = "fresh" if fresh else "stale"
        stale_above = stale_above or not fresh
    return out


def status_report(cfg: Config) -> dict:
    """Stages (fresh/stale, when last run), the current model with its metrics, the last run."""
    import json

    from movierec.registry import Registry

    cat = Catalog(Path(cfg.workdir))
    stages = {}
    for stage, state in stage_status(cfg).items():
        m = cat.read_manifest(stage) or {}
        stages[stage] = {"state": state, "finished": m.get("written_at"), "seconds": m.get("seconds")}
    reg = Registry.of(cfg)
    current = None
    cur = reg.current_name()
    if cur:
        try:
            row = reg.summary(cur, max(cfg.evaluate.k))
        except ModelError as exc:
            row = {"version": cur, "error": str(exc)}
        current = {k: row.get(k) for k in ("version", "created", "train_ratings", "format", "status", "error")
                   if row.get(k) is not None}
        current["metrics"] = {k: v for k, v in row.items()
                              if k in ("rmse", "mae", "coverage") or k.startswith("ndcg@")}
    last = None
    lp = cat.workdir / "runs" / "last.json"
    if lp.exists():
        data = json.loads(lp.read_text())
        last = {"outcome": data.get("outcome"), "finished": data.get("finished"), "seconds": data.get("seconds"),
                "reasons": (data.get("gate") or {}).get("reasons"), "current": data.get("current"),
                "error": data.get("error")}
    return {"workdir": str(cat.workdir), "stages": stages, "current_model": current, "last_run": last}


# ----------------------------------------------------------------------------- stages
def _run_ingest(cfg: Config, cat: Catalog) -> tuple[dict, dict]:
    from movierec.feedback import snapshot
    from movierec.engine import hold
    from movierec.privacy import keyed_texts, without_texts
    from movierec.stages.ingest import ingest

    events, feedback_state = snapshot(cat.workdir)
    with hold():  # engine ray: one Ray connection for every partitioned table
        res = ingest(cfg, events, parts_to=cat.artifacts_dir)
    # where the feedback log ended: a model version trained on this knows later events as new
    outputs = {"feedback_state": cat.write("feedback_state", feedback_state)}
    for name, art in RAW_NAMES.items():
        if name in res.tables and not isinstance(res.tables[name], pd.DataFrame):  # parts Ray's workers wrote
            outputs[art] = cat.install_parts(art, res.tables[name])
        elif name in res.tables:
            # texts never enter an artifact: a hash stands in for each (the sentiment stage
            # reads the texts it has not scored yet from the input files), and the score of a
            # text without words (no model reads those), known only while the text is here
            outputs[art] = cat.write(art, keyed_texts(res.tables[name]))
        else:
            cat.remove(art)
    cat.quarantine_dir.mkdir(parents=True, exist_ok=True)
    for name, q in res.quarantine.items():
        qp = cat.quarantine_dir / f"{name}.csv"
        if len(q):
            without_texts(q, ("text", "comment")).to_csv(qp, index=False)
        elif qp.exists():
            qp.unlink()
    return outputs, {"stats": res.stats}


def _load_tables(cat: Catalog, names: dict[str, str]) -> dict[str, pd.DataFrame]:
    return {k: cat.read(a) for k, a in names.items() if cat.exists(a)}


def _run_clean(cfg: Config, cat: Catalog) -> tuple[dict, dict]:
    from movierec.stages.clean import clean

    if cfg.engine.kind == "ray" and cat.path("ratings_raw").is_dir():
        # ratings in parts (Ray's ingest): deduplicated and split by Ray workers, not loaded here
        from movierec.data.ray_tables import clean_parts, staging_folder
        from movierec.engine import hold

        raw: dict = {}
        for name, art in RAW_NAMES.items():
            p = cat.path(art)
            if name in ("ratings", "test") and p.is_dir():
                raw[name] = (p, [{"file": f.name} for f in sorted(p.glob("part-*.parquet"))])
            elif cat.exists(art):
                raw[name] = cat.read(art)
        with hold():
            res = clean_parts(cfg, cfg.engine, raw, staging_folder(cat.artifacts_dir, "ratings_clean"),
                              staging_folder(cat.artifacts_dir, "clean_buckets"))
    else:
        res = clean(_load_tables(cat, RAW_NAMES), cfg)
    outputs = {}
    for name, art in CLEAN_NAMES.items():
        if name in res.tables and not isinstance(res.tables[name], pd.DataFrame):
            outputs[art] = cat.install_parts(art, res.tables[name])
        elif name in res.tables:
            outputs[art] = cat.write(art, res.tables[name])
        else:
            cat.remove(art)
    return outputs, {"stats": res.stats}


def _run_sentiment(cfg: Config, cat: Catalog) -> tuple[dict, dict]:
    import pyarrow as pa

    from movierec._memory import returning_pool

    # Arrow's memory in a pool that gives it back: the stage's hashes, lookups and merges are
    # O(texts) in Arrow, and the default pool (mimalloc) keeps what they free until the process
    # ends (a driver 0.1 GB larger at 300k reviews, benchmarks/results/ray_sentiment_memory.md)
    was = pa.default_memory_pool()
    pa.set_memory_pool(returning_pool())
    try:
        return _sentiment_stage(cfg, cat)
    finally:
        pa.set_memory_pool(was)


def _sentiment_stage(cfg: Config, cat: Catalog) -> tuple[dict, dict]:
    reviews = cat.read_optional("reviews_clean")
    social = cat.read_optional("social_clean")
    if not cfg.sentiment.enabled or (reviews is None and social is None):
        log.info("sentiment: %s; skipping", "disabled" if not cfg.sentiment.enabled else "no review or message texts")
        cat.remove("review_sentiment")
        cat.remove("message_sentiment")
        return {}, {}
    from movierec.sentiment.routing import Router  # (only where there are texts to score)
    from movierec.sentiment.cache import ScoreCache, merge, readable
    from movierec.stages.ingest import load_texts
    from movierec.stages.sentiment import sentiment

    cache_path = cat.workdir / "cache" / "sentiment.parquet"
    parts = cat.workdir / "cache" / "sentiment.parts"  # checkpoints of a run that was killed
    # a file that cannot be read is set aside (its texts scored again: the cache is derived data)
    earlier = readable(sorted(parts.glob("*.parquet")))
    base = readable([cache_path]) if cache_path.exists() else []
    # looked up by key, a row group of each file at a time: never loaded whole; on Ray in Ray
    # tasks where the workers see the workdir (they wrote ratings_clean's parts there)
    shared = cfg.engine.kind == "ray" and cat.path("ratings_clean").is_dir()
    cache = ScoreCache(files=base + earlier, engine=cfg.engine if shared else None)
    if earlier:
        log.info("sentiment: %d scores kept by an interrupted run are reused", ScoreCache(files=earlier).file_rows())

    def checkpoint(rows: pd.DataFrame) -> None:
        from movierec._faults import failpoint

        with atomic_path(parts / f"part-{time.time_ns()}-{os.getpid()}.parquet") as tmp:
            rows.to_parquet(tmp, index=False)
        failpoint("sentiment_checkpoint")

    from movierec.engine import hold

    scorer = Router(cfg.sentiment, cache, checkpoint=checkpoint, engine=cfg.engine)
    gatherer = None
    if cfg.engine.kind == "ray":  # texts in parts: read by Ray tasks, kept in Ray's object store
        from movierec.sentiment.ray_gather import TextGatherer

        gatherer = TextGatherer(cfg, cat.workdir)
        gatherer = gatherer if gatherer.folders() else None
    with hold():  # engine ray: one Ray connection for every window of texts that miss the cache
        res = sentiment(reviews, social, lambda: scorer, cfg.sentiment,
                        fetch=lambda keys: load_texts(cfg, keys, cat.workdir), gatherer=gatherer)
    del reviews, social  # (scored: their rows are the output's; not held through the merge)
    new = scorer.new_frames()  # (the rows since the last checkpoint: the others are in its files)
    saved = sorted(parts.glob("*.parquet"))  # an interrupted run's and this run's checkpoints
    if new or saved:
        merge(cache_path, saved, new)
    del new
    if parts.exists():
        shutil.rmtree(parts)
    outputs = {}
    for art, df in (("review_sentiment", res.reviews), ("message_sentiment", res.messages)):
        if df is not None:
            outputs[art] = cat.write(art, df)
        else:
            cat.remove(art)
    return outputs, {"distinct_texts": res.texts_scored, "texts_scored_by_model": scorer.misses,
                     **(res.routing or {})}


def _run_social(cfg: Config, cat: Catalog) -> tuple[dict, dict]:
    ties = cat.read_optional("social_clean")
    if not cfg.social.enabled or ties is None:
        log.info("social: %s; skipping", "disabled" if not cfg.social.enabled else "no social.csv")
        cat.remove("social_features")
        cat.remove("social_neighbours")
        return {}, {}
    from movierec.stages.social import social  # networkx: imported only when there is a graph

    n_users = cat.rows("user_ids")
    res = social(ties, cat.read_optional("message_sentiment"), n_users, cfg.social)
    return {
        "social_features": cat.write("social_features", res.features),
        "social_neighbours": cat.write("social_neighbours", res.neighbours),
    }, {}


def _run_fuse(cfg: Config, cat: Catalog) -> tuple[dict, dict]:
    if not cfg.model.use_features:
        # nothing reads the features (an ablation that wants them fuses its own): no scikit-learn
        # import and no fitting for a model without them
        log.info("fuse: the model uses no features (model.use_features: false); skipping")
        for art in ("user_features", "item_features", "feature_transformers"):
            cat.remove(art)
        return {}, {}
    res = fuse_for_fold(cfg, cat, cfg.split.fold)
    return {
        "user_features": cat.write("user_features", {"X": res.user_features, "names": np.array(res.user_names)}),
        "item_features": cat.write("item_features", {"Y": res.item_features, "names": np.array(res.item_names)}),
        "feature_transformers": cat.write("feature_transformers", res.transformers),
    }, {"user_dims": res.user_features.shape[1], "item_dims": res.item_features.shape[1]}


def _check_learnable(cfg: Config, train: pd.DataFrame, fold: int | None) -> None:
    """A 1-row or all-alike training part trains a model that predicts one value, and it
    would still pass a gate against nothing: refused, naming the ratings file (exit 65)."""
    from movierec.stages.ingest import check_learnable, input_files

    part = f" (the training part of split fold {fold})" if fold is not None else ""
    check_learnable(train["rating"].to_numpy(), f"{input_files(cfg)['ratings']}{part}")


def fuse_for_fold(cfg: Config, cat: Catalog, fold: int | None, features=None):
    """Feature matrices fitted on the training part of ``fold`` (None: on every rating)."""
    from movierec.stages.clean import train_test
    from movierec.stages.fuse import fuse

    ratings = cat.read("ratings_clean")
    train, test = train_test(ratings, fold)
    _check_learnable(cfg, train, fold)
    return fuse(
        cat.read("users_clean"), cat.read("movies_clean"), train,
        cat.read_optional("review_sentiment"), cat.read_optional("social_features"),
        test[["user_idx", "movie_idx"]], features or cfg.features, cat.read_optional("social_neighbours"),
    )


def _run_train(cfg: Config, cat: Catalog) -> tuple[dict, dict]:
    """Fit the measured model on the training part, refit the served one on every rating
    with the same hyperparameters, and write both into a new model version.

    The refit runs for as many epochs as early stopping chose for the holdout model (the
    number of epochs is a hyperparameter too) and keeps no validation slice: it trains on
    all ratings and feedback. With ``split.method: none`` there is no holdout model. Adam on
    Ray runs both fits in one Ray Train run (from ``ratings_clean``'s parts or from the
    driver's table), but for an ensemble.
    """
    from movierec.engine import hold

    holdout = None
    refit_cfg = cfg.model
    why = parts_route(cfg, cat, cfg.model)
    if why:
        log.info("train: ratings_clean is in parts, but the driver reads it whole: %s", "; ".join(why))
    pair = cfg.split.method != "none" and why == []  # from parts: both fits in one Ray Train run
    # Adam on Ray from the driver's table: both fits in one Ray Train run too, their inputs
    # built first (the driver holds both fits' tables until Ray has them)
    together = (cfg.split.method != "none" and not pair and cfg.engine.kind == "ray"
                and cfg.model.optimizer == "adam" and cfg.model.ensemble == 1)
    with hold():  # engine ray: one Ray session for the holdout fit, the refit and the version's files
        if pair:
            holdout, served = _train_from_parts(cfg, cat, cfg.split.fold, cfg.model, refit=True)
        elif together:
            from movierec.models.mf import fit_together

            holdout = fold_inputs(cfg, cat, cfg.split.fold, use_saved_features=True)
            served = fold_inputs(cfg, cat, None, model_cfg=replace(cfg.model, early_stopping=False))
            log.info("train: the holdout fit and the refit in one Ray Train run (the refit for the holdout "
                     "fit's best epoch + 1)")
            fit_together([holdout.model, served.model], [holdout.data, served.data])
            holdout_ratings = rated(holdout)
            holdout = holdout._replace(data=None, features=None, train=None)  # (its size is kept)
        elif cfg.split.method != "none":
            holdout = train_for_fold(cfg, cat, cfg.split.fold, use_saved_features=True, parts=True)
        if holdout is not None:
            holdout_ratings = holdout_ratings if together else rated(holdout)
            log.info("train: holdout model fitted on the training part (%d ratings, %.2fs)",
                     holdout_ratings, holdout.model.fit_seconds_)
        if not pair and not together:
            if holdout is not None:
                refit_cfg = replace(cfg.model, early_stopping=False,
                                    epochs=int(holdout.model.history_.best_epoch) + 1)
                # the holdout model's training arrays and table are not needed any more (its
                # size is): free them before the refit builds its own (at 20M ratings, hundreds of MB)
                holdout = holdout._replace(data=None, features=None, train=None)
                import gc

                gc.collect()
            served = train_for_fold(cfg, cat, None, model_cfg=refit_cfg, parts=True)
        version = save_model_version(cfg, cat, served, holdout)
    log.info("train: model %s saved (refit on all %d ratings in %.2fs)", version, rated(served),
             served.model.fit_seconds_)
    return {}, {"version": version, "fit_seconds": served.model.fit_seconds_,
                "holdout_fit_seconds": None if holdout is None else holdout.model.fit_seconds_,
                "ratings": rated(served), "holdout_ratings": None if holdout is None else holdout_ratings,
                "pseudo_ratings": served.pseudo_ratings}


#: Every stage, in order: what it runs, what it reads upstream, what it writes, the config
#: that decides its outputs, and what else it may read.
STAGE_TABLE = (
    Stage("ingest", _run_ingest, (), ("ratings_raw", "test_raw", "users_raw", "movies_raw", "reviews_raw",
                                      "social_raw", "feedback_state"),
          # feedback shares become ratings of share_rating (else the relevance threshold)
          config=("data", "privacy", "split.method", "split.train", "split.test", "refresh.share_rating",
                  "evaluate.relevance_threshold"), reads=("engine",)),
    Stage("clean", _run_clean, ("ingest",), ("ratings_clean", "users_clean", "movies_clean", "reviews_clean",
                                             "social_clean", "user_ids", "movie_ids"),
          config=("split",), reads=("engine",)),  # ray: where it runs, not what it writes
    # reads the texts it has not scored from the input files (where they lie decides nothing)
    Stage("sentiment", _run_sentiment, ("clean",), ("review_sentiment", "message_sentiment"),
          config=("sentiment",), reads=("data", "privacy", "split.method", "split.train", "split.test", "engine")),
    Stage("social", _run_social, ("clean", "sentiment"), ("social_features", "social_neighbours"),
          config=("social",)),
    # the training part of split.fold decides the features
    Stage("fuse", _run_fuse, ("clean", "sentiment", "social"), ("user_features", "item_features",
                                                               "feature_transformers"),
          config=("features", "split.fold", "model.use_features"),
          reads=("data", "split.method", "split.train", "split.test")),  # to name the ratings file in an error
    # pseudo-ratings from unrated reviews; the model version keeps the whole config
    Stage("train", _run_train, ("clean", "sentiment", "social", "fuse"), (),
          config=("model", "sentiment.pseudo_rating_weight", "features.use_sentiment",
                  "features.use_review_content"), reads=("*",)),
)
STAGE = {s.name: s for s in STAGE_TABLE}
STAGES = tuple(STAGE)


def ensure(cfg: Config, target: str, force: bool = False, reported: set | None = None) -> dict[str, str]:
    """Run every stale stage up to and including ``target``; returns stage -> ran/skipped.

    ``force`` re-runs ``target`` even when it is fresh. Stages named in ``reported``
    (updated here) are not announced as skipped again.
    """
    reported = set() if reported is None else reported
    if STAGES.index(target) >= STAGES.index("train"):
        from movierec.models.mf import check_trainer

        check_trainer(cfg.model)  # before hours of stages, not after
    cat = Catalog(Path(cfg.workdir))
    report = {}
    for stage in STAGES[: STAGES.index(target) + 1]:
        # a stage whose upstream re-ran is stale only if that changed an output it reads
        # (its manifest holds their hashes): a re-ingest that yields the same tables, after
        # a config move for instance, retrains nothing
        must = (force and stage == target) or not is_fresh(stage, cfg, cat)
        if not must:
            if stage not in reported:
                log.info("%s: fresh, skipped", stage)
                reported.add(stage)
            report[stage] = "skipped"
            continue
        reported.add(stage)
        t0 = time.perf_counter()
        inputs = stage_inputs(stage, cfg, cat)
        # a stage killed midway must look stale: its old manifest goes first
        cat.manifest_path(stage).unlink(missing_ok=True)
        try:
            outputs, extra = STAGE[stage].run(ConfigView(cfg, STAGE[stage]), cat)  # type: ignore[arg-type]
            secs = time.perf_counter() - t0
            cat.write_manifest(stage, inputs, stage_config_hash(stage, cfg), outputs, secs, extra)
        except OSError as exc:
            raise StorageError(f"{stage}: cannot write {exc.filename or cfg.workdir}: {exc.strerror or exc} "
                               f"(free some space or point workdir at a writable folder; nothing already "
                               f"written was changed)") from exc
        rows = ", ".join(f"{k}={v['rows']}" for k, v in outputs.items())
        log.info("%s: done in %.2fs%s", stage, secs, f" ({rows})" if rows else "")
        report[stage] = "ran"
    return report


# ----------------------------------------------------------------------------- training
def neighbours_matrix(cat: Catalog, n_users: int, shuffle: bool = False, seed: int = 0) -> sp.csr_matrix | None:
    """Each user's neighbourhood (rows sum to 1). ``shuffle``: the control experiment, every
    tie's target replaced by another tie's target (each user keeps as many ties, each
    target as many trusters, but who trusts whom is random)."""
    nb = cat.read_optional("social_neighbours")
    if nb is None or nb.empty:
        return None
    if shuffle:
        from movierec.stages.social import shuffled_neighbours

        nb = shuffled_neighbours(nb, seed)
    return sp.csr_matrix((nb["strength"].to_numpy(np.float32), (nb["user_idx"], nb["neighbour_idx"])),
                         shape=(n_users, n_users))


def implicit_matrix(cat: Catalog, train: pd.DataFrame, test: pd.DataFrame, n_users: int,
                    n_items: int) -> sp.csr_matrix:
    """Which movies each user rated (training part) or reviewed (not on a test pair)."""
    u = [train["user_idx"].to_numpy()]
    i = [train["movie_idx"].to_numpy()]
    reviews = cat.read_optional("reviews_clean")
    if reviews is not None and len(reviews):
        from movierec.data.schemas import pair_key

        keep = ~np.isin(pair_key(reviews), pair_key(test))
        u.append(reviews["user_idx"].to_numpy()[keep])
        i.append(reviews["movie_idx"].to_numpy()[keep])
    u, i = np.concatenate(u), np.concatenate(i)
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


class FoldFit(NamedTuple):
    """A fitted model and what it was fitted on."""

    model: Any  # MatrixFactorization
    data: Any  # TrainData
    train: pd.DataFrame | None  # the real ratings of the training part (None: fitted from parts)
    features: Any = None  # FuseResult when the features were fused for this fit
    pseudo_ratings: dict | None = None  # how pseudo-ratings were made (map, leave-one-out error)


def parts_route(cfg: Config, cat: Catalog, mcfg) -> list[str] | None:
    """Whether ``train`` can fit from ``ratings_clean``'s parts without the driver reading
    them (Adam on Ray, ratings cleaned on Ray): None where it is not on Ray's parts at all,
    else what keeps the ratings in the driver (an empty list: nothing, the parts route)."""
    if cfg.engine.kind != "ray" or not cat.path("ratings_clean").is_dir():
        return None
    why = []
    reviews_scored = cat.exists("review_sentiment")  # (pseudo-ratings and review content come from it)
    if mcfg.optimizer != "adam":
        why.append("model.optimizer sgd trains on the driver's cores")
    for on, what in ((mcfg.use_features, "model.use_features (fuse fits on the ratings)"),
                     (mcfg.implicit or mcfg.trust_implicit, "implicit sets (model.implicit, model.trust_implicit)"),
                     (mcfg.ranking != "rating", f"model.ranking {mcfg.ranking} (a ranker fitted on every rating)"),
                     (mcfg.ensemble > 1, "model.ensemble"),
                     (reviews_scored and cfg.features.use_sentiment and cfg.sentiment.pseudo_rating_weight > 0,
                      "pseudo-ratings (sentiment.pseudo_rating_weight)"),
                     (reviews_scored and cfg.features.use_review_content, "features.use_review_content")):
        if on:
            why.append(what)
    return why


def _train_from_parts(cfg: Config, cat: Catalog, fold: int | None, mcfg, refit: bool = False) -> list[FoldFit]:
    """Fit on ``ratings_clean``'s parts, read by the Ray Train workers (see
    :mod:`movierec.data.parts_train`): the driver holds the parts' figures and the side data.
    ``refit``: then the refit on every rating, for the first fit's best epoch + 1, in the
    same Ray Train run (:func:`movierec.models.mf.fit_parts`). One FoldFit per fit."""
    from movierec.data.parts_train import PartsRatings
    from movierec.models.mf import MatrixFactorization, fit_parts
    from movierec.models.train_data import PartsTrainData
    from movierec.stages.ingest import check_learnable, input_files

    n_users, n_items = cat.rows("user_ids"), cat.rows("movie_ids")
    neighbours = neighbours_matrix(cat, n_users, bool(mcfg.shuffle_social), mcfg.seed) if mcfg.social_reg > 0 else None
    folds = [(fold, mcfg)] + ([(None, replace(mcfg, early_stopping=False))] if refit else [])
    models, datas = [], []
    for f, m in folds:
        data = PartsTrainData(PartsRatings.of(cat.path("ratings_clean"), f, n_users, n_items), cfg.engine,
                              n_users, n_items, neighbours=neighbours)
        model = MatrixFactorization.from_config(m, engine=cfg.engine)
        part = f" (the training part of split fold {f})" if f is not None else ""
        check_learnable(data.summary(model.seed, model._validation_share()), f"{input_files(cfg)['ratings']}{part}")
        models.append(model)
        datas.append(data)
    log.info("train: fitting from ratings_clean's %d parts, read by the Ray workers (%d ratings)%s",
             len(datas[0].source.files), datas[-1].source.rated,
             "; the holdout fit and the refit in one Ray Train run" if refit else "")
    fit_parts(models, datas)
    return [FoldFit(m, d, None) for m, d in zip(models, datas)]


def rated(fit: FoldFit) -> int:
    """The real ratings of a fit's training part."""
    return len(fit.train) if fit.train is not None else int(fit.data.source.rated)


def train_for_fold(cfg: Config, cat: Catalog, fold: int | None, use_saved_features: bool = False,
                   features=None, model_cfg=None, parts: bool = False) -> FoldFit:
    """Fit a model on the training part of ``fold`` (None: on every rating). ``parts``: from
    ``ratings_clean``'s parts where :func:`parts_route` allows (the ``train`` stage on Ray)."""
    if parts and not features and parts_route(cfg, cat, model_cfg or cfg.model) == []:
        return _train_from_parts(cfg, cat, fold, model_cfg or cfg.model)[0]
    unfitted = fold_inputs(cfg, cat, fold, use_saved_features, features, model_cfg)
    unfitted.model.fit(unfitted.data)
    return unfitted


def fold_inputs(cfg: Config, cat: Catalog, fold: int | None, use_saved_features: bool = False,
                features=None, model_cfg=None) -> FoldFit:
    """What :func:`train_for_fold` fits, its model not fitted yet: the model built from the
    config and the data of the training part of ``fold`` (None: every rating)."""
    from movierec.models.mf import MatrixFactorization, TrainData
    from movierec.stages.clean import train_test

    ratings = cat.read("ratings_clean")
    train, test = train_test(ratings, fold)
    _check_learnable(cfg, train, fold)
    n_users, n_items = cat.rows("user_ids"), cat.rows("movie_ids")
    mcfg = model_cfg or cfg.model
    X = Y = None
    fused = None
    if mcfg.use_features:
        if use_saved_features and cat.exists("user_features"):
            X, Y = cat.read("user_features")["X"], cat.read("item_features")["Y"]
        else:
            fused = fuse_for_fold(cfg, cat, fold, features)
            X, Y = fused.user_features, fused.item_features
    shuffle = bool(mcfg.shuffle_social)
    neighbours = neighbours_matrix(cat, n_users, shuffle, mcfg.seed) if mcfg.social_reg > 0 else None
    implicit = implicit_matrix(cat, train, test, n_users, n_items) if mcfg.implicit else None
    trust = neighbours_matrix(cat, n_users, shuffle, mcfg.seed) if mcfg.trust_implicit else None
    if trust is not None and trust.nnz:
        # TrustSVD-style: the users u trusts are implicit feedback too, with their own y vectors
        items_part = implicit if implicit is not None else sp.csr_matrix((n_users, n_items), dtype=np.float32)
        trust = trust.copy()
        trust.data[:] = 1.0
        implicit = sp.hstack([items_part, trust], format="csr", dtype=np.float32)
        mcfg = replace(mcfg, implicit=True)
    fcfg = features or cfg.features
    fit_table, weights, pr = train, None, None
    use_pseudo = fcfg.use_sentiment and cfg.sentiment.pseudo_rating_weight > 0
    # read once: pseudo-ratings and review content both come from it
    rs = cat.read_optional("review_sentiment") if use_pseudo or fcfg.use_review_content else None
    if use_pseudo and rs is not None:  # (no scores, no pseudo-ratings: nothing to import)
        from movierec.models.pseudo import pseudo_ratings

        pr = pseudo_ratings(rs, ratings, train,
                            cfg.sentiment.pseudo_rating_weight)
        if pr is not None and len(pr.table):
            fit_table = pd.concat([train[["user_idx", "movie_idx", "rating"]], pr.table[["user_idx", "movie_idx", "rating"]]],
                                  ignore_index=True)
            weights = np.concatenate([np.ones(len(train), np.float32), pr.table["weight"].to_numpy()])
    content = None
    if fcfg.use_review_content:
        from movierec.models.content import review_content

        content = review_content(rs, test[["user_idx", "movie_idx"]], n_users, n_items)
    data = TrainData(fit_table["user_idx"].to_numpy(), fit_table["movie_idx"].to_numpy(),
                     fit_table["rating"].to_numpy(), n_users, n_items, X, Y, neighbours, implicit, weights, content)
    model = MatrixFactorization.from_config(mcfg, engine=cfg.engine)
    # how the pseudo-ratings were made (map, its leave-one-out error): the manifest and the version
    return FoldFit(model, data, train, fused, pr.calibration if weights is not None else None)


def save_model_version(cfg: Config, cat: Catalog, served: FoldFit, holdout: FoldFit | None) -> str:
    """Write a self-contained model version (see :mod:`movierec.registry`); returns its name."""
    from movierec.data.parts_train import IdParts, SeenParts
    from movierec.explain import genre_sentiment_table
    from movierec.feedback import snapshot
    from movierec.privacy import key_fingerprint
    from movierec.registry import Registry, ServingData
    from movierec.stages.clean import split_identity

    movies = cat.read("movies_clean")
    reviews = cat.read_optional("reviews_clean")
    rs = cat.read_optional("review_sentiment")
    features = served.features.transformers if served.features is not None else cat.read_optional("feature_transformers")
    m = served.model
    n_pseudo = 0 if served.data.weights is None else int((served.data.weights < 1.0).sum())
    feedback_state = cat.read_optional("feedback_state") or snapshot(cat.workdir)[1]
    data = ServingData(
        model=m, holdout=None if holdout is None else holdout.model,
        user_ids=IdParts(cat.path("user_ids"), cfg.engine) if cat.path("user_ids").is_dir() else cat.read("user_ids"),
        movies=movies,
        ratings=cat.read("ratings_clean") if served.train is not None else SeenParts(cat.path("ratings_clean"), cfg.engine),
        reviewed=None if reviews is None else reviews[["user_idx", "movie_idx"]],
        neighbours=cat.read_optional("social_neighbours"),
        genre_sentiment=genre_sentiment_table(rs, movies),
        features=features, config=cfg.to_dict(), config_hash=cfg.section_hash(),
        meta={"train_ratings": int(m.n_train_) - n_pseudo, "pseudo_ratings": served.pseudo_ratings,
              "pseudo_rating_rows": n_pseudo, "rating_scale": {"min": m.rating_min_, "max": m.rating_max_},
              "feedback": feedback_state, "privacy_key_fingerprint": key_fingerprint(cfg.privacy),
              "split": split_identity(cfg)},
    )
    return Registry.of(cfg).write(data).name


def trained_model_dir(cfg: Config) -> Path:
    """The version the train stage last saved (under ``run`` it may not be current yet)."""
    from movierec.registry import Registry

    reg = Registry.of(cfg)
    m = Catalog(Path(cfg.workdir)).read_manifest("train")
    if m and m.get("version"):
        return reg.get(m["version"]).path
    return reg.current().path


def train_and_promote(cfg: Config, force: bool = False) -> dict[str, str]:
    """``movierec train``: run stale stages, train, make the result current (no gate)."""
    from movierec.registry import Registry

    report = ensure(cfg, "train", force=force)
    reg = Registry.of(cfg)
    if report.get("train") == "ran" or reg.current_name() is None:
        reg.promote(trained_model_dir(cfg).name)
    return report


def ablation_configs(cfg: Config, names: list[str]) -> dict[str, tuple]:
    """(features config, model config) for each ablation: the same model minus a signal."""
    out = {}
    for name in names:
        f, m = cfg.features, cfg.model
        if name == "no_sentiment":
            f = replace(f, use_sentiment=False)
        elif name == "no_social":
            f = replace(f, use_social=False)
            m = replace(m, social_reg=0.0, trust_implicit=False)
        elif name == "shuffled_social":
            m = replace(m, shuffle_social=True)
        elif name == "no_features":
            m = replace(m, use_features=False)
        elif name == "no_review_content":
            f = replace(f, use_review_content=False)
        out[name] = (f, m)
    return out
