"""The score cache: (scorer's model key + text hash) -> score and text features, so that a
re-run on unchanged data does no model work and reads no text."""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from movierec.privacy import key_of_text
from movierec.progress import Progress
from movierec.sentiment.ray_texts import RemoteTexts
from movierec.sentiment.scorers import TextScorer, score_with_features

log = logging.getLogger(__name__)


def cache_keys(text_keys: Sequence[str], model: str) -> np.ndarray:
    """Cache keys: a hash of (model key, text hash); the text itself is never stored."""

    prefix = model.encode() + b"\0"
    return np.array([hashlib.blake2b(prefix + k.encode(), digest_size=16).hexdigest() for k in text_keys],
                    dtype=object)


class CachedScorer:
    """Scores through a cache of (model key + text hash) -> score (and, with ``features``,
    the text's features as float16 bytes).

    The wrapped model is built only when some text misses the cache, and only the texts
    that miss are read (``score_keys_features`` asks ``fetch`` for them), so a re-run on unchanged
    data does no model work and reads no text. ``misses`` counts the texts actually scored.
    A cached score without the features that are now wanted counts as a miss.
    """

    def __init__(self, factory: Callable[[], TextScorer], key: str, cache: pd.DataFrame | None,
                 features: bool = False, checkpoint: Callable[[pd.DataFrame], None] | None = None,
                 checkpoint_every: int = 4096) -> None:
        self.factory, self.model_id, self.features = factory, key, features
        # scored rows are handed to ``checkpoint`` every ``checkpoint_every`` texts, so a run
        # killed while scoring keeps what it scored
        self.checkpoint, self.checkpoint_every = checkpoint, max(1, checkpoint_every)
        self.cache = cache if cache is not None else pd.DataFrame({"key": pd.Series(dtype=object),
                                                                    "sentiment": pd.Series(dtype=np.float32)})
        self.misses = 0
        self.new_rows: list[pd.DataFrame] = []
        self._scorer: TextScorer | None = None

    def _cached(self, text_keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(cache keys, cached scores (NaN: none), cached features, which texts miss)."""
        keys = cache_keys(text_keys, self.model_id)
        cache = self.cache.drop_duplicates("key", keep="last").set_index("key")
        got = cache["sentiment"].reindex(keys).to_numpy(np.float32, copy=True)
        blobs = (cache["features"].reindex(keys).to_numpy(object, copy=True) if self.features and "features" in cache.columns
                 else np.full(len(keys), None, dtype=object))
        missing = np.isnan(got)
        if self.features:
            missing |= np.array([not isinstance(b, bytes) for b in blobs])
        return keys, got, blobs, missing

    def misses_any(self, text_keys: Sequence[str]) -> bool:
        """Whether some of these texts would need the model."""
        return bool(self._cached(text_keys)[3].any())

    def load(self) -> None:
        """Build the wrapped model now (it is built on the first miss otherwise)."""
        if self._scorer is None:
            self._scorer = self.factory()

    def score_keys_features(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]
                            ) -> tuple[np.ndarray, np.ndarray | None]:
        keys, got, blobs, missing = self._cached(text_keys)
        miss = np.flatnonzero(missing)
        if len(miss):
            log.info("sentiment: %d of %d texts not in the cache; scoring them", len(miss), len(keys))
            self.load()
            expect = getattr(fetch, "expect", None)
            if expect is not None:  # a source that reads its inputs: once for all the chunks below
                expect([text_keys[i] for i in miss])
            step = self.checkpoint_every if self.checkpoint is not None else len(miss)
            # one progress over all the misses: the scorer's own progress of each chunk counts
            # toward it, so a bar or a cron log line shows the whole total, not one chunk's
            with Progress(len(miss), "sentiment", unit="texts") as bar:
                for start in range(0, len(miss), step):
                    part = miss[start: start + step]
                    texts = fetch([text_keys[i] for i in part])
                    if isinstance(texts, RemoteTexts) and not getattr(self._scorer, "reads_remote_texts", False):
                        texts = texts.get()  # (a scorer in this process: RayScorer's actors fetch them)
                    with bar.part(len(part)):
                        s, f = score_with_features(self._scorer, texts)
                    got[part] = s
                    row = {"key": keys[part], "sentiment": got[part]}
                    if self.features:  # a scorer without features stores b"" (known: nothing to add)
                        new_blobs = features_to_bytes(np.zeros((len(part), 0)) if f is None else f)
                        blobs[part] = new_blobs
                        row["features"] = new_blobs
                    self.misses += len(part)
                    self.new_rows.append(pd.DataFrame(row))
                    if self.checkpoint is not None and start + step < len(miss):
                        self.checkpoint(self.new_rows[-1])
        else:
            log.info("sentiment: all %d texts found in the cache", len(keys))
        feats = None
        if self.features and len(keys) and all(isinstance(b, bytes) for b in blobs):
            feats = features_from_bytes(blobs, np.float16)  # half the memory; stored as float16 anyway
            feats = feats if feats.shape[1] else None
        return got, feats

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_features(texts)[0]

    def score_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        keys = [key_of_text(t) for t in texts]
        by_key = dict(zip(keys, texts))
        return self.score_keys_features(keys, lambda ks: [by_key[k] for k in ks])

    def updated_cache(self) -> pd.DataFrame:
        """The cache with this run's new rows (a re-scored text keeps only its newest row)."""
        if not self.new_rows:
            return self.cache
        out = pd.concat([self.cache, *self.new_rows], ignore_index=True)
        return out.drop_duplicates("key", keep="last").reset_index(drop=True)


def features_to_bytes(feats: np.ndarray) -> np.ndarray:
    """An n x d matrix -> n float16 rows as bytes (an object array), how features are stored."""
    return np.array([r.tobytes() for r in np.asarray(feats, np.float16)], dtype=object)


def features_from_bytes(blobs: Sequence[bytes], dtype=np.float32) -> np.ndarray:
    """float16 feature rows stored as bytes -> an n x d matrix (d = 0 for b"")."""
    if not len(blobs):
        return np.zeros((0, 0), dtype)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1).astype(dtype)
