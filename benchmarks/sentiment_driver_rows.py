"""What the sentiment stage holds per review in the driver, with text features on (the
default) and off: the stage's function (`movierec.stages.sentiment.sentiment`, with the
language routing and the score cache of a run) in a fresh process per size, its peak RSS.

    python benchmarks/sentiment_driver_rows.py [--reviews 100000 400000] [--before COMMIT]

In-process, with stubs where the stage meets the model and the texts, so that what is left
is what the driver holds per review: the reviews' rows (hashed, as artifacts hold them), a
scorer that returns a score and a 384-dimension embedding per text at once (the shipped
encoder's size), languages detected as "en" at once, and a text source that holds no text
(as on Ray, where the texts stay in Ray's object store). Every text is distinct and missing
from an empty cache (a first run); its checkpoints are written to a folder and folded into
the cache file at the end, as the stage does. The figure is the growth of the peak from the
smallest size to the largest, per review. Results: benchmarks/results/sentiment_driver_rows.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import RESULTS, ROOT, checkouts, machine, write_results

_CHILD = r"""
import json, os, sys, time, dataclasses, resource
import numpy as np, pandas as pd
from pathlib import Path
n, features, folder = int(sys.argv[1]), sys.argv[2] == "1", Path(sys.argv[3])
rng = np.random.default_rng(0)
hashes = np.char.mod("%016x", rng.integers(0, 2**62, n)).astype(object) + np.char.mod("%016x", rng.integers(0, 2**62, n)).astype(object)
reviews = pd.DataFrame({"review_id": np.arange(n, dtype=np.int64),
                        "user_idx": rng.integers(0, max(1, n // 20), n).astype(np.int32),
                        "movie_idx": rng.integers(0, 1000, n).astype(np.int32),
                        "text_key": pd.array(hashes, dtype="str"),
                        "text_rule": np.full(n, np.nan, np.float32), "rating": np.full(n, np.nan, np.float32)})
reviews.to_parquet(folder / "reviews.parquet", index=False)
del hashes, reviews
import movierec.sentiment.routing as routing
import movierec.sentiment.language as language
from movierec.config import Config
from movierec.sentiment.cache import ScoreCache, merge
from movierec.sentiment.routing import Router
from movierec.stages.sentiment import sentiment

class Stub:
    model_id = "stub"
    def score(self, texts):
        return np.zeros(len(texts), np.float32)
    def score_features(self, texts):
        return np.zeros(len(texts), np.float32), (np.ones((len(texts), 384), np.float32) if features else None)

class Texts:  # holds no text: on Ray the texts stay in the object store
    def gather(self, keys):
        pass
    def texts(self, keys):
        return ["a text"] * len(keys)

routing.load_scorer = lambda spec: Stub()
language.detect = lambda texts, *a, **k: (np.full(len(texts), "en", dtype=object), None)
cfg = dataclasses.replace(Config().sentiment, text_features=features, detect_language=True)
parts = folder / "parts"
parts.mkdir()

def checkpoint(rows):
    rows.to_parquet(parts / f"part-{time.time_ns()}.parquet", index=False)

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

try:  # Arrow's pool as the stage sets it (a checkout before it: the default)
    import pyarrow as pa
    from movierec._memory import returning_pool
    pa.set_memory_pool(returning_pool())
except ImportError:
    pass
t0 = time.perf_counter()
reviews = pd.read_parquet(folder / "reviews.parquet")
router = Router(cfg, ScoreCache(), checkpoint=checkpoint)
res = sentiment(reviews, None, lambda: router, cfg, gatherer=Texts())
merge(folder / "sentiment.parquet", sorted(parts.glob("*.parquet")), router.new_rows())
res.reviews.to_parquet(folder / "review_sentiment.parquet", index=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "peak": peak(), "rows": len(res.reviews)}))
"""


def measure(src: Path | None, n: int, features: bool) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    with tempfile.TemporaryDirectory(prefix="movierec-sentrows-") as d:
        r = subprocess.run([sys.executable, "-c", _CHILD, str(n), "1" if features else "0", d], capture_output=True,
                           text=True, env=env)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reviews", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--before", help="a commit to measure beside this checkout")
    a = ap.parse_args()
    rows = []
    with checkouts(a.before, Path(tempfile.mkdtemp(prefix="movierec-sentrows-trees-"))) as sites:
        for label, src in sites.items():
            for features in (True, False):
                got = {n: measure(src, n, features) for n in a.reviews}
                lo, hi = min(a.reviews), max(a.reviews)
                per = (got[hi]["peak"] - got[lo]["peak"]) / (hi - lo)
                rows.append((label, features, got, per))
                print(f"{label:>22} features {'on ' if features else 'off'}: "
                      + ", ".join(f"{n:,}: {g['peak'] / 2**30:.2f} GB {g['seconds']:.1f} s" for n, g in got.items())
                      + f" -> {per:,.0f} bytes a review", flush=True)
    sizes = sorted(a.reviews)
    lines = ["# What the sentiment stage's driver holds per review", "",
             f"Machine: {machine()}  ",
             f"Command: `python benchmarks/sentiment_driver_rows.py --reviews {' '.join(map(str, a.reviews))}"
             + (f" --before {a.before}" if a.before else "") + "`  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
             "In-process figures (labelled as such): the stage's function in a fresh process per size, with a stub "
             "scorer (a score and a 384-dimension embedding per text), languages stubbed as `en`, and a text source "
             "holding no text (as on Ray); a first run (empty cache, every text distinct), checkpoints folded into "
             "the cache file at the end. Peak RSS of the process (`ru_maxrss`).", "",
             "| checkout | text features | " + " | ".join(f"{n:,} reviews: peak GB (s)" for n in sizes)
             + " | bytes a review (growth of the peak) |",
             "|---|---|" + "---|" * len(sizes) + "---|"]
    for label, features, got, per in rows:
        lines.append(f"| {label} | {'on' if features else 'off'} | "
                     + " | ".join(f"{got[n]['peak'] / 2**30:.2f} ({got[n]['seconds']:.1f})" for n in sizes)
                     + f" | {per:,.0f} |")
    out = RESULTS / "sentiment_driver_rows.md"
    write_results(out, lines)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
