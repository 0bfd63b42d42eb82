"""The score cache when it holds more than the run reads: `movierec sentiment --force` on a
workdir whose cache also holds many other texts' rows (earlier years' reviews: the plan's
"score in yearly increments"), this checkout against an older one.

    python benchmarks/score_cache.py --before COMMIT [--reviews 20000] [--extra 2000000]
        [--dims 384] [--repeats 3]

Synthetic reviews (``ray_sentiment_memory.make_data``, one CSV file) are ingested, cleaned
and scored once by this checkout, with a tiny BERT classifier saved in a temporary folder
and ``sentiment.text_features: true`` (the default). Then ``--extra`` rows of other texts
are added to the cache's file (random hashes, scores and ``--dims`` float16 features each:
all-MiniLM-L6-v2's 384 by default), so that the cache holds far more than this run's texts.
Each repeat runs `movierec sentiment --force` of each checkout in a fresh process, in turn,
on the local engine (every text is in the cache: no model work, no text read); reports the
command's wall time and the driver's peak (VmHWM), checks that both scored nothing and wrote
the same scores. Results: benchmarks/results/score_cache.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from _bench_common import RESULTS, checkouts, machine, write_results
from ray_driver_memory import run
from ray_sentiment_memory import make_data, tiny_model


def inflate(cache: Path, extra: int, dims: int, seed: int = 0) -> int:
    """Add ``extra`` rows of other texts to the cache's file (row groups of 65,536 rows, as the
    cache writes them), a block at a time. Returns the file's rows."""
    rng = np.random.default_rng(seed)
    old = pq.read_table(cache)
    schema = old.schema.remove_metadata()
    tmp = cache.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as w:
        w.write_table(old.cast(schema), row_group_size=65536)
        for a in range(0, extra, 65536):
            n = min(65536, extra - a)
            keys = [r.tobytes().hex() for r in np.frombuffer(rng.bytes(16 * n), np.uint8).reshape(n, 16)]
            cols = {"key": pa.array(keys, pa.string()),
                    "sentiment": pa.array(rng.uniform(-1, 1, n).astype(np.float32)),
                    "features": pa.array([r.tobytes() for r in rng.standard_normal((n, dims)).astype(np.float16)],
                                         pa.binary())}
            w.write_table(pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)).cast(f.type) for f in schema},
                                   schema=schema), row_group_size=65536)
    os.replace(tmp, cache)
    return pq.ParquetFile(cache).metadata.num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--reviews", type=int, default=20_000)
    ap.add_argument("--extra", type=int, default=2_000_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="movierec-scorecache-"))
    got: dict[str, list[tuple[float, float]]] = {}
    try:
        data = tmp / "data"
        make_data(data, a.reviews, 1, 300)
        shutil.move(data / "reviews" / "part-00000.csv", data / "reviews.csv")
        model = tiny_model(tmp / "tiny-model")
        work = tmp / "work"
        cfg = tmp / "c.yaml"
        cfg.write_text(f"workdir: {work}\ndata:\n  dir: {data}\nsplit:\n  method: random\n"
                       f"sentiment:\n  model: {model}\n  text_features: true\nsocial:\n  enabled: false\n")
        for stage in ("ingest", "clean", "sentiment"):
            run(None, ["-q", stage, "--config", str(cfg)])
        cache = work / "cache" / "sentiment.parquet"
        mine = pq.ParquetFile(cache).metadata.num_rows
        rows = inflate(cache, a.extra, a.dims)
        size = cache.stat().st_size / 2**20
        print(f"{a.reviews:,} reviews; the cache holds {rows:,} rows ({mine:,} of this run's texts), {size:.0f} MB",
              flush=True)
        scores = {}
        with checkouts(a.before, tmp / "trees") as sites:
            for _ in range(a.repeats):
                for label, src in sites.items():
                    wall, peak = run(src, ["-q", "sentiment", "--force", "--config", str(cfg)])
                    m = json.loads((work / "manifests" / "sentiment.json").read_text())
                    assert m["texts_scored_by_model"] == 0, m
                    assert pq.ParquetFile(cache).metadata.num_rows == rows  # nothing added, nothing lost
                    scores[label] = pd.read_parquet(work / "artifacts" / "review_sentiment.parquet")
                    got.setdefault(label, []).append((wall, peak))
                    print(f"  {label:>22}: sentiment {wall:6.1f} s, driver {peak:.2f} GB", flush=True)
        first, *others = scores.values()
        for other in others:
            pd.testing.assert_frame_equal(first, other)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = RESULTS / "score_cache.md"
    lines = ["# The score cache when it holds more than the run reads", "",
             f"Machine: {machine()}  ",
             f"Command: `python benchmarks/score_cache.py --before {a.before} --reviews {a.reviews} --extra {a.extra} "
             f"--dims {a.dims} --repeats {a.repeats}`  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"{a.reviews:,} reviews in one file, scored once; the cache's file then holds {rows:,} rows "
             f"({mine:,} of this run's texts, the rest other texts' with {a.dims} float16 features each: {size:.0f} MB). "
             "`movierec sentiment --force` (local engine; every text cached: no model work, no text read) in a "
             "fresh process, the checkouts in turn; medians (all runs listed); both wrote the same scores.", "",
             "| checkout | `sentiment` wall s | driver peak GB | runs (s / GB) |", "|---|---|---|---|"]
    for label, rs in got.items():
        runs = ", ".join(f"{w:.1f} / {p:.2f}" for w, p in rs)
        lines.append(f"| {label} | {statistics.median(w for w, _ in rs):.1f} | "
                     f"{statistics.median(p for _, p in rs):.2f} | {runs} |")
    write_results(out, lines)
    print(out.read_text())


if __name__ == "__main__":
    main()
