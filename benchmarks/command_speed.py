"""Fast as a user runs it: `movierec evaluate` against a Surprise script, whole processes.

    python benchmarks/command_speed.py --ml100k ../shared/datasets/ml-100k [--before COMMIT]
        [--repeats 5] [--ratings 2000000] [--big 20000000]
    python benchmarks/command_speed.py --recommend-only [--before COMMIT] [--repeats 9]

Every figure is a fresh process started from here, timed from launch to exit (start-up,
imports and JIT loading count), the median of ``--repeats`` (each repeat runs every
command once, in turn, so a drift in the machine's speed touches them all alike):

- **Surprise script**: benchmarks/_surprise_svd.py reads the training and test CSVs with
  pandas, fits Surprise's SVD (its defaults) and prints the test RMSE;
- **`movierec evaluate`, first run**: the same CSVs, an empty workdir (ingest, validation,
  quarantine, clean, manifests, atomic writes, fit, RMSE/MAE and ranking metrics);
- **same, stages cached**: again on that workdir (ingest and clean are fresh and skipped;
  the model is fitted again, as evaluate always does).

movierec runs Surprise's setting: 100 factors, 20 epochs, learning rate 0.005, reg 0.02 on
factors and biases, no learning-rate decay, no features, no implicit term, no early stopping,
`ranking: rating`, no baselines, ablations or bootstrap. Data: MovieLens-100K's given split
u1 and an 80/20 seeded split of ``--ratings`` synthetic ratings (``--big``: once more at that
size, one run each, with peak memory). ``--before COMMIT`` also times an older checkout (a git
worktree whose src/ goes first on PYTHONPATH) in the same run. Also times `movierec recommend
--user` on the demo (fresh process, median). Writes benchmarks/results/command_speed.md.
``--recommend-only``: only the `recommend --user` timings (a known viewer and an unknown
one), written to benchmarks/results/recommend_user.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _bench_common import ROOT, checkouts

HERE = Path(__file__).resolve().parent

SVD_SETTING = """
model:
  factors: 100
  epochs: 20
  learning_rate: 0.005
  reg: 0.02
  reg_bias: 0.02
  lr_decay: 1.0
  implicit: false
  use_features: false
  early_stopping: false
  ranking: rating
evaluate:
  baselines: []
  ablations: []
  bootstrap_rounds: 0
sentiment:
  enabled: false
social:
  enabled: false
"""


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB, stdout) of one fresh process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if p.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 1e6, out.read()


def user_env() -> dict:
    """This environment as on a user's machine: Python writes its bytecode caches (this
    workplace sets PYTHONDONTWRITEBYTECODE, which would compile movierec's modules from
    source in every process; pip compiles an installed package's at install)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def movierec_cmd(src: Path | None) -> tuple[list[str], dict]:
    env = dict(user_env(), MOVIEREC_CACHE_DIR=str(Path(tempfile.gettempdir()) / "movierec-speed-cache"))
    if src is not None:
        env["PYTHONPATH"] = str(src)
        return [sys.executable, "-m", "movierec"], env
    exe = Path(sys.executable).with_name("movierec")
    return ([str(exe)] if exe.exists() else [sys.executable, "-m", "movierec"]), env


def rmse_of(out: str) -> float:
    m = re.search(r"^movierec\s+([0-9.]+)", out, re.M) or re.search(r"rmse ([0-9.]+)", out)
    return float(m.group(1)) if m else float("nan")


def prepare(data_dir: Path, train_csv: Path, test_csv: Path, work: Path) -> Path:
    cfg = work / "config.yaml"
    cfg.write_text(f"workdir: {work / 'wd'}\ndata:\n  dir: {data_dir}\nsplit:\n  method: given\n"
                   f"  train: {train_csv}\n  test: {test_csv}\n" + SVD_SETTING)
    return cfg


def synthetic(n: int, folder: Path) -> tuple[Path, Path, Path]:
    from movierec.data.synthetic import write_synthetic

    users, movies = max(1000, n // 100), max(500, n // 250)
    write_synthetic(folder, n, users, movies, 0)
    r = pd.read_csv(folder / "ratings.csv")
    test = np.random.default_rng(0).random(len(r)) >= 0.8
    (folder / "splits").mkdir(exist_ok=True)
    r[~test].to_csv(folder / "splits" / "train.csv", index=False)
    r[test].to_csv(folder / "splits" / "test.csv", index=False)
    return folder, folder / "splits" / "train.csv", folder / "splits" / "test.csv"


def measure(label: str, data: tuple[Path, Path, Path], sites: dict, work: Path, repeats: int) -> list[dict]:
    """Each repeat runs the Surprise script and then every site's first and cached run, so
    that a machine whose speed drifts (a shared VM) slows all of them alike."""
    data_dir, train_csv, test_csv = data
    peer_cmd = [sys.executable, str(HERE / "_surprise_svd.py"), str(train_csv), str(test_csv)]
    got: dict[str, dict[str, list]] = {"peer": {"wall": [], "rmse": [], "peak": []}}
    cmds = {}
    for site, src in sites.items():
        cmd, env = movierec_cmd(src)
        site_work = work / re.sub(r"\W+", "-", site)
        cmds[site] = (cmd, env, site_work)
        got[site] = {"first": [], "cached": [], "rmse": [], "peak": []}
        # untimed: compiles what a first use compiles once per install (numba's kernel cache,
        # bytecode of an older checkout)
        shutil.rmtree(site_work, ignore_errors=True)
        site_work.mkdir(parents=True)
        run(cmd + ["-q", "evaluate", "--config", str(prepare(data_dir, train_csv, test_csv, site_work))], env)
    for _ in range(repeats):
        w, gb, out = run(peer_cmd, user_env())
        got["peer"]["wall"].append(w)
        got["peer"]["peak"].append(gb)
        got["peer"]["rmse"].append(rmse_of(out))
        for site, (cmd, env, site_work) in cmds.items():
            shutil.rmtree(site_work, ignore_errors=True)
            site_work.mkdir(parents=True)
            cfg = prepare(data_dir, train_csv, test_csv, site_work)
            w, gb, out = run(cmd + ["-q", "evaluate", "--config", str(cfg)], env)
            got[site]["first"].append(w)
            got[site]["peak"].append(gb)
            got[site]["rmse"].append(rmse_of(out))
            got[site]["cached"].append(run(cmd + ["-q", "evaluate", "--config", str(cfg)], env)[0])
        print({k: {m: [round(x, 3) for x in v][-1:] for m, v in d.items()} for k, d in got.items()}, flush=True)
    peer = statistics.median(got["peer"]["wall"])
    rows = [{"data": label, "what": "Surprise script (whole process)", "seconds": peer, "rmse": got["peer"]["rmse"][0],
             "runs": got["peer"]["wall"], "peak_gb": max(got["peer"]["peak"])}]
    for site in sites:
        g = got[site]
        for what, ws in (("first run", g["first"]), ("stages cached", g["cached"])):
            med = statistics.median(ws)
            rows.append({"data": label, "what": f"`movierec evaluate`, {what} ({site})", "seconds": med,
                         "rmse": statistics.median(g["rmse"]), "speedup": peer / med, "runs": ws,
                         "peak_gb": max(g["peak"])})
    return rows


def phases(data: tuple[Path, Path, Path], work: Path) -> dict:
    """Where the first run's time goes (this checkout; median of 3 per phase)."""
    got: list[dict] = []
    for _ in range(3):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        cfg = prepare(*data, work)
        out = work / "phases.json"
        launched = time.time()
        t = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / "_phases.py"), str(out), repr(launched), "--", "-q", "evaluate",
                        "--config", str(cfg)], check=True, capture_output=True, env=user_env())
        d = json.loads(out.read_text())
        d["whole command"] = time.perf_counter() - t
        d["exit (ending the process)"] = d["whole command"] - sum(
            v for k, v in d.items() if not k.startswith(("artifact writes", "whole command")))
        got.append(d)
    return {k: statistics.median(g.get(k, 0.0) for g in got) for k in got[0]}


def recommend_demo(sites: dict, work: Path, repeats: int, users: tuple[str, ...] = ("u00001",)) -> list[dict]:
    """`movierec recommend --user U` on the demo, trained first by each checkout: fresh
    processes, each repeat runs every checkout and user in turn."""
    cfg = str(ROOT / "configs" / "default.yaml")
    cmds = {}
    for site, src in sites.items():
        cmd, env = movierec_cmd(src)
        wd = work / ("rec-" + re.sub(r"\W+", "-", site))
        shutil.rmtree(wd, ignore_errors=True)
        subprocess.run(cmd + ["train", "--config", cfg, f"workdir={wd}"], check=True, capture_output=True, env=env)
        for user in users:
            cmds[(site, user)] = (cmd + ["recommend", "--config", cfg, f"workdir={wd}", "--user", user], env)
    runs: dict = {k: [] for k in cmds}
    for _ in range(repeats):
        for k, (cmd, env) in cmds.items():
            runs[k].append(run(cmd, env)[0])
    rows = [{"site": site, "user": user, "seconds": statistics.median(ws), "runs": ws}
            for (site, user), ws in runs.items()]
    for r in rows:
        print(r, flush=True)
    return rows


def recommend_table(rec: list[dict]) -> list[str]:
    doc = ["| checkout | viewer | seconds (median) | runs |", "|---|---|---|---|"]
    doc += [f"| {r['site']} | {r.get('user', 'u00001')} | {r['seconds']:.2f} | "
            f"{', '.join(f'{w:.2f}' for w in r['runs'])} |" for r in rec]
    return doc


def recommend_only(args) -> None:
    """Only the `recommend --user` timings, to benchmarks/results/recommend_user.md."""
    tmp = Path(tempfile.mkdtemp(prefix="movierec-rec-"))
    with checkouts(args.before, tmp) as sites:
        rec = recommend_demo(sites, tmp / "rec", args.repeats, users=("u00001", "nobody-known"))
    out = ROOT / "benchmarks" / "results" / "recommend_user.md"
    doc = ["# `movierec recommend --user` on the demo, a fresh process", "",
           f"Machine: {machine()}  ",
           f"Command: `python benchmarks/command_speed.py --recommend-only"
           f"{' --before ' + args.before if args.before else ''} --repeats {args.repeats}`  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
           "configs/default.yaml trained on the demo by each checkout first; each figure is launch to exit of "
           "the console command (interpreter start-up and imports count), printing the table of 10 movies. "
           "`u00001` is a viewer the model knows; `nobody-known` is not in the data (the popularity list and a "
           "note on stderr). Each repeat runs every row once, in turn.", "",
           *recommend_table(rec), ""]
    out.write_text("\n".join(doc))
    print(out.read_text())


def machine() -> str:
    import platform

    import numba

    try:
        import surprise

        sv = surprise.__version__
    except ImportError:
        sv = "not installed"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"pandas {pd.__version__}, numba {numba.__version__}, surprise {sv}")


def table(rows: list[dict]) -> str:
    lines = ["| data | command | seconds (median) | vs Surprise | test RMSE | peak RSS GB | runs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        lines.append(f"| {r['data']} | {r['what']} | {r['seconds']:.2f} | {sp} | {r['rmse']:.4f} | "
                     f"{r['peak_gb']:.2f} | {', '.join(f'{w:.2f}' for w in r['runs'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml100k", type=Path, help="the raw MovieLens-100K folder (u.data, u1.base...)")
    ap.add_argument("--recommend-only", action="store_true",
                    help="only time `recommend --user` on the demo (benchmarks/results/recommend_user.md)")
    ap.add_argument("--before", help="an older commit to time beside this checkout")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ratings", type=int, default=2_000_000)
    ap.add_argument("--big", type=int, default=0, help="also this many synthetic ratings, one run each")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "command_speed.md")
    args = ap.parse_args()
    if args.recommend_only:
        return recommend_only(args)
    if args.ml100k is None:
        ap.error("--ml100k is required (or --recommend-only)")
    tmp = Path(tempfile.mkdtemp(prefix="movierec-speed-"))
    with checkouts(args.before, tmp) as sites:
        ml = tmp / "ml100k"
        cmd, env = movierec_cmd(None)
        subprocess.run(cmd + ["data", "import", "movielens-100k", "--from", str(args.ml100k), "--to", str(ml)],
                       check=True, capture_output=True, env=env)
        datasets = {"ML-100K u1": (ml, ml / "splits" / "u1.train.csv", ml / "splits" / "u1.test.csv"),
                    f"{args.ratings / 1e6:g}M synthetic": synthetic(args.ratings, tmp / "synth")}
        rows = []
        for label, data in datasets.items():
            rows += measure(label, data, sites, tmp / "runs", args.repeats)
        breakdown = {label: phases(data, tmp / "phases") for label, data in datasets.items()}
        big_rows = []
        if args.big:
            data = synthetic(args.big, tmp / "big")
            big_rows = measure(f"{args.big / 1e6:g}M synthetic", data, {"this checkout": None}, tmp / "runs-big", 1)
        rec = recommend_demo(sites, tmp / "rec", args.repeats)
    write(args, rows, breakdown, big_rows, rec)


def write(args, rows: list[dict], breakdown: dict, big_rows: list[dict], rec: list[dict]) -> None:
    doc = [
        "# Fast as a user runs it: `movierec evaluate` against a Surprise script",
        "",
        f"Machine: {machine()}  ",
        f"Command: `python benchmarks/command_speed.py --ml100k ../shared/datasets/ml-100k"
        f"{' --before ' + args.before if args.before else ''} --repeats {args.repeats}"
        f"{' --big ' + str(args.big) if args.big else ''}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "Every figure is a fresh process, launch to exit (start-up, imports and loading the compiled kernels "
        "count), the median of the runs listed (each repeat ran every command once, in turn). Both sides "
        "fit Surprise's SVD setting (100 factors, 20 epochs, lr 0.005, reg 0.02) on the same training "
        "CSV and score the same test CSV; movierec also "
        "validates and quarantines, writes its artifacts and manifests atomically, and computes MAE, "
        "precision/recall/NDCG/MAP@10 and coverage besides the RMSE. movierec uses both cores from 1M "
        "ratings up (SGD block by block, `model.threads: 0`), Surprise one (it has no other mode).",
        "",
        table(rows),
        "",
    ]
    if big_rows:
        doc += ["One run each at the larger size:", "",
                table(big_rows), ""]
    for label, ph in breakdown.items():
        doc += [f"Where the first run's time goes, {label} (this checkout, median of 3 runs):", "",
                "| phase | seconds |", "|---|---|"]
        doc += [f"| {k} | {v:.3f} |" for k, v in ph.items()]
        doc.append("")
    doc += ["`movierec recommend --user u00001` on the demo (configs/default.yaml, model trained first), a fresh "
            "process:", "", *recommend_table(rec)]
    doc.append("")
    notes = ""
    if args.out.exists():
        old = args.out.read_text()
        mark = "<!-- notes: kept when the benchmark rewrites the tables above -->"
        if mark in old:
            notes = old[old.index(mark):]
    args.out.write_text("\n".join(doc) + ("\n" + notes if notes else
                                           "\n<!-- notes: kept when the benchmark rewrites the tables above -->\n"))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
