"""The driver's memory with engine.kind: ray, against the local engine: partitioned ratings
through `movierec ingest`, then `movierec clean` (ingest cached), each in a fresh process.

    python benchmarks/ray_driver_memory.py --ratings 5000000 20000000 --parts 16 [--before COMMIT]
        [--train [--recommend]] [--engines local ray] [--append]

Synthetic MovieLens-shaped ratings are written as ``--parts`` CSV part files by Ray tasks
(:func:`movierec.data.synthetic.write_synthetic_part`: a range of viewers each). The Ray runs connect to a Ray head this script starts (as to
a cluster: the head's and the workers' memory is not the driver's), with 2 workers. The
driver's peak is its own (``VmHWM``). With ``--before``, that commit (in a git worktree)
runs beside this checkout, on the same data and the same head (a checkout whose Ray tasks
differ from this one's cannot: the head's workers import this checkout's movierec).
``--train``: `movierec train` too (Adam, 1 epoch); ``--recommend``: then `movierec recommend
--all` (every viewer's top 10, a folder of Parquet parts on Ray). ``--append``: keep the rows
already in the results file. Results: benchmarks/results/ray_driver_memory.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import KEEP, RESULTS, ROOT, checkouts, machine

#: the driver's own peak: VmHWM, its address space's high-water mark since exec (ru_maxrss
#: would not do: at exec Linux folds the parent's peak into it, and this script's parent
#: process held the generated ratings)
_PEAK = (
    "import re, sys\n"
    "from movierec.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    "    print('PEAK_RSS_KB', hwm, file=sys.stderr)\n"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_parts(out: Path, n: int, parts: int, address: str) -> int:
    """``n`` synthetic ratings as ``parts`` CSV files under ``out/ratings``, movies.csv beside,
    each part written by a Ray task on the head at ``address`` (a range of viewers each:
    :func:`movierec.data.synthetic.write_synthetic_part`); this process holds none of them."""
    import ray

    from movierec.data.synthetic import write_synthetic_movies, write_synthetic_part

    users, movies = max(2000, n // 144), max(1000, min(27278, n // 700))  # ML-20M's ratings per viewer
    (out / "ratings").mkdir(parents=True)
    write_synthetic_movies(out / "movies.csv", n, users, movies, seed=0)
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        task = ray.remote(write_synthetic_part).options(num_cpus=1)
        refs = [task.remote(str(out / "ratings" / f"part-{k:05d}.csv"), k, parts, n, users, movies, 0)
                for k in range(parts)]
        return int(sum(ray.get(refs)))
    finally:
        ray.shutdown()


def run(src: Path | None, args: list[str]) -> tuple[float, float]:
    """``movierec ARGS`` in a fresh process: (wall seconds, the driver's peak RSS in GB)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"movierec {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    kb = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return wall, kb[-1] / 1024 / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, nargs="+", default=[5_000_000, 20_000_000])
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--before", help="a commit to measure beside this checkout")
    ap.add_argument("--append", action="store_true", help="keep the rows already in the results file")
    ap.add_argument("--train", action="store_true",
                    help="also `movierec train` (Adam, 1 epoch, batch 65536, no features, ranking by rating)")
    ap.add_argument("--recommend", action="store_true",
                    help="with --train: also `movierec recommend --all` (every viewer's top 10, to Parquet)")
    ap.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"],
                    help="which engines to run (e.g. only ray where the local engine would not fit)")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="movierec-raymem-"))
    port = _port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--num-cpus=3",
                             f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                             "--disable-usage-stats", f"--ray-client-server-port={_port()}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    rows: list[tuple] = []
    try:
        if head.wait(timeout=180) != 0:
            raise SystemExit("ray start --head failed")
        address = f"127.0.0.1:{port}"
        with checkouts(a.before, tmp / "trees") as sites:
            for n in a.ratings:
                data = tmp / f"data-{n}"
                n_rows = make_parts(data, n, a.parts, address)
                print(f"{n_rows:,} ratings in {a.parts} parts", flush=True)
                for label, src in sites.items():
                    for engine in a.engines:
                        work = tmp / "work"
                        shutil.rmtree(work, ignore_errors=True)
                        cfg = tmp / "c.yaml"
                        cfg.write_text(
                            f"workdir: {work}\ndata:\n  dir: {data}\n  ratings: ratings\nsplit:\n  method: random\n"
                            "sentiment:\n  enabled: false\nsocial:\n  enabled: false\n"
                            "model:\n  optimizer: adam\n  epochs: 1\n  early_stopping: false\n  batch_size: 65536\n"
                            "  implicit: false\n  use_features: false\n  ranking: rating\n"
                            f"engine:\n  kind: {engine}\n  workers: 2\n" + (f"  address: {address}\n" if engine == "ray"
                                                                          else ""))
                        wi, gi = run(src, ["-q", "ingest", "--config", str(cfg)])
                        wc, gc = run(src, ["-q", "clean", "--config", str(cfg)])
                        wt, gt = run(src, ["-q", "train", "--config", str(cfg)]) if a.train else (None, None)
                        wr, gr = run(src, ["-q", "recommend", "--config", str(cfg), "--all", "--output",
                                           str(work / ("lists" if engine == "ray" else "lists.parquet"))]) \
                            if a.train and a.recommend else (None, None)
                        rows.append((n_rows, label, engine, wi, gi, gi * 2**30 / n_rows, wc, gc, wt, gt, wr, gr))
                        print(f"  {label:>22} {engine:>5}: ingest {wi:6.1f} s {gi:5.2f} GB "
                              f"({gi * 2**30 / n_rows:5.1f} B/rating) | clean {wc:6.1f} s {gc:5.2f} GB"
                              + (f" | train {wt:6.1f} s {gt:5.2f} GB" if a.train else "")
                              + (f" | recommend --all {wr:6.1f} s {gr:5.2f} GB" if wr is not None else ""), flush=True)
                shutil.rmtree(data)
    finally:
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    write(rows, a)


def write(rows, a) -> None:
    out = RESULTS / "ray_driver_memory.md"
    keep, kept_rows = "", []
    if out.exists() and KEEP in out.read_text():
        head, keep = out.read_text().split(KEEP, 1)
        if a.append:  # the data rows of the table already there (after its header and rule)
            kept_rows = [ln + " - | - |" * ((13 - ln.count("|")) // 2)
                         for ln in head.splitlines() if ln.startswith("| ") and ln[2:3].isdigit()]
    lines = [
        "# The driver's memory: engine.kind ray against local, partitioned ratings", "",
        f"Machine: {machine()}  ",
        f"Command: `python benchmarks/ray_driver_memory.py --ratings {' '.join(map(str, a.ratings))} "
        f"--parts {a.parts}" + (f" --before {a.before}" if a.before else "") + (" --train" if a.train else "")
        + (" --recommend" if a.recommend else "")
        + (f" --engines {' '.join(a.engines)}" if a.engines != ["local", "ray"] else "") + (" --append" if a.append else "")
        + "`" + (" (added to the rows above it)" if kept_rows else "") + "  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
        "Each command in a fresh process; the peak is the driver's own (`VmHWM`). Ray: 2 workers on a "
        "Ray head the script started (3 CPUs), as on a cluster. `clean` runs with ingest cached.", "",
        "| ratings | checkout | engine | `ingest` s | driver peak GB | bytes/rating | `clean` s | driver peak GB "
        "| `train` s | driver peak GB | `recommend --all` s | driver peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *kept_rows,
    ]
    for n, label, engine, wi, gi, b, wc, gc, wt, gt, wr, gr in rows:
        train = f" {wt:.1f} | {gt:.2f} |" if wt is not None else " - | - |"
        rec = f" {wr:.1f} | {gr:.2f} |" if wr is not None else " - | - |"
        lines.append(f"| {n:,} | {label} | {engine} | {wi:.1f} | {gi:.2f} | {b:.0f} | {wc:.1f} | {gc:.2f} |{train}{rec}")
    out.write_text("\n".join(lines) + "\n\n" + KEEP + (keep or "\n"))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
