"""The Ray engine (``engine.kind: ray``): the Ray session and the engine settings.

The Ray form of each stage lives beside that stage and opens its session here (the rest
stays in the driver; see docs/ray.md):

- ingest of partitioned inputs: the part files are read and validated in parallel by Ray
  tasks, each worker opening its part (:func:`movierec.data.parts.read_parts_ray`);
- sentiment: the texts that miss the score cache are scored by a pool of Ray actors that
  lives for the whole stage, each actor loading its scorer once
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
import math
import os
import socket
import time

import numpy as np
import pandas as pd

from movierec.config import EngineConfig
from movierec.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)


def import_ray():
    """The ray module, or a clear error naming the extra that brings it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("engine.kind: ray needs Ray: pip install 'movierec[ray]' (or set engine.kind: local)"
                          ) from exc
    return ray


#: where the lines Ray's driver would print go (DEBUG: shown with -v)
_ray_log = logging.getLogger("movierec.ray")


def _route_printed_lines() -> None:
    """What Ray's driver prints of its cluster, into the log at DEBUG instead of the standard
    streams: the errors raylets push to the driver ("(raylet) A worker died or was killed
    while executing a task...", printed whatever ``log_to_driver`` says, and on stdout, where
    a command's tables and lists go) and, with -v (``log_to_driver``), the workers' output.
    The failures that matter reach the command as exceptions, with their cause
    (:func:`cluster_error`, :func:`movierec.models._adam_ray.fit_failure`). Installed before
    ``ray.init``, which binds the printer for the workers' output; with a Ray that has no
    such printer, Ray prints as it does."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # pragma: no cover - Ray moved it: its own printing stays
        return
    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "movierec_routed", False):
        return

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        who = data.get("pid")
        name = data.get("actor_name") or data.get("task_name")
        tag = who if who in ("raylet", "autoscaler") else f"{name + ' ' if name else ''}pid={who}"
        for line in data.get("lines") or ():
            _ray_log.debug("(%s) %s", tag, str(line).rstrip())

    to_log.movierec_routed = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_log


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


#: what Ray's own connect attempt to a cluster's GCS can take when the port answers but the
#: GCS does not (its C++ client: 5 s to connect, 5 s for the pubsub, 30 s for the cluster id;
#: measured 41 s with Ray 2.60); ray.init makes 20 of them by default (about 14 minutes)
_GCS_ATTEMPT_S = 40.0


def _remote(address: str | None) -> bool:
    """Whether ``address`` names a cluster to connect to (not a Ray of the command's own)."""
    return bool(address) and address.strip().lower() != "local"


def host_port(address: str) -> tuple[str, int] | None:
    """The host and port of an explicit address (``host:port``, ``ray://host:port``, IPv6 in
    brackets); None for ``auto`` or an address without a port (Ray resolves those)."""
    rest = address.strip()
    if "://" in rest:
        rest = rest.split("://", 1)[1]
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            return None
    if not host or not port.isdigit():
        return None
    return host, int(port)


def probe(address: str, timeout: float) -> None:
    """Fail fast with a ConfigError when the port of an explicit ``address`` does not accept a
    TCP connection within ``timeout`` seconds (ray.init would retry for minutes)."""
    hp = host_port(address)
    if hp is None:
        return
    host, port = hp
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        if isinstance(exc, (socket.timeout, TimeoutError)):
            cause = "timed out"
        elif isinstance(exc, socket.gaierror):
            cause = f"unknown host ({exc.strerror or exc})"
        else:
            cause = (exc.strerror or str(exc)).lower()
        raise ConfigError(f"engine.address {address!r}: cannot reach {host}:{port} within {timeout:g}s: {cause}"
                          ) from exc


def check_resources(engine: EngineConfig, resources: dict, where: str) -> None:
    """ConfigError when the workers need more CPUs (GPUs) than the cluster at ``where`` has
    (``resources``: :func:`ray.cluster_resources`): Ray would wait for them for ever."""
    for kind, key, per in (("CPU", "cpus_per_worker", engine.cpus_per_worker),
                           ("GPU", "gpus_per_worker", engine.gpus_per_worker)):
        if not per:
            continue
        need, have = engine.workers * per, float(resources.get(kind, 0) or 0)
        if need > have + 1e-9:
            raise ConfigError(f"engine.workers {engine.workers} x {key} {per:g} = {need:g} {kind}s, but the "
                              f"cluster at {where} has {have:g}: lower engine.workers or add nodes")


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the Ray cluster (its head, a node, the connection) went away, as
    opposed to an error of the work itself (a task's own exception, an actor that failed to
    start)."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError):  # the task's own error (may also be a ConnectionError)
        return False
    if isinstance(exc, rex.ActorDiedError):
        return not getattr(exc, "actor_init_failed", False)
    # ConnectionError itself, as Ray raises it for a GCS or Ray Client gone: not its subclasses
    # (a closed stdout's BrokenPipeError, a reset connection to storage)
    return isinstance(exc, (rex.RaySystemError, rex.NodeDiedError, rex.LocalRayletDiedError)) or \
        type(exc) is ConnectionError


def cluster_error(exc: BaseException, address: str | None) -> ClusterError:
    """The ClusterError (exit 69) for a lost cluster: the address and Ray's message."""
    where = f"engine.address {address!r}" if _remote(address) else "the local Ray"
    msg = _brief(str(exc)) or type(exc).__name__
    return ClusterError(f"{where}: lost the Ray cluster during the run ({type(exc).__name__}: {msg})")


def _brief(text: str, limit: int = 600) -> str:
    """A message on one line; one that holds a formatted traceback (as Ray's often do): what
    precedes the traceback and its last line, the error itself."""
    head, sep, tb = text.partition("Traceback (most recent call last)")
    if sep:
        lines = [ln.strip() for ln in tb.splitlines() if ln.strip()]
        text = f"{head} {lines[-1] if lines else ''}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _reason(exc: BaseException) -> str:
    """``exc``'s message, with the cause Ray chains beneath it ("Failed to connect to Ray
    cluster at ..." hides a missing auth token, a version mismatch)."""
    msg, inner = _brief(str(exc)) or type(exc).__name__, exc
    while inner.__cause__ is not None:
        inner = inner.__cause__
    if inner is not exc:
        why = _brief(str(inner)) or type(inner).__name__
        if why not in msg:
            msg = f"{msg} ({why})"
    return msg


@contextlib.contextmanager
def _gcs_attempts(n: int):
    """At most ``n`` of Ray's GCS connect attempts in the ray.init inside (ray reads
    ``RAY_gcs_server_port_wait_time_s`` at each connect, ray/_private/node.py
    ``_init_gcs_client``); a value the user set is kept."""
    key = "RAY_gcs_server_port_wait_time_s"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(n)
    try:
        yield
    finally:
        os.environ.pop(key, None)


@contextlib.contextmanager
def session(engine: EngineConfig):
    """Ray connected for the duration: the cluster at ``engine.address`` (``auto``,
    ``host:port``, ``ray://host:10001``), or a new local Ray started in this process when it is
    unset (and shut down afterwards, or at the end of the enclosing :func:`hold`). An already
    connected Ray is used as it is.

    An explicit address that does not answer within ``engine.connect_timeout``, or a cluster
    with fewer CPUs (GPUs) than the workers reserve, is a ConfigError (exit 78); the cluster
    lost during the block, a ClusterError (exit 69)."""
    ray = import_ray()
    started = False
    remote = _remote(engine.address)
    if not ray.is_initialized():
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        _route_printed_lines()
        # Ray's own INFO and WARNING lines (every actor start, every checkpoint, a State API
        # warning each second without the dashboard) would bury the pipeline's log; its errors
        # show. What Ray prints of its cluster (raylet errors, and the workers' output with -v:
        # log_to_driver) goes to the log at DEBUG (_route_printed_lines)
        kwargs: dict = {"include_dashboard": False, "logging_level": logging.ERROR,
                        "logging_config": ray.LoggingConfig(log_level="ERROR"),
                        "log_to_driver": log.isEnabledFor(logging.DEBUG),
                        # Ray Train's controller takes one report per poll (default every 2 s):
                        # a checkpoint per epoch would cost 2 s each
                        "runtime_env": {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}}}
        if remote:
            probe(engine.address, engine.connect_timeout)  # not there: fail now, not after Ray's retries
            kwargs["address"] = engine.address
        else:
            # "local": a new Ray of this command's own, even where RAY_ADDRESS or
            # /tmp/ray/ray_current_cluster names a running one (address=None would join it)
            kwargs["address"] = "local"
            # enough CPUs for the workers, plus one for Ray Data's tasks beside them (logical
            # CPUs: a scheduling count, not a thread limit)
            kwargs["num_cpus"] = max(os.cpu_count() or 1, int(np.ceil(engine.workers * engine.cpus_per_worker)) + 1)
            if engine.gpus_per_worker:
                kwargs["num_gpus"] = int(np.ceil(engine.workers * engine.gpus_per_worker))
        # a GCS that accepts the connection but does not answer: about connect_timeout, not
        # Ray's 20 attempts (the Ray Client of ray:// has its own, about 30 s)
        attempts = max(1, math.ceil(engine.connect_timeout / _GCS_ATTEMPT_S))
        t0 = time.perf_counter()
        root = logging.getLogger()
        saved = root.level, root.handlers[:]  # Ray's logging config must not silence the pipeline's log
        try:
            with _gcs_attempts(attempts) if remote else contextlib.nullcontext():
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = " (start one with ray start --head, or leave engine.address unset for a local Ray of the " \
                "command's own)" if "Could not find any running Ray instance" in str(exc) else ""
            what = f"engine.address {engine.address!r}: cannot connect to Ray" if remote else \
                "engine.address unset: cannot start a local Ray"
            raise ConfigError(f"{what}: {_reason(exc)}{hint}") from exc
        finally:
            root.setLevel(saved[0])
            root.handlers[:] = saved[1]
        resources = ray.cluster_resources()
        if remote:
            try:
                check_resources(engine, resources, engine.address)
            except ConfigError:
                ray.shutdown()
                raise
        if _held:
            _held[-1] = True  # the hold shuts it down
        else:
            started = True
        log.info("engine: Ray %s (%s) ready in %.1fs: %s", ray.__version__, engine.address if remote else "local",
                 time.perf_counter() - t0, {k: v for k, v in resources.items() if k in ("CPU", "GPU", "memory")})
    _quiet(ray)
    try:
        yield ray
    except Exception as exc:
        if _lost(exc):
            raise cluster_error(exc, engine.address) from exc
        raise
    finally:
        if started:
            ray.shutdown()


def in_order(ray, refs: list):
    """The results of Ray tasks, one at a time in submission order, each let go of in the
    object store once taken; a task that returned an exception (a part's DataError) cancels
    the tasks after it and is raised here."""
    for i in range(len(refs)):
        r, refs[i] = ray.get(refs[i]), None
        if isinstance(r, Exception):
            for ref in refs[i + 1:]:
                ray.cancel(ref)
            raise r
        yield r


def blocks(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    """``frame`` in contiguous blocks of ``size`` rows, the blocks of a Ray Dataset (Ray
    Data's own split of a DataFrame hands pandas 3 arrays)."""
    size = max(1, int(size))
    return [frame.iloc[a:a + size].reset_index(drop=True) for a in range(0, max(len(frame), 1), size)]
