"""What one Adam step sends and costs, with the trust (social) term on: dense vs batch rows.

    python benchmarks/adam_sparse.py [--before COMMIT] [--users 20000] [--degree 20]

Under ``engine.kind: ray`` every step's gradients are summed across the workers: a dense
gradient is all-reduced whole, a ``tf.IndexedSlices`` one is all-gathered (its rows and their
indices). Before, the trust term read every user's neighbours' mean each step (a sparse
product over the whole table), so the user-factor gradient was dense whatever the batch.
Now it reads the batch users' neighbours only (``_adam._csr_rows``; padded to the longest
neighbourhood under a distribution strategy, as the Ray workers run it).

For each checkout (this one, and ``--before`` in a git worktree, run in its own process):
the bytes of one step's gradients per variable (as a worker on 2 workers sends them) and the
seconds of a local Adam epoch (``model.batch_size`` 1024, the mean of 2, traced first).
Synthetic data: ``--users`` viewers, 20 ratings each over ``users / 10`` movies, each viewer
trusting ``--degree`` others. Writes benchmarks/results/adam_sparse.md.
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


def child(users: int, degree: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import scipy.sparse as sp
    import tensorflow as tf

    from movierec.models._adam import _make_step, adam
    from movierec.models.mf import MatrixFactorization, TrainData

    rng = np.random.default_rng(0)
    movies = max(100, users // 10)
    u = np.repeat(np.arange(users), 20)
    i = rng.integers(0, movies, len(u))
    r = np.clip(np.round(3.5 + rng.normal(0, 1, len(u))), 1, 5).astype(np.float32)
    nb = sp.csr_matrix((np.full(users * degree, 1.0 / degree, np.float32),
                        (np.repeat(np.arange(users), degree), rng.integers(0, users, users * degree))),
                       shape=(users, users))
    data = TrainData(u, i, r, users, movies, neighbours=nb)
    m = MatrixFactorization(factors=32, optimizer="adam", social_reg=0.05, use_features=False, ranking="rating",
                            batch_size=1024, epochs=1, early_stopping=False, seed=0)
    m._init_state(data, rng)

    class Recorder:
        """An Adam that records what each call is given (a stand-in for the all-reduce)."""

        def __init__(self) -> None:
            self.opt, self.sizes = adam(tf, m), None

        def apply_gradients(self, pairs):
            pairs = list(pairs)
            self.sizes = {v.name.split(":")[0]: (
                ("rows", int(g.indices.shape[0]), int(g.values.numpy().nbytes + g.indices.numpy().nbytes))
                if isinstance(g, tf.IndexedSlices) else ("dense", int(np.prod(g.shape)), int(g.numpy().nbytes)))
                for g, v in pairs}
            return self.opt.apply_gradients(pairs)

    rec = Recorder()
    # as one of 2 Ray workers runs it: half a batch, the loss scaled by 1/2
    step, _, _, _ = _make_step(tf, m, data, len(u), loss_scale=0.5, optimizer=rec)
    b = rng.choice(len(u), 512, replace=False)
    step(tf.constant(u[b]), tf.constant(i[b]), tf.constant(r[b]), tf.ones(len(b)))
    sizes = rec.sizes

    # seconds per local epoch (the graph as fit_adam runs it)
    step, _, _, _ = _make_step(tf, m, data, len(u))
    ut, it, rt, wt = tf.constant(u), tf.constant(i), tf.constant(r), tf.ones(len(u))
    n_batches = -(-len(u) // 1024)

    @tf.function
    def run_epoch(seed):
        perm = tf.random.experimental.stateless_shuffle(tf.range(len(u)), seed=seed)
        sse = tf.constant(0.0)
        for k in tf.range(n_batches):
            idx = perm[k * 1024: (k + 1) * 1024]
            sse += step(tf.gather(ut, idx), tf.gather(it, idx), tf.gather(rt, idx), tf.gather(wt, idx))
        return sse

    run_epoch.get_concrete_function(tf.constant([0, 0], tf.int64))  # traced, not run
    times = []
    for e in range(2):
        t = time.perf_counter()
        run_epoch(tf.constant([1, e], tf.int64))
        times.append(time.perf_counter() - t)
    return {"sizes": sizes, "epoch_seconds": statistics.mean(times), "ratings": len(u)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="an older commit to measure beside this checkout")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--degree", type=int, default=20)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.users, args.degree)))
        return
    results = {}
    with checkouts(args.before, Path(tempfile.mkdtemp(prefix="movierec-adam-sparse-")), ROOT / "src") as sites:
        for name, src in sites.items():
            env = dict(os.environ, PYTHONPATH=str(src))
            out = subprocess.run([sys.executable, __file__, "--child", "--users", str(args.users), "--degree",
                                  str(args.degree)], env=env, capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(name, results[name], flush=True)
    variables = list(next(iter(results.values()))["sizes"])
    doc = ["# One Adam step with the trust term: what a Ray worker sends, and a local epoch", "",
           f"Command: `python benchmarks/adam_sparse.py{' --before ' + args.before if args.before else ''} "
           f"--users {args.users} --degree {args.degree}`  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores", "",
           f"{args.users:,} viewers x 20 ratings, each trusting {args.degree} others; 32 factors, `social_reg` "
           "0.05; one step of a worker of 2 (512 ratings, as under Ray Train). A dense gradient is all-reduced "
           "whole; a row gradient (`tf.IndexedSlices`) is all-gathered: its rows and their indices.", "",
           "| variable | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for v in variables:
        cells = []
        for res in results.values():
            kind, n, nbytes = res["sizes"].get(v, ("-", 0, 0))
            cells.append(f"{kind}, {n:,} {'rows' if kind == 'rows' else 'values'}, {nbytes / 1e6:.2f} MB")
        doc.append(f"| {v} | " + " | ".join(cells) + " |")
    total = {k: sum(s[2] for s in r["sizes"].values()) for k, r in results.items()}
    doc.append("| **all, per step** | " + " | ".join(f"**{total[k] / 1e6:.2f} MB**" for k in results) + " |")
    doc += ["", "Seconds per local Adam epoch (batch 1024, the mean of 2 epochs, the graph traced first):", "",
            "| checkout | seconds | ratings/s |", "|---|---|---|"]
    doc += [f"| {k} | {r['epoch_seconds']:.1f} | {r['ratings'] / r['epoch_seconds']:,.0f} |"
            for k, r in results.items()]
    out = ROOT / "benchmarks" / "results" / "adam_sparse.md"
    out.write_text("\n".join(doc) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
