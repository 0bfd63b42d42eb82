"""The Ray engine (``engine.kind: ray``): the Ray session and the engine settings.

The Ray form of each stage lives beside that stage and opens its session here (the rest
stays in the driver; see docs/ray.md):

- ingest of partitioned inputs: the part files are read and validated in parallel by Ray
  Data (:func:`movierec.data.parts.read_parts_ray`);
- sentiment: the texts that miss the score cache are scored by Ray Data ``map_batches``
  over an actor pool, each actor loading its scorer once
  (:class:`movierec.sentiment.ray_scorer.RayScorer`);
- Adam training: Ray Train's ``TensorflowTrainer`` (:mod:`movierec.models._adam_ray`);
- ``recommend --all``: user blocks mapped over workers, the model shared through the object
  store, one Parquet part file per block (:func:`movierec.ranking_ray.recommend_all_ray`).

This module imports no other part of movierec but the config and the errors; ray itself is
imported only inside these functions (``pip install 'movierec[ray]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import numpy as np
import pandas as pd

from movierec.config import EngineConfig
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
