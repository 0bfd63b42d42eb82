"""A new user's first `movierec train` on the demo: seconds per stage, in a fresh process.

    python benchmarks/first_train.py [--before COMMIT] [--rounds 2]

Each round runs `movierec train --config configs/default.yaml` with an empty workdir and an
empty model cache (MOVIEREC_CACHE_DIR: the ONNX export of the encoder counts, as on a new
machine), for this checkout and, with --before, for an older commit (a `git worktree` whose
src/ goes first on PYTHONPATH), alternating. Stage seconds come from the manifests; the wall
time is the whole command. Writes benchmarks/results/first_train.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import ROOT, checkouts

STAGES = ("ingest", "clean", "sentiment", "social", "fuse", "train")


def one_train(src: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="movierec-first-") as tmp:
        env = dict(os.environ, MOVIEREC_CACHE_DIR=f"{tmp}/cache", PYTHONPATH=str(src))
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "movierec", "train", "--config", str(ROOT / "configs" / "default.yaml"),
                        f"workdir={tmp}/work"], check=True, capture_output=True, env=env)
        wall = time.perf_counter() - t
        out = {"wall": wall}
        for s in STAGES:
            m = Path(tmp) / "work" / "manifests" / f"{s}.json"
            out[s] = json.loads(m.read_text()).get("seconds", 0.0) if m.exists() else 0.0
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="an older commit to measure beside this checkout")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with checkouts(args.before, Path(tempfile.mkdtemp(prefix="movierec-before-")), ROOT / "src") as sites:
        runs: dict[str, list[dict]] = {k: [] for k in sites}
        for r in range(args.rounds):
            for label, src in sites.items():
                runs[label].append(one_train(src))
                print(label, {k: round(v, 1) for k, v in runs[label][-1].items()}, flush=True)
    lines = ["# First `movierec train` on the demo (fresh process, empty workdir and model cache)", "",
             f"Command: `python benchmarks/first_train.py{' --before ' + args.before if args.before else ''} "
             f"--rounds {args.rounds}`; median of {args.rounds} rounds, alternating; "
             f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| code | wall s | " + " | ".join(STAGES) + " | sentiment share of wall |",
             "|---" * (len(STAGES) + 3) + "|"]
    for label, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        lines.append(f"| {label} | {med['wall']:.1f} | " + " | ".join(f"{med[s]:.1f}" for s in STAGES)
                     + f" | {med['sentiment'] / med['wall']:.0%} |")
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results" / "first_train.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
