"""Sentiment on Ray (``engine.kind: ray``): the texts that miss the score cache are scored by
a pool of ``engine.workers`` Ray actors, each loading its scorer once for the whole run, and
their languages are detected by Ray tasks (:func:`detect_on_ray`), not in the driver.

The stage hands the misses over a window at a time (``engine.window`` texts; the score cache
is saved after each, so a killed run resumes from the last saved window). The actors outlive
the windows: they are started at the first window and kept while the stage's Ray session
lasts (:func:`movierec.engine.hold`), so a run of many windows loads the model once per actor,
not once per window (before: a Ray Data pass per window, 13-17 s of start-up and model
loading each). One pool is alive at a time: where languages are routed to other models, the
route that scores next takes the CPUs of the one before (its actors stopped), so pools
never wait on each other. Each actor call scores one chunk of ``sentiment.checkpoint_every`` texts, the
chunks a local run scores (the int8 model's activation scale is set per batch, so only the
same chunks give the same scores).

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

from movierec.config import EngineConfig, SentimentConfig
from movierec.engine import session
from movierec.progress import Progress
from movierec.sentiment import scorers
from movierec.sentiment.ray_texts import RemoteTexts

log = logging.getLogger(__name__)

#: the one pool of scoring actors alive in this process: its owner (a route's scorer), its Ray
#: job and its actors (routes with other models take their turn, so that two pools never wait
#: on each other's CPUs)
_live: dict = {}


class _ScoreActor:
    """One scorer per actor, loaded once; scores and features (float16) per chunk of texts."""

    def __init__(self, spec: SentimentConfig, downloads: bool, threads: int) -> None:
        # as many compute threads as the actor has CPUs (every core each: actors fight for them)
        os.environ["MOVIEREC_THREADS"] = str(threads)
        scorers.DOWNLOADS_ALLOWED = downloads
        self.scorer = scorers.load_scorer(spec)

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        s, f = scorers.score_with_features(self.scorer, texts)
        return np.asarray(s, np.float32), (None if f is None else np.asarray(f, np.float16))

    def score_chunk(self, size: int, places: list, *texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`score` of a chunk held in the object store in pieces (fetched by Ray)."""
        from movierec.sentiment.ray_texts import assemble

        return self.score(assemble(size, places, *texts))


class RayScorer:
    """A :class:`~movierec.sentiment.scorers.TextScorer` whose texts are scored on Ray by a
    pool of ``engine.workers`` actors (GPU actors when ``engine.gpus_per_worker > 0``), started
    on first use and reused by every later call in the same Ray session. The score cache
    around it is the local one, so a re-run scores nothing and the artifacts are those of a
    local run."""

    #: :meth:`score_features` takes :class:`RemoteTexts` as they are
    reads_remote_texts = True

    def __init__(self, spec: SentimentConfig, engine: EngineConfig, model_id: str) -> None:
        self.spec, self.engine, self.model_id = spec, engine, model_id

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_features(texts)[0]

    def _pool(self, ray) -> list:
        job = ray.get_runtime_context().get_job_id()  # a new Ray session needs new actors
        if _live.get("job") == job and _live["owner"] is self:
            return _live["actors"]
        _stop_pool(ray)  # another route's pool: its CPUs are this pool's
        e = self.engine
        actor = ray.remote(_ScoreActor).options(num_cpus=e.cpus_per_worker, num_gpus=e.gpus_per_worker or 0)
        _live.update(owner=self, job=job, actors=[
            actor.remote(self.spec, scorers.DOWNLOADS_ALLOWED, max(1, int(round(e.cpus_per_worker))))
            for _ in range(e.workers)])
        log.info("sentiment: %d scoring actors started on Ray (each loads its model once for the run)", e.workers)
        return _live["actors"]

    def score_features(self, texts: Sequence[str] | RemoteTexts) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores (and features) of ``texts``: a list, or :class:`RemoteTexts` (its chunks go
        to the actors as references: the texts never pass through this process)."""
        n = len(texts)
        if not n:
            return np.zeros(0, np.float32), None
        e = self.engine
        chunk = self.spec.checkpoint_every
        t0 = time.perf_counter()
        with session(e) as ray:
            from ray.util import ActorPool

            pool = ActorPool(self._pool(ray))
            if isinstance(texts, RemoteTexts):
                if texts.every != chunk:
                    raise ValueError(f"texts in chunks of {texts.every}, scored in chunks of {chunk}")
                calls = [c.args() for c in texts.chunks]
                work = pool.map(lambda a, v: a.score_chunk.remote(*v), calls)
            else:
                texts = list(texts)
                parts = [texts[a:a + chunk] for a in range(0, n, chunk)]
                calls = [(len(part),) for part in parts]
                work = pool.map(lambda a, v: a.score.remote(v), parts)
            scores, feats = [], []
            with Progress(n, "sentiment on Ray", unit="text") as bar:  # chunks in order, as they finish
                for (s, f), call in zip(work, calls):
                    if len(s) != call[0]:
                        raise RuntimeError(f"sentiment on Ray: {len(s)} scores came back for {call[0]} texts")
                    scores.append(s)
                    feats.append(f)
                    bar.update(call[0])
        log.info("sentiment: %d texts scored on Ray by %d actors in %.1fs", n, e.workers, time.perf_counter() - t0)
        out = np.concatenate(scores).astype(np.float32)
        return out, (np.concatenate(feats).astype(np.float32) if all(f is not None for f in feats) else None)


def _stop_pool(ray) -> None:
    """Stop the live pool of this Ray session, if any (one left from an ended session is gone
    with it)."""
    if _live.get("job") == ray.get_runtime_context().get_job_id():
        for a in _live["actors"]:
            ray.kill(a)
    _live.clear()


def _detect_chunk(min_confidence: float, covered: frozenset[str] | None, excluded: frozenset[str], size: int,
                  places: list, *texts: list[str]) -> list[str]:
    """Ray task: the language codes of a chunk held in the object store in pieces."""
    from movierec.sentiment.language import DETECT_CHARS, detect_codes
    from movierec.sentiment.ray_texts import assemble

    return detect_codes([t[:DETECT_CHARS] for t in assemble(size, places, *texts)], min_confidence, covered, excluded)


def detect_on_ray(texts: Sequence[str] | RemoteTexts, engine: EngineConfig, chunk: int, min_confidence: float,
                  covered: frozenset[str] | None, excluded: frozenset[str]) -> np.ndarray:
    """The language of each text (:func:`movierec.sentiment.language.detect`), detected by Ray
    tasks of ``chunk`` texts each (of :class:`RemoteTexts`: its chunks, fetched by the tasks),
    one CPU each, as many at once as the cluster has CPUs free (in the driver, detection is
    one thread). A scoring pool left from earlier in the session is stopped first: its actors
    hold the CPUs the tasks need, and scoring comes after detection. The same codes as a local
    run, in the texts' order."""
    from movierec.sentiment.language import DETECT_CHARS, detect_codes

    n = len(texts)
    t0 = time.perf_counter()
    with session(engine) as ray:
        _stop_pool(ray)
        if isinstance(texts, RemoteTexts):
            task = ray.remote(_detect_chunk).options(num_cpus=1)
            sizes = [c.size for c in texts.chunks]
            refs = [task.remote(min_confidence, covered, excluded, *c.args()) for c in texts.chunks]
        else:
            task = ray.remote(detect_codes).options(num_cpus=1)
            cut = [t[:DETECT_CHARS] for t in texts]  # all that detection reads: no more to the tasks
            chunks = [cut[a:a + chunk] for a in range(0, n, chunk)]
            sizes = [len(c) for c in chunks]
            refs = [task.remote(c, min_confidence, covered, excluded) for c in chunks]
        out = np.empty(n, dtype=object)
        at = 0
        with Progress(n, "languages on Ray", unit="text") as bar:
            for size, ref in zip(sizes, refs):  # in order; the tasks run meanwhile
                got = ray.get(ref)
                if len(got) != size:
                    raise RuntimeError(f"languages on Ray: {len(got)} codes came back for {size} texts")
                out[at:at + size] = got
                at += size
                bar.update(size)
    log.info("sentiment: languages of %d texts detected on Ray by %d tasks in %.1fs", n, len(refs),
             time.perf_counter() - t0)
    return out


def ray_spec(spec: SentimentConfig, engine: EngineConfig) -> SentimentConfig:
    """A route's scorer settings on the engine: GPU actors run torch on ``cuda``."""
    if engine.gpus_per_worker > 0 and spec.device == "cpu":
        return dataclasses.replace(spec, device="cuda")
    return spec
