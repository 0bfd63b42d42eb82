"""sentiment stage: score review texts (and social message texts), each distinct text once,
through the score cache and the language routing of :mod:`movierec.sentiment`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from movierec._memory import returning_pool
from movierec.config import SentimentConfig
from movierec.errors import ConfigError
from movierec.privacy import key_of_text
from movierec.sentiment.cache import bytes_array
from movierec.sentiment.routing import Router, describe_routing, log_routing
from movierec.sentiment.scorers import TextScorer, label_scores
from movierec.sentiment.signal import rule_scores

if TYPE_CHECKING:
    from movierec.sentiment.ray_gather import TextGatherer

log = logging.getLogger(__name__)


@dataclass
class SentimentResult:
    reviews: pd.DataFrame | None
    messages: pd.DataFrame | None
    texts_scored: int
    routing: dict | None = None  # languages, scorers and unscored texts (distinct texts)


def cap_texts(texts: list[str], max_chars: int) -> list[str]:
    """Texts cut to their first ``max_chars`` characters (a 600 KB "review" would otherwise
    hold a run for minutes); how many were cut is logged."""
    long = sum(len(t) > max_chars for t in texts)
    if long:
        log.warning("sentiment: %d texts longer than sentiment.max_chars (%d characters) are scored on their "
                    "first %d", long, max_chars, max_chars)
        return [t[:max_chars] for t in texts]
    return texts


def _keys_and_texts(df: pd.DataFrame, known: dict[bytes, str]):
    """The rows' text hashes, an Arrow string array (computed from ``text`` when the table has
    texts, noted in ``known``), and their rule scores (:mod:`movierec.sentiment.signal`: NaN
    where a model reads the text; from ``text_rule`` where the table holds hashes instead of
    texts)."""
    import pyarrow as pa

    if "text" in df.columns:
        texts = df["text"].fillna("").astype(str).to_numpy()
        keys = [key_of_text(t) for t in texts]
        known.update(zip((k.encode() for k in keys), texts))
        return pa.array(keys, pa.large_string()), rule_scores(texts)
    rules = (df["text_rule"].to_numpy(np.float32) if "text_rule" in df.columns
             else np.full(len(df), np.nan, np.float32))
    keys = pa.array(df["text_key"].fillna("").astype(str))  # (large: 100M hashes are 3.2 GB of text)
    return (keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys).cast(pa.large_string()), rules


def distinct_keys(keys) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of text hashes (an Arrow string array), the uniques in the order they
    first come as an ``S`` array: hashed in Arrow, no Python object per text (a row per review
    is what the stage holds; 100M reviews)."""
    import pyarrow.compute as pc

    # (in a pool that gives its memory back: the default one, mimalloc, keeps the hash table's
    # pages, about 0.2 KB a text, for the rest of the stage)
    enc = pc.dictionary_encode(keys, memory_pool=returning_pool())
    return enc.indices.to_numpy().astype(np.int64, copy=False), bytes_array(enc.dictionary)


def sentiment(
    reviews: pd.DataFrame | None,
    social: pd.DataFrame | None,
    scorer_factory: Callable[[], TextScorer],
    cfg: SentimentConfig,
    fetch: Callable[[set[str]], dict[str, str]] | None = None,
    gatherer: TextGatherer | None = None,
) -> SentimentResult:
    """Score review texts and social message texts, each distinct text once.

    Tables carry either ``text`` or ``text_key`` (the hash artifacts hold instead of the
    text); texts a scorer needs and the tables lack come from ``fetch(keys) -> {key: text}``,
    or on Ray from ``gatherer`` (:class:`~movierec.sentiment.ray_gather.TextGatherer`: the
    texts stay in Ray's object store, read by the tasks and actors that use them).
    Returns tables ``review_id, user_idx, movie_idx, sentiment, sentiment_label`` and
    ``user_idx, friend_idx, sentiment, sentiment_label`` (only ties with a message). With a
    :class:`Router` (the stage's scorer), reviews carry their ``language`` and a text in a
    language no scorer covers has no row: it has no score, so nothing downstream reads one.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    known: dict[bytes, str] = {}
    parts, rule_parts = [], []
    n_rev = 0
    if reviews is not None and len(reviews):
        keys, rules = _keys_and_texts(reviews, known)
        parts.append(keys)
        rule_parts.append(rules)
        n_rev = len(reviews)
    msgs = None
    if social is not None and len(social) and ({"text", "text_key"} & set(social.columns)):
        mk, mr = _keys_and_texts(social, known)
        has = pc.not_equal(mk, "").to_numpy(zero_copy_only=False)
        msgs = social[has]
        if len(msgs):
            parts.append(mk.filter(pa.array(has)))
            rule_parts.append(mr[has])
    if not parts:
        return SentimentResult(None, None, 0)
    codes, uniques = distinct_keys(pa.concat_arrays(parts))
    del parts
    rules = np.full(len(uniques), np.nan, np.float32)
    rules[codes] = np.concatenate(rule_parts)  # one text, one rule: the same for each of its rows
    del rule_parts

    # texts a scorer announced it will ask for, chunk by chunk (in order: a gatherer on Ray
    # chunks them as the scorer will); keys are bytes (``S`` arrays), as ``uniques``
    pending: list[np.ndarray] = []
    remote = gatherer if gatherer is not None and not known else None

    def expect(keys: np.ndarray) -> None:
        keys = np.asarray(keys)
        pending.append(keys if not known else keys[[k not in known for k in keys]])

    def announced() -> np.ndarray:
        many = len(pending) > 1  # (several scorers' texts: each once)
        out = pd.unique(np.concatenate(pending)) if many else pending[0]
        pending.clear()
        return out

    def texts_of(keys: np.ndarray):
        if remote is not None:  # on Ray: the texts stay in the object store (RemoteTexts)
            if pending:
                remote.gather(announced())
            return remote.texts(keys)
        missing = {bytes(k) for k in keys if k not in known}
        if missing:
            if fetch is None:
                raise ConfigError("sentiment: texts are needed but no source of texts was given")
            # with the texts announced: one read of the inputs for every chunk, not one a chunk
            if pending:
                missing.update(bytes(k) for k in announced())
            got = fetch({k.decode() for k in missing})
            known.update((k.encode(), t) for k, t in got.items())
        return cap_texts([known[k] for k in keys], cfg.max_chars)

    texts_of.expect = expect  # type: ignore[attr-defined]

    scorer = scorer_factory()
    router = scorer if isinstance(scorer, Router) else Router.single(cfg, scorer)
    got = router.score_keys_ruled(uniques, rules, fetch=texts_of)  # texts without words: no model
    scores, blobs, langs = got.scores, got.features, got.languages
    routing = describe_routing(got.languages, got.routes) if router.detect else None
    if routing is not None:
        log_routing(routing)
    scores = np.asarray(scores, np.float32)[codes]
    langs = np.asarray(langs, dtype=object)[codes]
    has_feats = bool(cfg.text_features and any(len(b) for b in blobs))
    blobs = blobs[codes] if has_feats else None
    rv = ms = None
    if n_rev:
        s = scores[:n_rev]
        rv = pd.DataFrame({
            "review_id": reviews["review_id"].to_numpy(),
            "user_idx": reviews["user_idx"].to_numpy(),
            "movie_idx": reviews["movie_idx"].to_numpy(),
            "sentiment": s,
            "sentiment_label": label_scores(s, cfg.neutral_band),
        })
        if routing is not None:
            rv["language"] = langs[:n_rev].astype(str)
        if has_feats:
            # each review's text features (float16 bytes; b"" for a text another scorer read):
            # what the text -> rating map reads; each distinct text encoded once
            rv["features"] = blobs[:n_rev]
        if np.isnan(s).any():  # a text no scorer covers has no score
            rv = rv[~np.isnan(s)].reset_index(drop=True)
    if msgs is not None and len(msgs):
        s = scores[n_rev:]
        ms = pd.DataFrame({
            "user_idx": msgs["user_idx"].to_numpy(),
            "friend_idx": msgs["friend_idx"].to_numpy(),
            "sentiment": s,
            "sentiment_label": label_scores(s, cfg.neutral_band),
        })
        ms = ms[~np.isnan(s)].reset_index(drop=True)
    return SentimentResult(rv, ms, len(uniques), routing)
