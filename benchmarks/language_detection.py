"""Language detection in the driver against Ray tasks (the sentiment stage on engine.kind: ray).

    python benchmarks/language_detection.py [--repeat 14]

The demo's distinct review texts, each repeated ``--repeat`` times (about 1 KB), detected by
:func:`movierec.sentiment.language.detect` in this process and by
:func:`movierec.sentiment.ray_scorer.detect_on_ray` on a local Ray started for the run (``engine.workers: 2``: the machine's cores, at least 3
CPUs; tasks of
``sentiment.checkpoint_every`` texts): the first call in a Ray session (worker processes start
and load the detector) and a second one. Prints a table; the codes must be equal.
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from _bench_common import ROOT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=14)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from movierec.config import EngineConfig, SentimentConfig
    from movierec.engine import hold
    from movierec.sentiment.language import detect
    from movierec.sentiment.ray_scorer import detect_on_ray

    texts = [t * args.repeat for t in pd.read_csv(ROOT / "data" / "demo" / "reviews.csv")["text"].drop_duplicates()]
    chunk = SentimentConfig().checkpoint_every
    t = time.perf_counter()
    local = detect(texts, 0.2, None)[0]
    rows = [("driver, one thread", time.perf_counter() - t)]
    engine = EngineConfig(kind="ray", workers=2)
    with hold():
        import ray
        for label in ("Ray tasks, first call in the session", "Ray tasks, again"):
            t = time.perf_counter()
            got = detect_on_ray(texts, engine, chunk, 0.2, None, frozenset())
            rows.append((label, time.perf_counter() - t))
            assert (got == local).all(), "Ray's codes differ from the driver's"
        cpus = int(ray.cluster_resources().get("CPU", 0))
    size = sum(map(len, texts)) / len(texts)
    print(f"{len(texts):,} texts of {size:.0f} characters on average; tasks of {chunk} texts; "
          f"a local Ray of {cpus} CPUs; {os.cpu_count()} cores\n")
    print("| where | seconds | texts/s |\n|---|---|---|")
    for label, sec in rows:
        print(f"| {label} | {sec:.1f} | {len(texts) / sec:,.0f} |")


if __name__ == "__main__":
    main()
