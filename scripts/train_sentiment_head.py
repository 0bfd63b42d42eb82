"""Train the sentiment head shipped with movierec, from rt-polarity (research data).

The head is a logistic layer over the mean-pooled, normalised all-MiniLM-L6-v2
embedding (the same Encoder the `embedded` scorer uses). The data stays outside the
project; only the weights (a few KB) are written to src/movierec/resources.

    python scripts/train_sentiment_head.py --data ../shared/datasets/rt-polarity

Prints 10-fold cross-validated accuracy for each regularisation strength tried.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def read_rt_polarity(folder: Path) -> tuple[list[str], np.ndarray]:
    """rt-polarity is Latin-1 and holds 0x85 bytes: split the bytes on b"\\n" only."""
    texts, labels = [], []
    for name, y in (("rt-polarity.pos", 1), ("rt-polarity.neg", 0)):
        for line in (folder / name).read_bytes().split(b"\n"):
            t = line.decode("latin-1").strip()
            if t:
                texts.append(t)
                labels.append(y)
    return texts, np.array(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/rt-polarity", type=Path)
    ap.add_argument("--out", default=Path(__file__).resolve().parents[1] / "src/movierec/resources/sentiment_head.npz", type=Path)
    ap.add_argument("--cache", default=Path("/tmp/rt_polarity_minilm.npy"), type=Path)
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from movierec.stages.sentiment import Encoder, embedded_model_path

    texts, y = read_rt_polarity(args.data)
    if args.cache.exists() and np.load(args.cache).shape[0] == len(texts):
        emb = np.load(args.cache)
    else:
        t0 = time.perf_counter()
        emb = Encoder(embedded_model_path()).encode(texts, batch_size=64)
        print(f"embedded {len(texts)} sentences in {time.perf_counter() - t0:.1f}s")
        np.save(args.cache, emb)
    cv = StratifiedKFold(n_splits=10, shuffle=True, random_state=0)
    best = (0.0, None)
    for c in (0.5, 1.0, 2.0, 4.0, 8.0):
        acc = cross_val_score(LogisticRegression(C=c, max_iter=2000), emb, y, cv=cv).mean()
        print(f"C={c:<4}  10-fold CV accuracy {acc:.4f}")
        best = max(best, (acc, c), key=lambda t: t[0])
    acc, c = best
    clf = LogisticRegression(C=c, max_iter=2000).fit(emb, y)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        coef=clf.coef_.astype(np.float32),
        intercept=clf.intercept_.astype(np.float32),
        version=np.array("rt-polarity-logreg-1"),
        cv_accuracy=np.array(acc),
    )
    print(json.dumps({"head": str(args.out), "C": c, "cv_accuracy": round(float(acc), 4), "n": len(y)}))


if __name__ == "__main__":
    main()
