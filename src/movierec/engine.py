"""The Ray engine (``engine.kind: ray``): the heavy parts of the stages on a Ray cluster.

What runs on Ray (the rest stays in the driver, see the README, "On a Ray cluster"):

- ingest of partitioned inputs: the part files are read and validated in parallel by Ray
  Data (:func:`read_parts_ray`);
- sentiment: the texts that miss the score cache are scored by Ray Data ``map_batches``
  over an actor pool, each actor loading its scorer once (:class:`RayScorer`);
- Adam training: Ray Train's ``TensorflowTrainer`` (:mod:`movierec.models._adam_ray`);
- ``recommend --all``: user blocks mapped over workers, the model shared through the object
  store, one Parquet part file per block (:func:`recommend_all_ray`).

Nothing here is imported with ``engine.kind: local``; ray itself is imported only inside
these functions (``pip install 'movierec[ray]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import time
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from movierec.config import EngineConfig, SentimentConfig
from movierec.errors import ConfigError

log = logging.getLogger(__name__)


def import_ray():
    """The ray module, or a clear error naming the extra that brings it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("engine.kind: ray needs Ray: pip install 'movierec[ray]' (or set engine.kind: local)"
                          ) from exc
    return ray


def _quiet(ray) -> None:
    """Ray Data's progress lines go to the log at WARNING only (ours say what runs)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


#: one flag per open :func:`hold`: whether a session inside it connected Ray
_held: list[bool] = []


@contextlib.contextmanager
def hold():
    """Keep a Ray connection made inside the block until the block ends (one start for a
    stage's many windows and tables); nothing is started if nothing inside needs Ray."""
    _held.append(False)
    try:
        yield
    finally:
        if _held.pop():
            import ray

            ray.shutdown()


@contextlib.contextmanager
def session(engine: EngineConfig):
    """Ray connected for the duration: the cluster at ``engine.address`` (``auto``,
    ``ray://host:10001``), or a local Ray started in this process when it is unset (and shut
    down afterwards, or at the end of the enclosing :func:`hold`). An already connected Ray
    is used as it is."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        # Ray's own INFO and WARNING lines (every actor start, every checkpoint, a State API
        # warning each second without the dashboard) would bury the pipeline's log; its errors show
        kwargs: dict = {"include_dashboard": False, "logging_level": logging.ERROR,
                        "logging_config": ray.LoggingConfig(log_level="ERROR"),
                        # Ray Train's controller takes one report per poll (default every 2 s):
                        # a checkpoint per epoch would cost 2 s each
                        "runtime_env": {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}}
        if engine.address:
            kwargs["address"] = engine.address
        else:
            # enough CPUs for the workers, plus one for Ray Data's tasks beside them (logical
            # CPUs: a scheduling count, not a thread limit)
            kwargs["num_cpus"] = max(os.cpu_count() or 1, int(np.ceil(engine.workers * engine.cpus_per_worker)) + 1)
            if engine.gpus_per_worker:
                kwargs["num_gpus"] = int(np.ceil(engine.workers * engine.gpus_per_worker))
        t0 = time.perf_counter()
        root = logging.getLogger()
        saved = root.level, root.handlers[:]  # Ray's logging config must not silence the pipeline's log
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"engine.address {engine.address!r}: cannot connect to Ray: {exc}") from exc
        finally:
            root.setLevel(saved[0])
            root.handlers[:] = saved[1]
        if _held:
            _held[-1] = True  # the hold shuts it down
        else:
            started = True
        log.info("engine: Ray %s (%s) ready in %.1fs: %s", ray.__version__, engine.address or "local",
                 time.perf_counter() - t0, {k: v for k, v in ray.cluster_resources().items()
                                             if k in ("CPU", "GPU", "memory")})
    _quiet(ray)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def blocks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """``frame`` in contiguous blocks of ``size`` rows, the blocks of a Ray Dataset (Ray
    Data's own split of a DataFrame hands pandas 3 arrays)."""
    size = max(1, int(size))
    return [frame.iloc[a:a + size].reset_index(drop=True) for a in range(0, max(len(frame), 1), size)]


# ----------------------------------------------------------------------------- ingest
def read_parts_ray(parts: Sequence[Path], schema, engine: EngineConfig, **kw) -> list:
    """Read and validate part files in parallel with Ray Data (one row per part); the
    results in the order of ``parts``, exactly as :func:`movierec.data.parts.read_part` gives."""
    with session(engine) as ray:
        import ray.data

        def read(batch: pd.DataFrame) -> pd.DataFrame:
            from movierec.data.parts import read_part
            from movierec.errors import DataError

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


# ----------------------------------------------------------------------------- sentiment
class _ScoreActor:
    """One scorer per actor, loaded once; scores and features (float16 bytes) per batch."""

    def __init__(self, spec: SentimentConfig, downloads: bool, threads: int) -> None:
        from movierec.sentiment import scorers

        # as many compute threads as the actor has CPUs (every core each: actors fight for them)
        os.environ["MOVIEREC_THREADS"] = str(threads)
        scorers.DOWNLOADS_ALLOWED = downloads
        self.scorer = scorers.load_scorer(spec)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from movierec.sentiment.cache import features_to_bytes
        from movierec.sentiment.scorers import score_with_features

        s, f = score_with_features(self.scorer, batch["text"].tolist())
        out = pd.DataFrame({"i": batch["i"].to_numpy(), "sentiment": s})
        out["features"] = features_to_bytes(f) if f is not None else b""
        return out


class RayScorer:
    """A :class:`~movierec.sentiment.scorers.TextScorer` whose texts are scored on Ray:
    Ray Data ``map_batches`` over a pool of ``engine.workers`` actors (GPU actors when
    ``engine.gpus_per_worker > 0``). The score cache around it is the local one, so a re-run
    scores nothing and the artifacts are those of a local run."""

    def __init__(self, spec: SentimentConfig, engine: EngineConfig, model_id: str) -> None:
        self.spec, self.engine, self.model_id = spec, engine, model_id

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_features(texts)[0]

    def score_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        from movierec.progress import Progress
        from movierec.sentiment import scorers
        from movierec.sentiment.cache import features_from_bytes

        n = len(texts)
        if not n:
            return np.zeros(0, np.float32), None
        e = self.engine
        # each actor call scores one chunk of sentiment.checkpoint_every texts, the chunks a local
        # run scores: the int8 model's activation scale is set per batch, so a text's score
        # depends on the texts scored with it (by up to 0.3 on the demo between chunk sizes 512
        # and 4096), and only the same chunks give the same scores
        chunk = self.spec.checkpoint_every
        frame = pd.DataFrame({"i": np.arange(n), "text": list(texts)})
        t0 = time.perf_counter()
        with session(e) as ray:
            import ray.data

            ds = ray.data.from_pandas(blocks(frame, chunk))
            scored = ds.map_batches(
                _ScoreActor, fn_constructor_kwargs={"spec": self.spec, "downloads": scorers.DOWNLOADS_ALLOWED,
                                                 "threads": max(1, int(round(e.cpus_per_worker)))},
                compute=ray.data.ActorPoolStrategy(size=e.workers), batch_size=None,
                batch_format="pandas", num_cpus=e.cpus_per_worker, num_gpus=e.gpus_per_worker or None,
            )
            parts = []
            with Progress(n, "sentiment on Ray", unit="text") as bar:  # chunks as the actors finish them
                for part in scored.iter_batches(batch_size=None, batch_format="pandas"):
                    parts.append(part)
                    bar.update(len(part))
        out = pd.concat(parts, ignore_index=True).sort_values("i")
        if len(out) != n or not np.array_equal(out["i"].to_numpy(), np.arange(n)):
            raise RuntimeError(f"sentiment on Ray: {len(out)} scores came back for {n} texts")
        log.info("sentiment: %d texts scored on Ray by %d actors in %.1fs", n, e.workers, time.perf_counter() - t0)
        blobs = out["features"].to_numpy(object)
        feats = features_from_bytes(blobs) if all(len(b) for b in blobs) else None
        return out["sentiment"].to_numpy(np.float32), feats


def ray_spec(spec: SentimentConfig, engine: EngineConfig) -> SentimentConfig:
    """A route's scorer settings on the engine: GPU actors run torch on ``cuda``."""
    import dataclasses

    if engine.gpus_per_worker > 0 and spec.device == "cpu":
        return dataclasses.replace(spec, device="cuda")
    return spec


# ----------------------------------------------------------------------------- recommend --all
def recommend_all_ray(plan, n: int, out_dir: str | Path, engine: EngineConfig, block: int = 20000) -> int:
    """Every user's list on Ray: ``plan`` (:class:`movierec.ranking.AllLists`) put once in
    the object store, user blocks mapped over tasks, one Parquet part file per block in
    ``out_dir`` (replaced as a whole: a reader never sees half of a new folder). Returns the
    number of rows written."""
    from movierec.progress import Progress
    from movierec.ranking import lists_for_users

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output {out_dir}: with engine.kind: ray, --all writes a folder of Parquet part "
                          "files; that path is a file")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    n_users = plan.n_users
    block = max(1, min(block, int(np.ceil(n_users / (engine.workers * 4)))))
    try:
        with session(engine) as ray:
            @ray.remote(num_cpus=engine.cpus_per_worker)
            def run_block(plan, start: int, stop: int, path: str) -> int:
                df = lists_for_users(plan, np.arange(start, stop), n)
                df.to_parquet(path, index=False)
                return len(df)

            ref = ray.put(plan)
            tasks = [run_block.remote(ref, s, min(s + block, n_users), str(tmp / f"part-{k:05d}.parquet"))
                     for k, s in enumerate(range(0, n_users, block))]
            rows = 0
            with Progress(len(tasks), "recommend on Ray", unit="block") as bar:
                pending = list(tasks)
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    rows += int(ray.get(done[0]))
                    bar.update(1)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
        tmp.rename(out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows
