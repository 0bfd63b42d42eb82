"""Sentiment on Ray (``engine.kind: ray``): the texts that miss the score cache are scored by
Ray Data ``map_batches`` over an actor pool, each actor loading its scorer once.

The Ray session is :func:`movierec.engine.session`; ray itself is imported only inside the
functions here (``pip install 'movierec[ray]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Sequence

import numpy as np
import pandas as pd

from movierec.config import EngineConfig, SentimentConfig
from movierec.engine import blocks, session
from movierec.progress import Progress
from movierec.sentiment import scorers
from movierec.sentiment.cache import features_from_bytes, features_to_bytes

log = logging.getLogger(__name__)


class _ScoreActor:
    """One scorer per actor, loaded once; scores and features (float16 bytes) per batch."""

    def __init__(self, spec: SentimentConfig, downloads: bool, threads: int) -> None:
        # as many compute threads as the actor has CPUs (every core each: actors fight for them)
        os.environ["MOVIEREC_THREADS"] = str(threads)
        scorers.DOWNLOADS_ALLOWED = downloads
        self.scorer = scorers.load_scorer(spec)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        s, f = scorers.score_with_features(self.scorer, batch["text"].tolist())
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
    if engine.gpus_per_worker > 0 and spec.device == "cpu":
        return dataclasses.replace(spec, device="cuda")
    return spec
