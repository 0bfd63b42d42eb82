"""The HTTP service under load: `movierec serve` in its own process, an async httpx client.

    python benchmarks/serving.py [--demo-workdir DIR] [--big 20000000] [--seconds 10]
        [--soak 300] [--sites DIR] [--out benchmarks/results/serving.md]

For each site (the demo, trained with configs/default.yaml unless ``--demo-workdir`` names a
trained workdir; ``--big N``: N MovieLens-20M-shaped synthetic ratings, sentiment and
features off) and 1 and 2 server workers, the load generator (one asyncio process, httpx,
HTTP/1.1 keep-alive) keeps C requests in flight for ``--seconds`` at C = 1, 8, 32 on:

- **known viewer**: ``GET /users/{id}/recommendations`` for random known viewers;
- **new viewer**: ``POST /recommendations`` with 10 random ratings (fold-in);
- **feedback**: ``POST /feedback`` (a random rating; fsynced before the answer).

It reports requests/s and p50/p95/p99 latency as the client saw them (the client runs on
the same 2 cores as the server: its own CPU is in the figures). Then it checks:

- the service's list equals ``movierec recommend --user U --format json`` for 20 viewers;
- a feedback event is in that viewer's next list: 200 times, rate the top movie 1 star and
  ask again (the movie must be gone and ``feedback_events`` one higher);
- ``--soak`` seconds (default 300) of mixed traffic at 8 clients, with ``movierec run`` on
  changed data (2% more ratings) started in the middle, which promotes a new version: errors,
  the versions that answered, and the server's memory (RSS of its processes) each 10 s.

``--sites DIR`` keeps the trained sites there (and reuses them on the next run; the soak runs
on a copy). Writes the tables to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "benchmark-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "movierec", *args], capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise SystemExit(f"movierec {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_site(tmp: Path, workdir: str | None) -> Path:
    """configs/default.yaml on a copy of the demo data (the soak test appends to it)."""
    if (tmp / "demo.yaml").exists() and (tmp / "demo.built").exists():
        return tmp / "demo.yaml"
    shutil.rmtree(tmp / "demo-data", ignore_errors=True)
    shutil.rmtree(tmp / "demo-work", ignore_errors=True)
    data = tmp / "demo-data"
    shutil.copytree(ROOT / "data" / "demo", data)
    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    cfg["data"]["dir"] = str(data)
    work = tmp / "demo-work"
    if workdir:
        shutil.copytree(workdir, work, ignore=shutil.ignore_patterns("lock"))
    cfg["workdir"] = str(work)
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return trained(path, tmp / "demo.built", "demo", train=not workdir)


def big_site(tmp: Path, n: int) -> Path:
    from movierec.data.synthetic import write_synthetic

    if (tmp / "big.yaml").exists() and (tmp / "big.built").exists():
        return tmp / "big.yaml"
    data = tmp / "big-data"
    write_synthetic(data, n, max(1000, n // 144), max(500, n // 733), 0)
    cfg = {"workdir": str(tmp / "big-work"), "data": {"dir": str(data)},
           "split": {"method": "random", "test_fraction": 0.02, "seed": 0},
           "sentiment": {"enabled": False},
           "model": {"factors": 32, "epochs": 10, "use_features": False, "early_stopping": False},
           "evaluate": {"baselines": [], "ablations": [], "bootstrap_rounds": 0, "max_users": 2000}}
    path = tmp / "big.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return trained(path, tmp / "big.built", f"{n / 1e6:g}M")


def trained(path: Path, marker: Path, name: str, train: bool = True) -> Path:
    """``movierec train`` on the site's config (unless it came trained), then mark it built."""
    if train:
        t0 = time.perf_counter()
        cli("train", "--config", str(path))
        print(f"{name} trained in {time.perf_counter() - t0:.0f}s", flush=True)
    marker.write_text("ok")
    return path


def soak_copy(cfg_path: Path, dst: Path) -> Path:
    """A copy of a site (data and workdir) for the soak run, which changes its data."""
    c = yaml.safe_load(Path(cfg_path).read_text())
    data, work = dst / "data", dst / "work"
    shutil.copytree(c["data"]["dir"], data)
    shutil.copytree(c["workdir"], work, ignore=shutil.ignore_patterns("lock"))
    c["data"]["dir"], c["workdir"] = str(data), str(work)
    out = dst / "site.yaml"
    out.write_text(yaml.safe_dump(c))
    return out


class Served:
    """`movierec serve` in a child process."""

    def __init__(self, cfg: Path, workers: int) -> None:
        self.port = free_port()
        env = dict(os.environ, MOVIEREC_SERVE_TOKEN=TOKEN, HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "movierec", "serve", "--config", str(cfg), "--port",
                                      str(self.port), "--workers", str(workers)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{self.port}"
        import httpx

        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(self.base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited: {self.proc.stderr.read()[-2000:]}")
            if time.perf_counter() - t0 > 600:
                raise SystemExit("serve did not answer in 600 s")
            time.sleep(0.1)
        self.start_seconds = time.perf_counter() - t0

    def rss_mb(self) -> float:
        """Resident memory of the server and its worker processes."""
        pids = [self.proc.pid]
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
            pids += [int(p) for p in out.split()]
        except OSError:
            pass
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(base: str, make, clients: int, seconds: float, seed: int = 0, versions: dict | None = None) -> dict:
    """Keep ``clients`` requests in flight for ``seconds``; ``make(rng)`` gives (method, path, json).
    ``versions``: counts the X-Model-Version of the answers."""
    import httpx

    lat, errors = [], 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=AUTH) as c:
        async def worker(k: int) -> None:
            nonlocal errors
            rng = np.random.default_rng(k)
            while time.perf_counter() < stop:
                method, path, body = make(rng)
                t0 = time.perf_counter()
                try:
                    r = await c.request(method, path, json=body)
                    ok = r.status_code < 400
                    v = r.headers.get("x-model-version")
                    if versions is not None and v:
                        versions[v] = versions.get(v, 0) + 1
                except httpx.HTTPError:
                    ok = False
                lat.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(seed + k) for k in range(clients)))
        wall = time.perf_counter() - t0
    a = np.array(lat) * 1000
    return {"requests": len(a), "rps": len(a) / wall, "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
            "errors": errors}


def makers(cfg: Path) -> dict:
    from movierec.config import load_config
    from movierec.registry import Registry

    c = load_config(cfg)
    b = Registry.of(c).load()
    users = np.asarray(b.user_ids)
    movies = np.asarray(b.movie_ids)
    lo, hi = float(b.model.rating_min_), float(b.model.rating_max_)
    step = 0.5 if hi - lo <= 10 else 1.0  # half stars on star scales

    def rating(rng) -> float:
        return float(min(hi, lo + step * rng.integers(0, int((hi - lo) / step) + 1)))

    def known(rng):
        return "GET", f"/users/{users[rng.integers(len(users))]}/recommendations", None

    def new(rng):
        ms = rng.choice(movies, 10, replace=False)
        return "POST", "/recommendations", {"ratings": [{"movie_id": str(m), "rating": rating(rng)} for m in ms]}

    def feedback(rng):
        return "POST", "/feedback", {"user_id": f"bench-{rng.integers(1_000_000)}",
                                     "movie_id": str(movies[rng.integers(len(movies))]),
                                     "rating": rating(rng)}

    def mixed(rng):
        x = rng.random()
        return known(rng) if x < 0.8 else new(rng) if x < 0.9 else feedback(rng)

    return {"known viewer": known, "new viewer (10 ratings)": new, "feedback": feedback, "mixed": mixed,
            "users": users}


def same_as_cli(s: Served, cfg: Path, users: np.ndarray, k: int = 20) -> str:
    import httpx

    same = 0
    for u in users[:: max(1, len(users) // k)][:k]:
        a = httpx.get(f"{s.base}/users/{u}/recommendations").json()
        b = json.loads(cli("recommend", "--config", str(cfg), "--user", str(u), "--format", "json").stdout)
        same += a["items"] == b["items"]
    return f"{same}/{k}"


def feedback_visible(s: Served, users: np.ndarray, k: int = 200) -> str:
    import httpx

    ok = 0
    with httpx.Client(base_url=s.base, headers=AUTH, timeout=30) as c:
        for u in np.random.default_rng(1).choice(users, k, replace=False):
            before = c.get(f"/users/{u}/recommendations").json()
            top = before["items"][0]["movie_id"]
            assert c.post("/feedback", json={"user_id": str(u), "movie_id": top, "rating": 1.0}).status_code == 201
            after = c.get(f"/users/{u}/recommendations").json()
            ok += top not in [i["movie_id"] for i in after["items"]] and \
                after.get("feedback_events", 0) == before.get("feedback_events", 0) + 1
    return f"{ok}/{k}"


def soak(s: Served, cfg: Path, make, seconds: float) -> dict:
    """Mixed traffic at 8 clients for ``seconds``; `movierec run` on 2% more ratings half-way."""
    versions: dict[str, int] = {}
    rss = [(0.0, s.rss_mb())]
    t_start = time.perf_counter()
    done = threading.Event()
    run_info = {}

    def promote() -> None:
        time.sleep(seconds / 2)
        c = yaml.safe_load(Path(cfg).read_text())
        p = Path(c["data"]["dir"]) / c["data"].get("ratings", "ratings.csv")
        r = pd.read_csv(p)
        extra = r.sample(frac=0.02, random_state=7)
        extra = extra.assign(user_id=extra["user_id"].astype(str) + "-new")
        pd.concat([r, extra]).to_csv(p, index=False)
        t0 = time.perf_counter()
        run_info["at"] = t0 - t_start
        out = cli("run", "--config", str(cfg), check=False)
        run_info.update(code=out.returncode, seconds=time.perf_counter() - t0)

    def sample() -> None:
        while not done.wait(10):
            rss.append((time.perf_counter() - t_start, s.rss_mb()))

    threads = [threading.Thread(target=promote), threading.Thread(target=sample)]
    for t in threads:
        t.start()

    res = asyncio.run(load(s.base, make, 8, seconds, seed=100, versions=versions))
    done.set()
    for t in threads:
        t.join()
    res.update(versions=versions, rss=rss, run=run_info)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-workdir", help="a workdir trained with configs/default.yaml (else trained here)")
    ap.add_argument("--big", type=int, default=0, help="also this many synthetic ratings")
    ap.add_argument("--seconds", type=float, default=10.0, help="per load level")
    ap.add_argument("--soak", type=float, default=300.0, help="seconds of the soak run with a promotion (0: none)")
    ap.add_argument("--sites", help="keep the trained sites in this folder (and reuse them)")
    ap.add_argument("--prepare", action="store_true", help="only train the sites (with --sites)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.md"))
    args = ap.parse_args()
    tmp = Path(args.sites) if args.sites else Path(tempfile.mkdtemp(prefix="movierec-serving-"))
    tmp.mkdir(parents=True, exist_ok=True)
    sites = {"demo": demo_site(tmp, args.demo_workdir)}
    if args.big:
        sites[f"{args.big / 1e6:g}M synthetic"] = big_site(tmp, args.big)
    if args.prepare:
        return
    rows, checks = [], []
    try:
        for name, cfg in sites.items():
            mk = makers(cfg)
            for workers in (1, 2):
                s = Served(cfg, workers)
                try:
                    for what in ("known viewer", "new viewer (10 ratings)", "feedback"):
                        for clients in (1, 8, 32):
                            r = asyncio.run(load(s.base, mk[what], clients, args.seconds))
                            rows.append(dict(site=name, workers=workers, endpoint=what, clients=clients, **r))
                            print(rows[-1], flush=True)
                    if workers == 1:
                        checks.append((name, "start-up to first answer (s)", f"{s.start_seconds:.1f}"))
                        checks.append((name, "lists equal to `movierec recommend --user` (20 viewers)",
                                       same_as_cli(s, cfg, mk["users"])))
                        checks.append((name, "feedback in that viewer's next list", feedback_visible(s, mk["users"])))
                        checks.append((name, "server RSS after the load levels (MB)", f"{s.rss_mb():.0f}"))
                finally:
                    s.close()
        soak_res = None
        if args.soak:
            soak_dir = Path(tempfile.mkdtemp(prefix="movierec-soak-"))
            cfg = soak_copy(sites["demo"], soak_dir)
            s = Served(cfg, 1)
            try:
                soak_res = soak(s, cfg, makers(cfg)["mixed"], args.soak)
            finally:
                s.close()
                shutil.rmtree(soak_dir, ignore_errors=True)
            print(soak_res, flush=True)
    finally:
        if not args.sites:
            shutil.rmtree(tmp, ignore_errors=True)
    write(args, rows, checks, soak_res)


def write(args, rows, checks, soak_res) -> None:
    import platform

    lines = ["# The HTTP service under load", "",
             f"`python benchmarks/serving.py --seconds {args.seconds:g} --soak {args.soak:g}"
             f"{' --big ' + str(args.big) if args.big else ''}` on {time.strftime('%Y-%m-%d')}, "
             f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}); the load generator "
             "(one asyncio process, httpx) shares the cores with the server. Latency in ms as the client saw it.", "",
             "| site | workers | endpoint | clients | requests/s | p50 | p95 | p99 | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['site']} | {r['workers']} | {r['endpoint']} | {r['clients']} | {r['rps']:.0f} | "
                     f"{r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['errors']} |")
    lines += ["", "| site | check | result |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in checks]
    if soak_res:
        rss = soak_res["rss"]
        run = soak_res["run"]
        lines += ["", f"## Soak: {args.soak:g} s of mixed traffic (80% known viewers, 10% new, 10% feedback) at 8 "
                  "clients, 1 worker, `movierec run` on 2% more ratings started half-way", "",
                  f"- requests {soak_res['requests']}, errors **{soak_res['errors']}**, p50 {soak_res['p50']:.1f} ms, "
                  f"p99 {soak_res['p99']:.1f} ms, max {soak_res['max']:.0f} ms",
                  f"- `movierec run`: exit {run.get('code')}, started at {run.get('at', 0):.0f} s, took "
                  f"{run.get('seconds', 0):.0f} s",
                  "- versions that answered: " + ", ".join(f"{v} ({n} requests)" for v, n in soak_res["versions"].items()),
                  "- server RSS (MB) every 10 s: " + ", ".join(f"{m:.0f}" for _, m in rss),
                  f"- RSS first / last / max: {rss[0][1]:.0f} / {rss[-1][1]:.0f} / {max(m for _, m in rss):.0f} MB"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
