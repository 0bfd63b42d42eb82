"""The Adam trainer on Ray Train (``model.optimizer: adam`` with ``engine.kind: ray``).

Ray Train's ``TensorflowTrainer`` starts ``engine.workers`` workers under TensorFlow's
``MultiWorkerMirroredStrategy`` (Ray sets each worker's ``TF_CONFIG``). The training ratings
go to the workers as a Ray Dataset: each worker reads only its shard. Every step, each
worker takes a batch of ``batch_size / workers`` ratings of its shard, and the gradients are
summed across workers (the loss scaled by 1 / workers), so one step sees ``batch_size``
ratings as a local step does and an epoch has as many steps. The variables are mirrored:
every worker holds the same parameters after a step, so each computes the same validation
RMSE and all stop together (:class:`~movierec.models._tracking.EpochTracker`, as locally).

After every epoch the first worker saves a checkpoint (parameters, Adam's moments, the
learning curve, the best state so far). A worker that dies is restarted by Ray Train
(``FailureConfig``) and all workers resume from the last checkpoint; when the failures
exceed the limit, the fit raises and no model version is written. The result is the same
numpy state a local fit leaves, so the model saves, loads and serves as any other.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.engine import blocks, session
from movierec.errors import ModelError
from movierec.models._adam import _make_step, _pull, adam
from movierec.models._tracking import EpochTracker, History
from movierec.models.train_data import TrainData

log = logging.getLogger(__name__)

#: how many times Ray Train restarts the worker group after a worker failure
MAX_FAILURES = 3
_CKPT = "state.npz"


def fit_adam_ray(model, data, val_mask: np.ndarray, rng: np.random.Generator, engine):
    """Fit ``model`` (its state initialized) on Ray; returns the :class:`History`."""
    tr = np.flatnonzero(~val_mask)
    va = np.flatnonzero(val_mask)
    ratings = pd.DataFrame({"u": data.users[tr], "i": data.items[tr], "r": data.ratings[tr],
                            "w": np.ones(len(tr), np.float32) if data.weights is None else data.weights[tr]})
    # what every worker needs besides its ratings: the model (its initial state and settings)
    # and the side data (features, neighbours, implicit sets, the validation ratings)
    side = TrainData(data.users[va], data.items[va], data.ratings[va], data.n_users, data.n_items,
                     data.user_features, data.item_features, data.neighbours,
                     data.implicit() if model.implicit else None)
    workers = int(engine.workers)
    # Ray Train splits the dataset into equal shards, dropping the rows past a multiple of the
    # workers: pad with copies of weight 0 (no loss) so that every rating trains
    pad = (-len(ratings)) % workers
    if pad:
        ratings = pd.concat([ratings, ratings.iloc[:pad].assign(w=np.float32(0))], ignore_index=True)
    t0 = time.perf_counter()
    with session(engine) as ray:
        import ray.data
        import ray.train
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.tensorflow import TensorflowTrainer

        ds = ray.data.from_pandas(blocks(ratings, -(-len(ratings) // (workers * 4))))  # 4 blocks a worker
        # this fit's checkpoints, where every worker can write them (the driver reads the last)
        if engine.checkpoint_dir and "://" in engine.checkpoint_dir:
            storage, local_storage = engine.checkpoint_dir.rstrip("/"), None
        else:
            root = Path(engine.checkpoint_dir).expanduser() if engine.checkpoint_dir else Path(tempfile.gettempdir())
            root.mkdir(parents=True, exist_ok=True)
            local_storage = Path(tempfile.mkdtemp(prefix="movierec-ray-train-", dir=root))
            storage = str(local_storage)
        config = {"model": ray.put(model), "side": ray.put(side), "n_train": len(tr), "workers": workers,
                  "seed": int(rng.integers(1 << 31)), "failpoint": os.environ.get("MOVIEREC_FAILPOINT")}
        trainer = TensorflowTrainer(
            _train_loop, train_loop_config=config, datasets={"train": ds},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=engine.gpus_per_worker > 0,
                                         resources_per_worker=_resources(engine)),
            run_config=RunConfig(name=f"movierec-adam-{uuid.uuid4().hex[:8]}", storage_path=storage,
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        try:
            try:
                result = trainer.fit()
            except Exception as exc:  # noqa: BLE001 - Ray wraps the workers' errors in its own types
                raise ModelError(f"Adam on Ray failed (a worker's error, or more than {MAX_FAILURES} restarts): "
                                 f"{str(exc).splitlines()[0][:500]}") from exc
            if result.checkpoint is None:
                raise ModelError("Adam on Ray: training ended without a checkpoint")
            with result.checkpoint.as_directory() as d:
                saved = dict(np.load(Path(d) / _CKPT, allow_pickle=False))
        finally:
            if local_storage is not None:
                shutil.rmtree(local_storage, ignore_errors=True)  # the checkpoints: this fit's only
    if not bool(saved["final"]):
        raise ModelError("Adam on Ray: the last checkpoint is not a finished fit")
    model._restore({k[6:]: v for k, v in saved.items() if k.startswith("model:")})
    hist = History(train_rmse=[float(x) for x in saved["train_rmse"]], val_rmse=[float(x) for x in saved["val_rmse"]],
                   best_epoch=int(saved["best_epoch"]))
    log.info("train: Adam on Ray (%d workers) finished %d epochs in %.1fs%s", workers, len(hist.train_rmse),
             time.perf_counter() - t0, f" (resumed {int(saved['restarts'])} times)" if saved["restarts"] else "")
    return hist


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


def _train_loop(config: dict) -> None:  # runs in each Ray Train worker
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import ray
    import ray.train
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any other TensorFlow op

    ctx = ray.train.get_context()
    rank, workers = ctx.get_world_rank(), int(config["workers"])
    _worker_logging(rank)
    model, side = ray.get(config["model"]), ray.get(config["side"])
    mine = _shard_arrays(ray.train.get_dataset_shard("train"))
    n_train, n_local = int(config["n_train"]), len(mine["r"])
    if n_local == 0:
        raise ModelError(f"Ray worker {rank}: its shard of the training ratings is empty")
    batch = max(1, int(model.batch_size) // workers)
    steps = max(1, -(-n_train // (batch * workers)))  # the same on every worker: as many as locally

    tracker = EpochTracker(model, side, np.arange(len(side.ratings)))
    start, restarts = 0, 0
    saved = _load_checkpoint(ray.train.get_checkpoint())
    if saved is not None:
        model._restore({k[6:]: v for k, v in saved.items() if k.startswith("model:")})
        start, restarts = int(saved["epoch"]) + 1, int(saved["restarts"]) + 1
        _restore_tracker(tracker, saved)
        if rank == 0:
            logging.getLogger(__name__).info("train: resuming from the checkpoint of epoch %d", start)
    with strategy.scope():
        opt = adam(tf, model)
        step, state, opt, variables = _make_step(tf, model, side, n_train, loss_scale=1.0 / workers, optimizer=opt)
        if saved is not None and any(k.startswith("opt:") for k in saved):
            opt.build(variables)
            for j, v in enumerate(opt.variables):
                v.assign(saved[f"opt:{j}"])

    u_t, i_t, r_t, w_t = (tf.constant(mine[k]) for k in ("u", "i", "r", "w"))

    @tf.function
    def run_steps(idx):
        # the steps in one graph (as locally): each a batch of this worker's shard, the
        # gradients summed across workers inside strategy.run
        sse = tf.constant(0.0)
        for b in tf.range(tf.shape(idx)[0]):
            j = idx[b]
            part = strategy.run(step, args=(tf.gather(u_t, j), tf.gather(i_t, j), tf.gather(r_t, j),
                                             tf.gather(w_t, j)))
            sse += strategy.reduce(tf.distribute.ReduceOp.SUM, part, axis=None)
        return sse

    epoch = start - 1
    for epoch in range(start, model.epochs):
        perm = np.random.default_rng([int(config["seed"]), epoch, rank]).permutation(n_local)
        idx = perm[np.arange(steps * batch) % n_local].reshape(steps, batch)
        if config.get("failpoint") == "ray_worker" and restarts == 0 and epoch == 1:
            half = steps // 2  # tests: the last worker dies mid-epoch (once: not after a restart)
            sse = float(run_steps(tf.constant(idx[:half])))
            if rank == workers - 1:
                os._exit(1)
            sse += float(run_steps(tf.constant(idx[half:])))
        else:
            sse = float(run_steps(tf.constant(idx)))
        _pull(model, *state)
        # the squared error of steps x batch x workers ratings: scaled to one pass over n_train
        stop = tracker.end_epoch(epoch, sse * n_train / (steps * batch * workers), n_train)
        if stop or epoch + 1 == model.epochs:
            break
        _report(ctx, epoch, tracker, model, opt, restarts, final=False)
    tracker.finish()  # the best state back in the model
    _report(ctx, epoch, tracker, model, opt, restarts, final=True)


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


def _report(ctx, epoch: int, tracker, model, opt, restarts: int, final: bool) -> None:
    """Metrics from every worker, the checkpoint from the first (Ray Train keeps the last two)."""
    import ray.train

    hist = tracker.history
    metrics = {"epoch": epoch, "train_rmse": hist.train_rmse[-1],
               "val_rmse": hist.val_rmse[-1] if hist.val_rmse else float("nan")}
    if ctx.get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    arrays = {f"model:{k}": v for k, v in model._state().items()}
    arrays.update({f"opt:{j}": v.numpy() for j, v in enumerate(opt.variables)})
    if tracker.best_state is not None and not final:
        arrays.update({f"best:{k}": v for k, v in tracker.best_state.items()})
    arrays.update(epoch=epoch, final=final, restarts=restarts, train_rmse=np.array(hist.train_rmse),
                  val_rmse=np.array(hist.val_rmse), best_epoch=hist.best_epoch, best=tracker.best, bad=tracker.bad)
    d = tempfile.mkdtemp(prefix="movierec-ckpt-")
    np.savez(Path(d) / _CKPT, **arrays)
    # uploaded while the next epoch runs (the local copy removed once it is stored)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                     checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
                     delete_local_checkpoint_after_upload=True)


def _load_checkpoint(ckpt) -> dict | None:
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return dict(np.load(Path(d) / _CKPT, allow_pickle=False))


def _restore_tracker(tracker, saved: dict) -> None:
    h = tracker.history
    h.train_rmse, h.val_rmse = [float(x) for x in saved["train_rmse"]], [float(x) for x in saved["val_rmse"]]
    h.best_epoch, tracker.best, tracker.bad = int(saved["best_epoch"]), float(saved["best"]), int(saved["bad"])
    best = {k[5:]: v for k, v in saved.items() if k.startswith("best:")}
    tracker.best_state = best or None
    tracker.progress.done = len(h.train_rmse)
