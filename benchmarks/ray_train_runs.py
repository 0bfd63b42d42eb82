"""`movierec train` with Adam on Ray, from ratings in parts or from the driver's table: this
checkout against an older one, each on a Ray head of its own (their workers import their own
code), in turn.

    python benchmarks/ray_train_runs.py --before COMMIT [--ratings 2000000] [--parts 8]
        [--epochs 3] [--repeats 3] [--route parts|driver]

``--route parts`` (default): a model the workers fit from ``ratings_clean``'s parts
(``model.ranking: rating``, no features or implicit sets). ``--route driver``: the same model
with the default ``model.ranking: hybrid`` (a watch ranker fitted on every rating), so the
driver reads ``ratings_clean`` whole and each fit's ratings go to the workers as a Ray
Dataset made from the driver's table.

Synthetic ratings in ``--parts`` CSV parts (written by Ray tasks), ingested and cleaned on
Ray once by this checkout (the artifacts are the same for both: `clean` did not change
between them); then each repeat runs `movierec train` of each checkout in a fresh process
on a fresh copy of that workdir, on a fresh Ray head (2 workers, 3 CPUs) started with that
checkout's code. The holdout fit has early stopping off and ``--epochs`` epochs, so the
refit trains as many. Reports the command's wall time, the fits' time the driver logs
("Adam on Ray ... finished ... in X s", summed where there are two runs) and the driver's
peak (VmHWM). Results: benchmarks/results/ray_train_runs.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench_common import RESULTS, checkouts, machine, write_results
from ray_driver_memory import _PEAK, _port, make_parts


def head(src: Path | None) -> tuple[subprocess.Popen, str]:
    """A Ray head whose workers import ``src`` (None: this checkout): (process, address)."""
    port = _port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    p = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus=3",
                          f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                          "--disable-usage-stats", f"--ray-client-server-port={_port()}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    for _ in range(120):  # until the head answers
        if subprocess.run([str(Path(sys.executable).with_name("ray")), "status", f"--address={address}"],
                          capture_output=True, env=env).returncode == 0:
            return p, address
        time.sleep(1)
    raise SystemExit("the Ray head did not start")


def stop(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()
    time.sleep(2)


def train(src: Path | None, cfg: Path, address: str) -> dict:
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PEAK, "train", "--config", str(cfg), f"engine.address={address}"],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"train failed:\n{r.stderr[-3000:]}")
    fits = [float(m) for m in re.findall(r"Adam on Ray \(\d+ workers\) finished .*? in ([0-9.]+)s", r.stderr)]
    kb = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return {"wall": wall, "fits": sum(fits), "runs": len(fits), "peak": kb[-1] / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--ratings", type=int, default=2_000_000)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--route", choices=("parts", "driver"), default="parts")
    a = ap.parse_args()
    ranking = "rating" if a.route == "parts" else "hybrid"
    tmp = Path(tempfile.mkdtemp(prefix="movierec-raytrain-"))
    got: dict[str, list[dict]] = {}
    try:
        with checkouts(a.before, tmp / "trees") as sites:
            p, address = head(None)
            try:
                data = tmp / "data"
                n = make_parts(data, a.ratings, a.parts, address)
                base = tmp / "base"
                cfg = tmp / "c.yaml"
                cfg.write_text(
                    f"workdir: {base}\ndata:\n  dir: {data}\n  ratings: ratings\nsplit:\n  method: random\n"
                    "sentiment:\n  enabled: false\nsocial:\n  enabled: false\n"
                    f"model:\n  optimizer: adam\n  epochs: {a.epochs}\n  early_stopping: false\n  batch_size: 65536\n"
                    f"  implicit: false\n  use_features: false\n  ranking: {ranking}\n"
                    "engine:\n  kind: ray\n  workers: 2\n")
                for stage in ("ingest", "clean"):
                    subprocess.run([sys.executable, "-m", "movierec", "-q", stage, "--config", str(cfg),
                                    f"engine.address={address}"], check=True, capture_output=True,
                                   env=dict(os.environ, RAY_AUTH_MODE="disabled"))
            finally:
                stop(p)
            print(f"{n:,} ratings in {a.parts} parts, cleaned on Ray", flush=True)
            for _ in range(a.repeats):
                for label, src in sites.items():
                    work = tmp / "work"
                    shutil.rmtree(work, ignore_errors=True)
                    shutil.copytree(base, work, ignore=shutil.ignore_patterns("lock"))
                    site_cfg = tmp / "s.yaml"
                    site_cfg.write_text(cfg.read_text().replace(f"workdir: {base}", f"workdir: {work}"))
                    p, address = head(src)
                    try:
                        r = train(src, site_cfg, address)
                    finally:
                        stop(p)
                    got.setdefault(label, []).append(r)
                    print(f"  {label:>22}: train {r['wall']:6.1f} s, fits {r['fits']:6.1f} s in {r['runs']} Ray Train "
                          f"run(s), driver {r['peak']:.2f} GB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = RESULTS / ("ray_train_runs.md" if a.route == "parts" else "ray_train_runs_driver.md")
    title = "from parts" if a.route == "parts" else "from the driver's table (`model.ranking: hybrid`)"
    lines = [f"# `movierec train`, Adam on Ray {title}: Ray Train runs per command", "",
             f"Machine: {machine()}  ",
             f"Command: `python benchmarks/ray_train_runs.py --before {a.before} --ratings {a.ratings} "
             f"--parts {a.parts} --epochs {a.epochs} --repeats {a.repeats}"
             f"{' --route driver' if a.route == 'driver' else ''}`  ",
             f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"{n:,} synthetic ratings in {a.parts} parts, cleaned on Ray; `train` (holdout fit and refit, "
             f"{a.epochs} epochs each, Adam, batch 65536, 2 workers) in a fresh process on a fresh Ray head of "
             "its checkout's code, the checkouts in turn; medians (all runs listed).", "",
             "| checkout | Ray Train runs | `train` wall s | fits s (driver's log) | driver peak GB | runs (wall s) |",
             "|---|---|---|---|---|---|"]
    for label, rs in got.items():
        walls = ", ".join(f"{r['wall']:.1f}" for r in rs)
        lines.append(f"| {label} | {rs[0]['runs']} | {statistics.median(r['wall'] for r in rs):.1f} | "
                     f"{statistics.median(r['fits'] for r in rs):.1f} | {max(r['peak'] for r in rs):.2f} | {walls} |")
    write_results(out, lines)
    print(out.read_text())


if __name__ == "__main__":
    main()
