"""The Adam trainer on Ray Train (``model.optimizer: adam`` with ``engine.kind: ray``).

Ray Train's ``TensorflowTrainer`` starts ``engine.workers`` workers under TensorFlow's
``MultiWorkerMirroredStrategy`` (Ray sets each worker's ``TF_CONFIG``). The training ratings
go to the workers as a Ray Dataset made from the driver's arrays, each worker reading only
its shard (:func:`fit_adam_ray_fits`), or, from ``ratings_clean``'s parts, each worker reads its
own slice of the parts' rows and nothing O(ratings) passes through the driver
(:func:`fit_adam_ray_parts`). Every step, each
worker takes a batch of ``batch_size / workers`` ratings of its shard, and the gradients are
summed across workers (the loss scaled by 1 / workers), so one step sees ``batch_size``
ratings as a local step does and an epoch has as many steps. The variables are mirrored:
every worker holds the same parameters after a step, so all take the same early-stopping
decision and stop together (:class:`~movierec.models._tracking.EpochTracker`, as locally).

``train``'s two fits (the holdout fit and the refit on every rating, for the holdout's best
epoch + 1) run one after the other in one Ray Train run: the workers, TensorFlow and the
collectives start once (:func:`movierec.models.mf.fit_parts` from parts,
:func:`movierec.models.mf.fit_together` from the driver's arrays, each fit's ratings a Ray
Dataset of its own).

After every epoch the first worker saves a checkpoint (parameters, Adam's moments, the
learning curve, the best state so far, and the final state of each fit of the run that has
finished, so that a restart resumes at the fit in progress). A worker that dies is
restarted by Ray Train (``FailureConfig``) and all workers resume from the last checkpoint;
when the failures exceed the limit, the fit raises and no model version is written. The
result is the same numpy state a local fit leaves, so the model saves, loads and serves as
any other (from parts, the driver maps it from the final state's file). The
validation RMSE is computed once per epoch across the workers: each predicts its share of
the validation ratings and the squared errors are summed (a collective, as the gradients).

The checkpoints of a fit live in ``engine.checkpoint_dir`` (default: the temporary folder)
under a name derived from everything the fit depends on (:func:`fit_key`: the initial state,
the settings, the ratings, the validation split, the side data, the seed and the workers).
A fit that fails (too many restarts, a lost cluster, a killed command) leaves them there, and
the next attempt of the same fit (``movierec train`` or ``run`` again on the same data) resumes
from the last one instead of from epoch 0; a fit that finishes removes them. Folders of
fits never finished are swept after :data:`KEEP_DAYS`.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np
import pandas as pd

from movierec._npz import npz_arrays
from movierec.engine import blocks, session
from movierec.errors import ModelError
from movierec.models._adam import _make_step, _pull, adam
from movierec.models._tracking import EpochTracker, History
from movierec.models.train_data import TrainData

log = logging.getLogger(__name__)

#: how many times Ray Train restarts the worker group after a worker failure
MAX_FAILURES = 3
_CKPT = "state.npz"
#: checkpoint folders of fits that failed and were not attempted again are removed after this
KEEP_DAYS = 7
_PREFIX = "movierec-adam-"


def fit_key(model, data, val_mask: np.ndarray, seed: int, workers: int) -> str:
    """What identifies one fit: a fit with the same key computes the same thing, so its
    checkpoints are a valid place to resume from."""
    import hashlib
    import json

    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps({"params": model.get_params(), "seed": int(seed), "workers": int(workers),
                         "n_users": int(data.n_users), "n_items": int(data.n_items)},
                        sort_keys=True, default=str).encode())
    nb = data.neighbours.tocsr() if data.neighbours is not None else None
    arrays = [*(v for _, v in sorted(model._state_views().items())), data.users, data.items, data.ratings,
              data.weights, val_mask, data.user_features, data.item_features,
              *((nb.indptr, nb.indices, nb.data) if nb is not None else ())]
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _sweep(root: Path, keep: str) -> None:
    """Remove checkpoint folders of fits last touched more than KEEP_DAYS ago (not ``keep``),
    and fitted states a killed command left (:func:`fit_adam_ray_parts`)."""
    cutoff = time.time() - KEEP_DAYS * 86400
    for d in root.glob(_PREFIX + "*"):
        try:
            if d.name == keep or d.stat().st_mtime >= cutoff:
                continue
            if d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
            else:
                d.unlink()
        except OSError:
            pass


def _remove(path: Path) -> None:
    """Remove a fitted state's file once its model is gone (its maps stay readable)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fit_adam_ray(model, data, val_mask: np.ndarray, rng: np.random.Generator, engine):
    """Fit ``model`` (its state initialized) on Ray; returns the :class:`History`."""
    return fit_adam_ray_fits([(model, data, val_mask, rng)], engine)[0][0]


def fit_adam_ray_fits(fits: list[tuple], engine) -> list[tuple[History, float]]:
    """Fit each ``(model, data, val_mask, rng)`` of ``fits`` (the model's state initialized,
    its ratings the driver's arrays) on Ray, one after the other in one Ray Train run (the
    workers and TensorFlow start once); a second fit is the first's refit, trained for the
    first's best epoch + 1. Each fit's training ratings are a Ray Dataset of their own, each
    worker reading its shard. Returns (:class:`History`, seconds) per fit; the models hold
    their fitted state."""
    workers = int(engine.workers)
    specs, keys, held = [], [], []
    for j, (model, data, val_mask, rng) in enumerate(fits):
        tr = np.flatnonzero(~val_mask)
        va = np.flatnonzero(val_mask)
        n_train = len(tr)
        # what every worker needs besides its ratings: the model (its initial state and settings)
        # and the side data (features, neighbours, implicit sets, the validation ratings)
        side = TrainData(data.users[va], data.items[va], data.ratings[va], data.n_users, data.n_items,
                         data.user_features, data.item_features, data.neighbours,
                         data.implicit() if model.implicit else None)
        # Ray Train splits a dataset into equal shards, dropping the rows past a multiple of the
        # workers: pad with copies of weight 0 (no loss) so that every rating trains (one table
        # a fit, built once: at 20M ratings each copy is hundreds of MB in the driver)
        pad = (-n_train) % workers
        tr = np.concatenate([tr, tr[:pad]]) if pad else tr
        w = np.ones(len(tr), np.float32) if data.weights is None else data.weights[tr].astype(np.float32)
        w[n_train:] = 0.0
        held.append(pd.DataFrame({"u": data.users[tr], "i": data.items[tr], "r": data.ratings[tr], "w": w}))
        del tr, w
        seed = int(rng.integers(1 << 31))
        specs.append({"model": model, "side": side, "n_train": n_train, "n_val": len(va), "seed": seed,
                      "parts": None, "dataset": f"train-{j}", "refit_of": 0 if j else None})
        keys.append(fit_key(model, data, val_mask, seed, workers))

    def datasets(ray):
        import ray.data

        out = {}
        for j, spec in enumerate(specs):
            ratings, held[j] = held[j], None  # in the object store from here on, not in the driver
            out[spec["dataset"]] = ray.data.from_pandas(blocks(ratings, -(-len(ratings) // (workers * 4))))  # 4 a worker
            del ratings
        return out

    return _run_fits([f[0] for f in fits], specs, keys, engine, datasets)


def fit_adam_ray_parts(fits: list[tuple], engine) -> list[tuple]:
    """Fit each ``(model, begun)`` of ``fits`` (:meth:`MatrixFactorization._parts_begin`: the
    model's state initialized, its data a :class:`~movierec.models.train_data.PartsTrainData`)
    on Ray from ratings in parts, one after the other in one Ray Train run (the workers and
    TensorFlow start once); a second fit is the first's refit, trained for the first's best
    epoch + 1. Each worker reads its own slice of the parts' rows, keeps the training part and
    holds out the validation slice by the pairs' hash
    (:func:`movierec.data.parts_train.held_out`); nothing O(ratings) passes through the
    driver. The workers zero the rows ``begun["zero"]`` (viewers and movies without training
    ratings) in the final state, and scale a wide rating scale's parameters back from its units. The fitted state is not read into the driver: each model's
    arrays are mapped read-only from its final state's file, kept beside the checkpoints
    until the model is gone. Returns (:class:`History`, seconds) per fit."""
    workers = int(engine.workers)
    specs, keys = [], []
    for j, (model, begun) in enumerate(fits):
        data, src = begun["data"], begun["data"].source
        side = TrainData(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32), data.n_users,
                         data.n_items, data.user_features, data.item_features, data.neighbours)
        seed = int(begun["rng"].integers(1 << 31))
        # "init": the seed each worker draws the starting factors from (the driver draws none)
        parts = {"files": list(src.files), "rows": list(src.rows), "fold": src.fold, "seed": src.seed,
                 "fraction": src.fraction, "unit": float(data.unit), "init": int(model.seed), "zero": begun["zero"]}
        specs.append({"model": model, "side": side, "n_train": src.n_train, "n_val": src.n_val, "seed": seed,
                      "parts": parts, "refit_of": 0 if j else None})
        keys.append(parts_fit_key(model, data, seed, workers))
    return _run_fits([f[0] for f in fits], specs, keys, engine, None, keep=True)


def _run_fits(models: list, specs: list[dict], keys: list[str], engine, datasets, keep: bool = False) -> list[tuple]:
    """:func:`_fit_on_ray` of ``specs`` (their :func:`fit_key` s ``keys``), each of ``models``
    then holding its fitted state; (:class:`History`, seconds) per fit."""
    key = keys[0] if len(keys) == 1 else _combined(keys)
    t0 = time.perf_counter()
    done = _fit_on_ray(specs, key, engine, datasets, keep=keep)
    wall = time.perf_counter() - t0
    out = []
    for model, (saved, seconds) in zip(models, done):
        model._restore({k[6:]: v for k, v in saved.items() if k.startswith("model:")})
        out.append((_history(saved), seconds))
    # the first fit's time includes the run's start (the workers, TensorFlow, the collectives)
    out[0] = (out[0][0], wall - sum(sec for _, sec in out[1:]))
    return out


def _combined(keys: list[str]) -> str:
    """One key for a run of several fits (each fit's :func:`parts_fit_key`)."""
    import hashlib

    return hashlib.blake2b("/".join(keys).encode(), digest_size=12).hexdigest()


def _history(saved: dict) -> History:
    return History(train_rmse=[float(x) for x in saved["train_rmse"]], val_rmse=[float(x) for x in saved["val_rmse"]],
                   best_epoch=int(saved["best_epoch"]))


def parts_fit_key(model, data, seed: int, workers: int) -> str:
    """:func:`fit_key` of a fit from parts: the parts are named by path, size and time."""
    import hashlib
    import json

    src = data.source
    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in src.files]
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps({"params": model.get_params(), "seed": int(seed), "workers": int(workers),
                         "n_users": int(data.n_users), "n_items": int(data.n_items), "parts": stats,
                         "fold": src.fold, "val": [src.seed, src.fraction], "unit": float(data.unit),
                         "init": int(model.seed)},
                        sort_keys=True, default=str).encode())
    nb = data.neighbours.tocsr() if data.neighbours is not None else None
    for a in [*(v for _, v in sorted(model._state_views().items())), data.user_features, data.item_features,
              *((nb.indptr, nb.indices, nb.data) if nb is not None else ())]:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _fit_on_ray(fits: list[dict], key: str, engine, datasets, keep: bool = False) -> list[tuple[dict, float]]:
    """Run ``fits`` one after the other on Ray Train, in one run: the workers' ratings from
    ``datasets(ray)`` (a dict of Ray Datasets; one fit) or, with each fit's ``parts``, read by
    each worker from the parts. Returns (the final state's arrays, the fit's seconds in the
    workers) per fit; ``keep``: the arrays mapped read-only from the final state's file, moved
    out of the checkpoints and removed when its model is gone (else read into memory)."""
    workers = int(engine.workers)
    name = _PREFIX + key
    # this fit's checkpoints, where every worker can write them (the driver reads the last);
    # kept when the fit fails, so that its next attempt resumes from them
    if engine.checkpoint_dir and "://" in engine.checkpoint_dir:
        storage, run_dir = engine.checkpoint_dir.rstrip("/"), None
    else:
        root = Path(engine.checkpoint_dir).expanduser() if engine.checkpoint_dir else \
            Path(tempfile.gettempdir()) / "movierec-ray-train"
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root, name)
        storage, run_dir = str(root), root / name
        if run_dir.exists():
            log.info("train: an earlier attempt of this fit left checkpoints in %s: resuming from the last", run_dir)
    t0 = time.perf_counter()
    with session(engine) as ray:
        import ray.train
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

        Trainer = tensorflow_trainer()
        config = {"fits": [dict(f, model=ray.put(_shipped(f)), side=ray.put(f["side"])) for f in fits],
                  "workers": workers, "failpoint": os.environ.get("MOVIEREC_FAILPOINT"),
                  "driver_pid": os.getpid(), "run_dir": str(run_dir)}
        kw = {"datasets": datasets(ray)} if datasets is not None else {}
        trainer = Trainer(
            _train_loop, train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=engine.gpus_per_worker > 0,
                                         resources_per_worker=_resources(engine)),
            run_config=RunConfig(name=name, storage_path=storage,
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)), **kw)
        kept = f"; its checkpoints stay in {run_dir or storage + '/' + name} for the next attempt"
        try:
            result = trainer.fit()
        except Exception as exc:  # noqa: BLE001 - Ray wraps the workers' errors in its own types
            raise ModelError(f"Adam on Ray failed (a worker's error, or more than {MAX_FAILURES} restarts): "
                             f"{fit_failure(exc)}{kept}") from exc
        if result.checkpoint is None:
            raise ModelError("Adam on Ray: training ended without a checkpoint")
        out = []
        with result.checkpoint.as_directory() as d:
            finished = [Path(d) / _fitted(j) for j in range(len(fits))]
            if not all(f.exists() for f in finished):
                raise ModelError("Adam on Ray: the last checkpoint is not a finished fit")
            for j, f in enumerate(finished):
                if keep:
                    # the final state's file moved out of the checkpoints and mapped: the driver
                    # reads none of the O(viewers x factors) parameters (the version's file is
                    # copied from it)
                    moved = (run_dir.parent if run_dir is not None else Path(tempfile.gettempdir())) / \
                        f"{name}.fitted-{j}-{os.getpid()}-{time.time_ns()}.npz"
                    shutil.move(f, moved)
                    weakref.finalize(fits[j]["model"], _remove, moved)
                    saved = npz_arrays(moved)
                else:
                    with np.load(f, allow_pickle=False) as z:
                        saved = {k: z[k] for k in z.files}
                out.append(({k: v for k, v in saved.items() if not k.startswith(("opt:", "best:"))},
                            float(saved["seconds"])))
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)  # finished: nothing to resume
    restarts = max(int(saved["restarts"]) for saved, _ in out)
    log.info("train: Adam on Ray (%d workers) finished %s in %.1fs%s", workers,
             " and ".join(f"{len(saved['train_rmse'])} epochs" for saved, _ in out) +
             (" (the holdout fit and the refit, one Ray Train run)" if len(out) > 1 else ""),
             time.perf_counter() - t0, f" (resumed {restarts} times)" if restarts else "")
    return out


def _shipped(fit: dict):
    """The model as the workers get it: a fit from parts without its starting biases (zeros,
    4 bytes a viewer in the object store; each worker makes them, as it draws the factors)."""
    import copy

    model = fit["model"]
    if not fit["parts"]:
        return model
    model = copy.copy(model)
    model.user_bias_ = model.item_bias_ = None
    return model


def _fitted(j: int) -> str:
    """The file of the j-th fit's final state in a checkpoint."""
    return f"fit-{j}.npz"


def tensorflow_trainer():
    """Ray Train's ``TensorflowTrainer``, without TensorFlow in the driver where Ray allows.

    The package ``ray.train.tensorflow`` imports TensorFlow when it is imported (0.7 GB of the
    driver's memory and seconds of start-up), though the driver only starts the workers,
    which import it themselves. Under Ray Train v2 the trainer is a ``DataParallelTrainer``
    with the TensorFlow backend config, and the module of that config imports no TensorFlow:
    it is loaded here without the package's ``__init__`` (the package itself, imported later,
    finds the same module). With Ray Train v1, or the package imported already: Ray's class."""
    import importlib.util
    import sys
    import types

    name = "ray.train.tensorflow"
    try:
        from ray.train.v2._internal.constants import is_v2_enabled
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    except ImportError:  # a Ray without Train v2 (or that moved it): its own class
        is_v2_enabled = lambda: False  # noqa: E731
    if not is_v2_enabled() or name in sys.modules:
        from ray.train.tensorflow import TensorflowTrainer

        return TensorflowTrainer
    if name + ".config" not in sys.modules:
        spec = importlib.util.find_spec(name)
        stub = types.ModuleType(name)  # the package's folder, not its __init__
        stub.__path__, stub.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules[name] = stub
        try:
            importlib.import_module(name + ".config")
        finally:
            del sys.modules[name]
    config = sys.modules[name + ".config"].TensorflowConfig

    def trainer(train_loop, **kwargs):
        return DataParallelTrainer(train_loop, backend_config=config(), **kwargs)

    return trainer


#: what a worker reports when another worker went away first (a consequence, not the cause)
_KNOCK_ON = ("Collective ops is aborted", "Socket closed", "CollectiveBcastRecv")


def fit_failure(exc: BaseException) -> str:
    """The cause of a failed Ray Train fit, on one line: Ray's WorkerGroupError says only
    "Training failed due to worker errors:" on its first line; its ``worker_failures`` hold
    each rank's error, of which the first that is not another's knock-on (a collective op
    aborted because a peer died) is the cause."""
    from movierec.engine import _brief

    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict) and failures:
        ranked = sorted(failures.items(), key=lambda kv: kv[0])
        cause = next(((r, e) for r, e in ranked if not any(k in str(e) for k in _KNOCK_ON)), ranked[0])
        return f"worker {cause[0]}: {type(cause[1]).__name__}: {_brief(str(cause[1]), 500)}"
    inner = getattr(exc, "controller_failure", None)
    if inner is not None:
        return f"the Ray Train controller: {type(inner).__name__}: {_brief(str(inner), 500)}"
    return _brief(str(exc), 500) or type(exc).__name__


def _resources(engine) -> dict:
    out = {"CPU": float(engine.cpus_per_worker)}
    if engine.gpus_per_worker > 0:
        out["GPU"] = float(engine.gpus_per_worker)
    return out


def _shard_arrays(shard) -> dict[str, np.ndarray]:
    """This worker's ratings, read once from its Ray Data shard."""
    parts = {k: [] for k in ("u", "i", "r", "w")}
    for b in shard.iter_batches(batch_size=1 << 16, batch_format="numpy"):
        for k in parts:
            parts[k].append(b[k])
    return {k: (np.concatenate(v) if v else np.zeros(0, np.float32)) for k, v in parts.items()}


def _parts_shard(parts: dict, rank: int, workers: int) -> tuple[dict[str, np.ndarray], tuple]:
    """This worker's ratings read from the parts: its slice of their rows, the training part,
    the validation slice held out by hash; (training arrays, validation (u, i, r))."""
    from movierec.data.parts_train import held_out, read_rows, shards

    lo, hi = shards(parts["rows"], workers)[rank]
    u, i, r = read_rows(parts["files"], parts["rows"], lo, hi, parts["fold"])
    if parts["unit"] != 1.0:
        r = r / np.float32(parts["unit"])
    val = held_out(u, i, parts["seed"], parts["fraction"])
    keep = ~val
    mine = {"u": u[keep], "i": i[keep], "r": r[keep], "w": np.ones(int(keep.sum()), np.float32)}
    return mine, (u[val], i[val], r[val])


def _train_loop(config: dict) -> None:  # runs in each Ray Train worker
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import ray
    import ray.train
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any other TensorFlow op

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    _worker_logging(rank)
    # the first worker's copies of the finished fits' final states, which it puts into every
    # later checkpoint (so that a restart resumes at the fit in progress); every worker knows
    # their best epochs (a refit trains for the first fit's best + 1)
    done = Path(tempfile.mkdtemp(prefix="movierec-fits-"))
    best: dict[int, int] = {}
    saved, restarts = None, 0
    try:
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                for f in sorted(Path(d).glob("fit-*.npz")):
                    with np.load(f, allow_pickle=False) as z:
                        best[int(f.stem.split("-")[1])] = int(z["best_epoch"])
                        restarts = max(restarts, int(z["restarts"]) + 1)
                    if rank == 0:
                        shutil.copy(f, done / f.name)
                if (Path(d) / _CKPT).exists():
                    saved = dict(np.load(Path(d) / _CKPT, allow_pickle=False))
                    restarts = int(saved["restarts"]) + 1
        for j, fit in enumerate(config["fits"]):
            if j in best:  # finished before a restart: its final state is in the checkpoint
                if rank == 0:
                    logging.getLogger(__name__).info("train: fit %d of %d of this run finished before the restart: "
                                                     "its final state from the checkpoint", j + 1, len(config["fits"]))
                continue
            epochs = best[fit["refit_of"]] + 1 if fit["refit_of"] is not None else None
            resume = saved if saved is not None and int(saved.get("fit", 0)) == j else None
            best[j] = _one_fit(config, fit, j, tf, strategy, ctx, resume, restarts, done, epochs)
            saved = None
    finally:
        shutil.rmtree(done, ignore_errors=True)  # (a checkpoint's links to its files stay valid)


def _one_fit(config: dict, fit: dict, j: int, tf, strategy, ctx, saved: dict | None, restarts: int, done: Path,
             epochs: int | None) -> int:
    """The j-th fit of a run, from ``saved`` (its last checkpoint) where a restart left one;
    returns its best epoch."""
    import ray
    import ray.train

    t0 = time.perf_counter()
    rank, workers = ctx.get_world_rank(), int(config["workers"])
    model, side = ray.get(fit["model"]), ray.get(fit["side"])
    if epochs is not None:
        model.epochs = epochs
    if fit["parts"]:
        if getattr(model, "user_factors_", None) is None:  # the driver drew none: the same numbers here
            model._draw_factors(side.n_users, side.n_items, np.random.default_rng(fit["parts"]["init"]))
        if model.user_bias_ is None:  # (the driver sent none: :func:`_shipped`)
            model.user_bias_, model.item_bias_ = np.zeros(side.n_users, np.float32), np.zeros(side.n_items, np.float32)
        mine, val = _parts_shard(fit["parts"], rank, workers)
    else:
        mine = _shard_arrays(ray.train.get_dataset_shard(fit["dataset"]))
        va = np.arange(rank, len(side.ratings), workers)  # this worker's share of the validation ratings
        val = (side.users[va], side.items[va], side.ratings[va])
    n_train, n_local, n_val = int(fit["n_train"]), len(mine["r"]), int(fit["n_val"])
    if n_local == 0:
        raise ModelError(f"Ray worker {rank}: its shard of the training ratings is empty")
    batch = max(1, int(model.batch_size) // workers)
    steps = max(1, -(-n_train // (batch * workers)))  # the same on every worker: as many as locally

    tracker = EpochTracker(model, side, range(n_val))  # (the sizes only: the workers sum the errors)
    start = 0
    if saved is not None:
        model._restore({k[6:]: v for k, v in saved.items() if k.startswith("model:")})
        start = int(saved["epoch"]) + 1
        t0 -= float(saved.get("seconds", 0.0))
        _restore_tracker(tracker, saved)
        if rank == 0:
            logging.getLogger(__name__).info("train: resuming from the checkpoint of epoch %d", start)
    with strategy.scope():
        opt = adam(tf, model)
        step, state, opt, variables = _make_step(tf, model, side, n_train, loss_scale=1.0 / workers, optimizer=opt)
        if saved is not None and any(k.startswith("opt:") for k in saved):
            opt.build(variables)
            for i, v in enumerate(opt.variables):
                v.assign(saved[f"opt:{i}"])

    u_t, i_t, r_t, w_t = (tf.constant(mine[k]) for k in ("u", "i", "r", "w"))

    @tf.function
    def run_steps(idx):
        # the steps in one graph (as locally): each a batch of this worker's shard, the
        # gradients summed across workers inside strategy.run
        sse = tf.constant(0.0)
        for b in tf.range(tf.shape(idx)[0]):
            k = idx[b]
            part = strategy.run(step, args=(tf.gather(u_t, k), tf.gather(i_t, k), tf.gather(r_t, k),
                                             tf.gather(w_t, k)))
            sse += strategy.reduce(tf.distribute.ReduceOp.SUM, part, axis=None)
        return sse

    @tf.function
    def all_sum(x):  # one number summed over the workers (a collective, as the gradients are)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda v: v, args=(x,)), axis=None)

    def validation_sse() -> float | None:
        """The validation squared error: each worker predicts its share, the shares summed."""
        if not n_val:
            return None
        pred = model._predict_idx(val[0], val[1]) if len(val[2]) else np.zeros(0)
        local = float(np.sum((val[2].astype(np.float64) - pred) ** 2))
        return float(all_sum(tf.constant(local, tf.float64)))

    report = functools.partial(_report, ctx, j, done, tracker, model, opt, restarts)
    # tests: the last worker dies in epoch 1 of the first fit (ray_worker) or of fit j (ray_worker_fitJ)
    kill_worker = config.get("failpoint") in (("ray_worker", "ray_worker_fit0") if j == 0 else (f"ray_worker_fit{j}",))
    epoch = start - 1
    for epoch in range(start, model.epochs):
        perm = np.random.default_rng([int(fit["seed"]), epoch, rank]).permutation(n_local)
        idx = perm[np.arange(steps * batch) % n_local].reshape(steps, batch)
        if kill_worker and restarts == 0 and epoch == 1:
            half = steps // 2  # tests: the last worker dies mid-epoch (once: not after a restart)
            sse = float(run_steps(tf.constant(idx[:half])))
            if rank == workers - 1:
                os._exit(1)
            sse += float(run_steps(tf.constant(idx[half:])))
        elif config.get("failpoint") == "ray_driver" and restarts == 0 and epoch == 2 and rank == 0 and j == 0:
            import signal  # tests: the command dies mid-fit, once Ray Train has recorded a checkpoint

            snapshot = Path(str(config["run_dir"])) / "checkpoint_manager_snapshot.json"
            for _ in range(300):
                if snapshot.exists():
                    break
                time.sleep(0.1)
            os.kill(int(config["driver_pid"]), signal.SIGKILL)
            time.sleep(60)
            sse = 0.0
        else:
            sse = float(run_steps(tf.constant(idx)))
        _pull(model, *state)
        # the squared error of steps x batch x workers ratings: scaled to one pass over n_train
        stop = tracker.end_epoch(epoch, sse * n_train / (steps * batch * workers), n_train, validation_sse())
        if stop or epoch + 1 == model.epochs:
            break
        report(epoch, time.perf_counter() - t0, final=False)
    tracker.finish()  # the best state back in the model
    if fit["parts"]:  # viewers and movies without training ratings: no random rows
        model._zero_rows(*fit["parts"]["zero"])
        if fit["parts"]["unit"] != 1.0:  # a wide scale fitted in units: the parameters on its own
            model._unscale_arrays(fit["parts"]["unit"])
    report(max(epoch, 0), time.perf_counter() - t0, final=True)
    return int(tracker.history.best_epoch)


def _worker_logging(rank: int) -> None:
    """The first worker logs the epochs (forwarded to the driver's terminal); the others
    only warnings."""
    # Ray Train's per-report INFO lines ("Reporting training result", "Checkpoint successfully
    # created") come from loggers named by file path: quiet every ray logger of the worker
    for name in list(logging.root.manager.loggerDict) + ["tensorflow", "absl"]:
        if "ray" in name.split("/") or name.startswith(("ray", "tensorflow", "absl")):
            logging.getLogger(name).setLevel(logging.WARNING)
    lg = logging.getLogger("movierec")
    lg.propagate = False
    if rank == 0 and not lg.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        lg.addHandler(h)
    lg.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def _report(ctx, j: int, done: Path, tracker, model, opt, restarts: int, epoch: int, seconds: float,
            final: bool) -> None:
    """Metrics from every worker, the checkpoint from the first (Ray Train keeps the last two):
    the finished fits' final states (``fit-k.npz``, kept in ``done`` for the later checkpoints)
    and, in a fit, its state (``state.npz``: parameters, Adam's moments, the curve, the best
    state so far)."""
    import ray.train

    hist = tracker.history
    metrics = {"fit": j, "epoch": epoch, "train_rmse": hist.train_rmse[-1],
               "val_rmse": hist.val_rmse[-1] if hist.val_rmse else float("nan")}
    if ctx.get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    arrays = {"epoch": epoch, "fit": j, "final": final, "restarts": restarts, "seconds": seconds,
              "train_rmse": np.array(hist.train_rmse), "val_rmse": np.array(hist.val_rmse),
              "best_epoch": hist.best_epoch, "best": tracker.best, "bad": tracker.bad,
              **{f"model:{k}": v for k, v in model._state().items()}}
    if final:
        np.savez(done / _fitted(j), **arrays)
    d = Path(tempfile.mkdtemp(prefix="movierec-ckpt-"))
    for f in done.glob("fit-*.npz"):
        try:
            os.link(f, d / f.name)  # the worker's copy stays: the checkpoint's is removed once stored
        except OSError:
            shutil.copy(f, d / f.name)
    if not final:
        arrays.update({f"opt:{i}": v.numpy() for i, v in enumerate(opt.variables)})
        if tracker.best_state is not None:
            arrays.update({f"best:{k}": v for k, v in tracker.best_state.items()})
        np.savez(d / _CKPT, **arrays)
    # uploaded while the next epoch runs (the local copy removed once it is stored)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(d)),
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                     delete_local_checkpoint_after_upload=True)


def _restore_tracker(tracker, saved: dict) -> None:
    h = tracker.history
    h.train_rmse, h.val_rmse = [float(x) for x in saved["train_rmse"]], [float(x) for x in saved["val_rmse"]]
    h.best_epoch, tracker.best, tracker.bad = int(saved["best_epoch"]), float(saved["best"]), int(saved["bad"])
    best = {k[5:]: v for k, v in saved.items() if k.startswith("best:")}
    tracker.best_state = best or None
    tracker.progress.done = len(h.train_rmse)
