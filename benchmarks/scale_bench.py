"""Scale and serving cost: 20M synthetic ratings, the social graph at scale, Ray against local, the
refit cost (`python scripts/benchmark.py scale | social-scale | scale-out | serving`)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _bench_common import RESULTS, ROOT, _version, machine


_PEAK = (
    "import resource, sys\n"
    "from movierec.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def _timed(args: list[str]) -> tuple[float, float, str]:
    """Run ``movierec ARGS`` in a fresh process; (wall seconds, its peak RSS in GB, stderr)."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"movierec {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    kb = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return wall, kb[-1] / 1024 / 1024, r.stderr


def bench_scale(args) -> str:
    """20M synthetic ratings: train (sgd; adam with large batches) and recommend --all."""
    data = Path(args.data)
    if not (data / "ratings.csv").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic.py"), "--out", str(data),
                        "--ratings", str(args.ratings)], check=True)
    work = Path(tempfile.mkdtemp(prefix="mr-scale-"))
    exe: list[str] = []
    base = ["--config", str(ROOT / "configs" / "synthetic-20m.yaml"), f"data.dir={data}", f"workdir={work}"]
    rows = []

    def fits(m: dict) -> tuple[float, str]:  # the holdout model and the refit on every rating
        h = m.get("holdout_fit_seconds") or 0.0
        return h + m["fit_seconds"], f"holdout {h:.1f} + refit {m['fit_seconds']:.1f}"

    wall, peak, _ = _timed(exe + ["train", *base])
    total, parts = fits(json.loads((work / "manifests" / "train.json").read_text()))
    rows.append((f"movierec train, sgd, 64 factors, 20 epochs (whole command: ingest, clean, fit; {parts})",
                 total, wall, peak))
    wall, peak, _ = _timed(exe + ["train", *base])
    total, parts = fits(json.loads((work / "manifests" / "train.json").read_text()))
    rows.append((f"movierec train again (stages fresh; numba cache warm; {parts})", total, wall, peak))
    out = work / "all.parquet"
    wall, peak, err = _timed(exe + ["recommend", *base, "--all", "--output", str(out), "-n", "10"])
    n = len(pd.read_parquet(out))
    rows.append((f"movierec recommend --all, top-10 for every user ({n:,} rows), seen excluded", None, wall, peak))
    if args.adam:
        wall, peak, _ = _timed(exe + ["train", *base, "model.optimizer=adam", "model.batch_size=65536",
                                      "model.learning_rate=0.01", f"model.epochs={args.adam_epochs}"])
        m = json.loads((work / "manifests" / "train.json").read_text())
        total, parts = fits(m)
        rows.append((f"movierec train, adam (TensorFlow, CPU), batch 65536, {args.adam_epochs} epochs "
                     f"({m['fit_seconds'] / args.adam_epochs:.1f} s/epoch; {parts})", total, wall, peak))
    lines = ["| run | fit seconds | wall seconds | peak RSS of the command (GB) |", "|---|---|---|---|"]
    for name, fit, wall, peak in rows:
        lines.append(f"| {name} | {'-' if fit is None else f'{fit:.1f}'} | {wall:.1f} | {peak:.2f} |")
    return "\n\n".join([
        f"# Scale: {args.ratings:,} synthetic ratings (MovieLens-20M shape: 138,493 users, 27,278 movies)",
        f"Machine: {machine()}  \nCommand: `python scripts/benchmark.py scale --data {args.data}"
        f"{' --adam' if args.adam else ''}`  \nDate: {time.strftime('%Y-%m-%d %H:%M')}",
        "Targets: fitting <= 90 s and <= 4 GB for the whole `train` command; `recommend --all` <= 30 s and <= 4 GB. "
        "Fit seconds: the holdout model (training part) plus the served model refit on every rating.",
        "\n".join(lines),
    ])


def _serving_rows(label: str, base: list[str], work: Path, user: str) -> list[str]:
    """Train (holdout fit + refit on all data), then recommend --user with 0 and 50 new events."""
    from movierec.feedback import append_event
    from movierec.registry import Registry

    wall, peak, _ = _timed(["train", *base])
    m = json.loads((work / "manifests" / "train.json").read_text())
    v = Registry(work / "models").get(m["version"])
    fits = (m.get("holdout_fit_seconds") or 0.0, m["fit_seconds"])
    rows = [f"| {label}: `movierec train` (all stages) | {wall:.1f} | {peak:.2f} | holdout fit {fits[0]:.1f} s "
            f"({m['holdout_ratings']:,} ratings) + refit {fits[1]:.1f} s ({m['ratings']:,} ratings, "
            f"{len(v.meta['holdout']['history']['train_rmse'])} + {len(v.meta['history']['train_rmse'])} epochs): "
            f"the refit adds {fits[1] / max(wall, 1e-9):.0%} of the command |"]
    bundle = Registry(work / "models").load()
    unseen = np.setdiff1d(np.arange(len(bundle.movie_ids)), bundle.seen[bundle.user_index(user)].indices)
    for n_events in (0, 50):
        if n_events:
            for mv in np.random.default_rng(0).choice(unseen, n_events, replace=False):
                append_event(work, user, bundle.movie_ids[mv], rating=float(bundle.model.rating_max_))
        walls = []
        for _ in range(3):
            w, peak, _ = _timed(["recommend", *base, "--user", user, "--format", "json"])
            walls.append(w)
        from movierec.feedback import read_events_since

        def once() -> float:
            t0 = time.perf_counter()
            ev = read_events_since(work, bundle.meta.get("feedback"))
            bundle.recommend_user(user, 10, events=None if ev is None else ev[ev.user_id == user])
            return time.perf_counter() - t0

        once()  # the first call compiles (or loads) the top-n kernel and builds the rank vectors
        inproc = statistics.median(once() for _ in range(5))
        rows.append(f"| {label}: `recommend --user` with {n_events} new feedback events (fresh process, median of 3) "
                    f"| {statistics.median(walls):.2f} | {peak:.2f} | in process (model loaded, warm; median of 5): "
                    f"{inproc * 1000:.1f} ms |")
    return rows


def bench_serving(args) -> str:
    """What serving a model refit on all data costs: train time (holdout fit + refit) and
    recommend --user with 0 and 50 feedback events since training."""
    rows = ["| what | wall seconds | peak RSS (GB) | detail |", "|---|---|---|---|"]
    work = Path(tempfile.mkdtemp(prefix="mr-serving-demo-"))
    rows += _serving_rows("demo (configs/default.yaml)", ["--config", str(ROOT / "configs" / "default.yaml"),
                                                          f"workdir={work}"], work, "u00001")
    if args.synthetic:
        data = Path(args.synthetic)
        if not (data / "ratings.csv").exists():
            subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic.py"), "--out", str(data),
                            "--ratings", "20000263"], check=True)
        work = Path(tempfile.mkdtemp(prefix="mr-serving-20m-"))
        base = ["--config", str(ROOT / "configs" / "synthetic-20m.yaml"), f"data.dir={data}", f"workdir={work}"]
        user = pd.read_csv(data / "ratings.csv", nrows=1, dtype=str)["user_id"].iloc[0]
        rows += _serving_rows("20M synthetic (configs/synthetic-20m.yaml)", base, work, user)
    return "\n\n".join([
        "# Serving: a model refit on every rating, and feedback folded in at recommend time",
        f"Machine: {machine()}  \nCommand: `python scripts/benchmark.py serving"
        f"{' --synthetic ' + args.synthetic if args.synthetic else ''}`  \nDate: {time.strftime('%Y-%m-%d %H:%M')}",
        "`train` fits the measured (holdout) model on the training part, then refits the served model on every "
        "rating for the number of epochs early stopping chose; `recommend --user` reads the feedback events "
        "recorded since the served version was trained and folds the user's new ratings in.",
        "\n".join(rows),
    ])


def bench_social_scale(args) -> str:
    """The social stage on an Epinions-sized synthetic trust graph (50k users, 500k ties)."""
    from movierec.config import SocialConfig
    from movierec.stages.social import social

    rng = np.random.default_rng(0)
    n, m = args.users, args.ties
    src = rng.integers(0, n, m)
    w = 1.0 / np.arange(1, n + 1) ** 0.8  # trustees: a long-tailed popularity
    dst = rng.choice(n, m, p=w / w.sum())
    ties = pd.DataFrame({"user_idx": src, "friend_idx": dst, "weight": 1.0, "text": ""})
    ties = ties[ties.user_idx != ties.friend_idx].drop_duplicates(["user_idx", "friend_idx"])
    rows = []
    for directed, nbh in ((True, "direct"), (False, "direct"), (True, "ppr"), (False, "ppr")):
        t0 = time.perf_counter()
        res = social(ties, None, n, SocialConfig(directed=directed, neighbourhood=nbh))
        rows.append(f"| {'directed' if directed else 'undirected'} | {nbh} | {len(ties):,} | "
                    f"{time.perf_counter() - t0:.1f} | {len(res.neighbours):,} |")
    return "\n\n".join([
        "# Social stage at Epinions size",
        f"Machine: {machine()}  \nCommand: `python scripts/benchmark.py social-scale`  \n"
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}",
        f"{n:,} users; ties drawn with long-tailed trustee popularity. Degrees, PageRank (networkx, "
        "scipy power iteration), clustering (exact, from sparse triangle counts), two-hop trust "
        "propagation (sparse products) and neighbourhoods; communities by Louvain up to "
        "`social.louvain_max_edges` (200k) ties, by fast label propagation above (networkx's Louvain took "
        "80 s of 117 at this size).",
        "Neighbourhood `ppr`: each user's personalised PageRank (`social.ppr_alpha` 0.5, 3 steps, the 50 "
        "largest entries per user carried and kept; exact against networkx's personalised `pagerank` "
        "without the truncation, tests/models/test_social_model.py); walks are not continued through a "
        "user whose every onward step would carry less than 0.05 / 50 of the start.",
        "| view | neighbourhood | ties | seconds | neighbourhood entries |\n|---|---|---|---|---|\n"
        + "\n".join(rows),
    ])


def bench_scale_out(args) -> str:
    """engine.kind ray on a local Ray against the local engine, each as a user runs it (a
    fresh ``movierec`` process: Ray's start and the workers' imports count)."""
    import re

    demo = ROOT / "configs" / "default.yaml"
    engines = [("local", ["engine.kind=local"])] + [
        (f"ray, {w} worker{'s' if w > 1 else ''}", ["engine.kind=ray", f"engine.workers={w}"]) for w in args.workers]
    rows_s, rows_a = [], []
    # the encoder's ONNX export (once per machine, cached) is not part of any engine's figure
    probe = Path(tempfile.mkdtemp(prefix="mr-scaleout-")) / "probe.csv"
    pd.DataFrame({"text": ["a fine film"]}).to_csv(probe, index=False)
    subprocess.run([sys.executable, "-m", "movierec", "score-text", "--config", str(demo), "--input", str(probe),
                    "--text-column", "text", "--output", str(probe.with_name("scored.csv"))],
                   check=True, capture_output=True)
    for label, eng in engines:
        work = Path(tempfile.mkdtemp(prefix="mr-scaleout-"))
        base = ["--config", str(demo), f"workdir={work}", *eng]
        subprocess.run([sys.executable, "-m", "movierec", "clean", *base], check=True, capture_output=True)
        # a new workdir: an empty score cache, every distinct text is scored
        wall, peak, err = _timed(["sentiment", *base])
        n = int(re.search(r"(\d+) of (\d+) texts not in the cache", err).group(1))
        m = re.search(r"texts scored on Ray by \d+ actors in ([\d.]+)s", err)
        stage = json.loads((work / "manifests" / "sentiment.json").read_text())["seconds"]
        rows_s.append((label, n, wall, stage, float(m.group(1)) if m else None, peak))
        # Adam: seconds per epoch from two fits of different lengths (the difference is the
        # epochs alone; what is left is start-up: Ray Train's workers, TensorFlow's import)
        fits = {}
        for epochs in (args.epochs_short, args.epochs_long):
            w2, _, _ = _timed(["train", *base, "split.method=none", "model.optimizer=adam", "model.learning_rate=0.005",
                               f"model.epochs={epochs}", "model.early_stopping=false", "sentiment.enabled=false",
                               f"workdir={work}-adam{epochs}"])
            fits[epochs] = (json.loads((Path(f"{work}-adam{epochs}") / "manifests" / "train.json").read_text())
                            ["fit_seconds"], w2)
        per_epoch = (fits[args.epochs_long][0] - fits[args.epochs_short][0]) / (args.epochs_long - args.epochs_short)
        start = fits[args.epochs_short][0] - per_epoch * args.epochs_short
        rows_a.append((label, per_epoch, start, fits[args.epochs_long][0], fits[args.epochs_long][1]))
    s_lines = ["| engine | texts scored | `movierec sentiment` wall s | texts/s (wall) | stage s | scoring on Ray s "
               "(in-process) | peak RSS of the command (GB) |", "|---|---|---|---|---|---|---|"]
    for label, n, wall, stage, ray_s, peak in rows_s:
        s_lines.append(f"| {label} | {n:,} | {wall:.1f} | {n / wall:.0f} | {stage:.1f} | "
                       f"{'-' if ray_s is None else f'{ray_s:.1f} ({n / ray_s:.0f} texts/s)'} | {peak:.2f} |")
    a_lines = ["| engine | s per epoch | start-up s (fit minus epochs) | fit s, "
               f"{args.epochs_long} epochs | `movierec train` wall s |", "|---|---|---|---|---|"]
    for label, pe, st, fit, wall in rows_a:
        a_lines.append(f"| {label} | {pe:.2f} | {st:.1f} | {fit:.1f} | {wall:.1f} |")
    return "\n\n".join([
        "# Scale-out: engine.kind ray on a local Ray vs the local engine (demo data)",
        f"Machine: {machine()}; Ray {_version('ray')}, TensorFlow {_version('tensorflow')}  \n"
        f"Command: `python scripts/benchmark.py scale-out`  \nDate: {time.strftime('%Y-%m-%d %H:%M')}",
        "Sentiment: `movierec sentiment` on the demo's review and message texts with an empty score cache "
        "(ingest and clean done before, not timed), in a fresh process. Ray: texts that miss the cache "
        "scored by Ray Data `map_batches` over an actor pool of `engine.workers` actors (1 CPU each).",
        "\n".join(s_lines),
        f"Adam: `movierec train` (split none: one fit on all 99,161 demo ratings) with "
        f"{args.epochs_short} and {args.epochs_long} epochs; seconds per epoch = the difference of the two fits' "
        "seconds over the difference of epochs. Ray: Ray Train `TensorflowTrainer`, `MultiWorkerMirroredStrategy`, "
        "a checkpoint per epoch.",
        "\n".join(a_lines),
        "GPU actors: no accelerator machine was lent to this session, so none were measured.",
    ])


def register(sub) -> None:
    b = sub.add_parser("scale", help="20M synthetic ratings: train and recommend --all")
    b.add_argument("--data", default="/tmp/movierec-synthetic-20m")
    b.add_argument("--ratings", type=int, default=20_000_263)
    b.add_argument("--adam", action="store_true", help="also time the TensorFlow trainer")
    b.add_argument("--adam-epochs", type=int, default=3)
    b.add_argument("--out", default=str(RESULTS / "scale.md"))
    b.set_defaults(run=bench_scale)
    s2 = sub.add_parser("social-scale", help="the social stage on a large generated graph")
    s2.add_argument("--users", type=int, default=50_000)
    s2.add_argument("--ties", type=int, default=500_000)
    s2.add_argument("--out", default=str(RESULTS / "social_scale.md"))
    s2.set_defaults(run=bench_social_scale)
    sv = sub.add_parser("serving", help="refit cost, recommend --user with feedback")
    sv.add_argument("--synthetic", default=None, help="also on the 20M synthetic set in this folder (made if absent)")
    sv.add_argument("--out", default=str(RESULTS / "refit.md"))
    sv.set_defaults(run=bench_serving)
    so = sub.add_parser("scale-out", help="engine.kind ray (local Ray) against local")
    so.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    so.add_argument("--epochs-short", type=int, default=3)
    so.add_argument("--epochs-long", type=int, default=13)
    so.add_argument("--out", default=str(RESULTS / "scale_out.md"))
    so.set_defaults(run=bench_scale_out)
