"""The driver's memory when reviews are read and scored: `movierec ingest`, then `movierec
sentiment` (ingest and clean cached), partitioned reviews, engine.kind ray against local.

    python benchmarks/ray_sentiment_memory.py --reviews 100000 --chars 2000 --parts 16 [--before COMMIT]
        [--engines local ray] [--append]

Synthetic reviews of about ``--chars`` characters each (words drawn from a small English
vocabulary, every text distinct) are written as ``--parts`` CSV part files, with a small
ratings file beside. The texts are scored by a tiny BERT classifier saved in a temporary
folder (``sentiment.model`` a local folder, as a user names their own model): its scores
mean nothing, it keeps the model's work small so that what is measured is what carries the
texts (reading, hashing, language detection, the hand-over to the scorers), where the
driver's memory goes. ``sentiment.text_features: false`` (the plan's setting at scale).

Each command in a fresh process; the peak is the driver's own (``VmHWM``). The Ray runs
connect to a Ray head the script starts for each checkout (3 CPUs; its workers import that
checkout's movierec), with 2 workers. Results: benchmarks/results/ray_sentiment_memory.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _bench_common import KEEP, RESULTS, ROOT, checkouts, machine
from ray_driver_memory import _port, run

WORDS = ("the a film movie story actor actress scene plot ending score music camera script director cast "
         "good great fine solid moving funny warm bright clever bad dull slow weak flat long thin tired "
         "and but with without because although while then again never always often rarely really quite "
         "very too so it this that one two three its their our night day world city house love war time "
         "watch see feel think say know find give tell make take keep").split()


def make_data(out: Path, n: int, parts: int, chars: int, seed: int = 0) -> int:
    """``n`` distinct reviews of about ``chars`` characters in ``parts`` CSV files under
    ``out/reviews``; ratings.csv (the reviewed pairs, rated) and movies.csv beside. Returns
    the bytes of review text."""
    rng = np.random.default_rng(seed)
    users, movies = max(100, n // 20), max(50, n // 100)
    u = rng.integers(0, users, n)
    m = rng.integers(0, movies, n)
    words = np.array(WORDS, dtype=object)
    per = max(1, chars // 6)  # ~6 characters a word with its space
    texts = [f"review {k}: " + " ".join(words[rng.integers(0, len(words), per)]) for k in range(n)]
    (out / "reviews").mkdir(parents=True)
    frame = pd.DataFrame({"user_id": [f"u{x}" for x in u], "movie_id": [f"m{x}" for x in m], "text": texts})
    for k, rows in enumerate(np.array_split(np.arange(n), parts)):
        frame.iloc[rows].to_csv(out / "reviews" / f"part-{k:05d}.csv", index=False)
    rated = frame[["user_id", "movie_id"]].drop_duplicates().assign(rating=rng.integers(1, 6, size=1)[0])
    rated["rating"] = rng.integers(1, 6, len(rated))
    rated.to_csv(out / "ratings.csv", index=False)
    pd.DataFrame({"movie_id": [f"m{x}" for x in range(movies)], "title": [f"Film {x}" for x in range(movies)],
                  "genres": "Drama"}).to_csv(out / "movies.csv", index=False)
    return int(sum(len(t) for t in texts))


def tiny_model(folder: Path) -> Path:
    """A tiny BERT sentiment classifier saved in ``folder`` (random weights)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=512, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1})).save_pretrained(folder)
    return folder


def head_for(src: Path | None, tmp: Path) -> tuple[subprocess.Popen, str]:
    """A Ray head (3 CPUs) whose workers import ``src``'s movierec (None: this checkout's)."""
    port = _port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    if src is not None:
        env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--num-cpus=3",
                             f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                             "--disable-usage-stats", f"--ray-client-server-port={_port()}",
                             f"--temp-dir={tmp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    if head.wait(timeout=180) != 0:
        raise SystemExit("ray start --head failed")
    return head, f"127.0.0.1:{port}"


def stop(head: subprocess.Popen, tmp: Path) -> None:
    """The head's processes (its process group: not `ray stop`, which would stop every Ray
    on the machine) and its folder."""
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reviews", type=int, default=100_000)
    ap.add_argument("--chars", type=int, default=2000, help="characters a review, about")
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--before", help="a commit to measure beside this checkout")
    ap.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    ap.add_argument("--append", action="store_true", help="keep the rows already in the results file")
    a = ap.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = Path(tempfile.mkdtemp(prefix="movierec-raysent-"))
    rows = []
    try:
        data = tmp / "data"
        text_bytes = make_data(data, a.reviews, a.parts, a.chars)
        model = tiny_model(tmp / "tiny-model")
        print(f"{a.reviews:,} reviews ({text_bytes / 2**20:.0f} MB of text) in {a.parts} parts", flush=True)
        with checkouts(a.before, tmp / "trees") as sites:
            for label, src in sites.items():
                for engine in a.engines:
                    head = address = None
                    if engine == "ray":
                        head, address = head_for(src, Path(tempfile.mkdtemp(prefix="r", dir="/tmp")))
                    try:
                        work = tmp / "work"
                        shutil.rmtree(work, ignore_errors=True)
                        cfg = tmp / "c.yaml"
                        cfg.write_text(
                            f"workdir: {work}\ndata:\n  dir: {data}\n  reviews: reviews\nsplit:\n  method: random\n"
                            f"sentiment:\n  model: {model}\n  text_features: false\n  max_chars: 4000\n"
                            "social:\n  enabled: false\n"
                            f"engine:\n  kind: {engine}\n  workers: 2\n" + (f"  address: {address}\n" if address else ""))
                        wi, gi = run(src, ["-q", "ingest", "--config", str(cfg)])
                        run(src, ["-q", "clean", "--config", str(cfg)])
                        ws, gs = run(src, ["-q", "sentiment", "--config", str(cfg)])
                        scored = len(pd.read_parquet(work / "artifacts" / "review_sentiment.parquet"))
                    finally:
                        if head is not None:
                            stop(head, Path(head.args[-1].split("=", 1)[1]))
                    rows.append((a.reviews, text_bytes, label, engine, wi, gi, ws, gs, scored))
                    print(f"  {label:>22} {engine:>5}: ingest {wi:6.1f} s {gi:5.2f} GB | sentiment {ws:6.1f} s "
                          f"{gs:5.2f} GB ({scored:,} reviews scored, {a.reviews / ws:,.0f} texts/s)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write(rows, a)


def write(rows, a) -> None:
    out = RESULTS / "ray_sentiment_memory.md"
    head, keep = out.read_text().split(KEEP, 1) if out.exists() and KEEP in out.read_text() else ("", "\n")
    kept = [ln for ln in head.splitlines() if ln.startswith("| ") and ln[2:3].isdigit()] if a.append else []
    lines = [
        "# The driver's memory when reviews are read and scored: engine.kind ray against local", "",
        f"Machine: {machine()}  ",
        f"Command: `python benchmarks/ray_sentiment_memory.py --reviews {a.reviews} --chars {a.chars} "
        f"--parts {a.parts}" + (f" --before {a.before}" if a.before else "")
        + (f" --engines {' '.join(a.engines)}" if a.engines != ["local", "ray"] else "") + (" --append" if a.append else "")
        + "`" + (" (added to the rows above it)" if kept else "") + "  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
        "Each command in a fresh process; the peak is the driver's own (`VmHWM`). Ray: 2 workers on a Ray head "
        "the script started for the checkout (3 CPUs). `sentiment` runs with ingest and clean cached and an "
        "empty score cache; a tiny BERT classifier scores (the model's own cost kept small).", "",
        "| reviews | MB of text | checkout | engine | `ingest` s | driver peak GB | `sentiment` s | driver peak GB "
        "| texts/s (whole command) |",
        "|---|---|---|---|---|---|---|---|---|",
        *kept,
    ]
    for n, tb, label, engine, wi, gi, ws, gs, _ in rows:
        lines.append(f"| {n:,} | {tb / 2**20:.0f} | {label} | {engine} | {wi:.1f} | {gi:.2f} | {ws:.1f} | {gs:.2f} "
                     f"| {n / ws:,.0f} |")
    out.write_text("\n".join(lines) + "\n\n" + KEEP + keep)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
