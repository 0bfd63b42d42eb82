"""Benchmarks of movierec against peers, measured side by side in one run.

    python scripts/benchmark.py topn                                      # top-N against top-N peers (evaluate)
    python scripts/benchmark.py ml100k  --data ../shared/datasets/ml-100k   # accuracy, ranking, speed
    python scripts/benchmark.py ciaodvd                                   # rating accuracy vs Surprise
    python scripts/benchmark.py scale   --ratings 20000000                   # 20M synthetic: train, recommend --all
    python scripts/benchmark.py sentiment --data ../shared/datasets/rt-polarity  # accuracy, texts/s, cache
    python scripts/benchmark.py serving [--synthetic DIR]                # refit cost, recommend --user + feedback
    python scripts/benchmark.py scale-out                                 # engine.kind ray (local Ray) vs local

Each writes a Markdown table to benchmarks/results/ with the machine, versions and command.
``topn`` is the product itself: ``movierec evaluate`` with the peers as baselines
(``evaluate.baselines``, movierec.evaluation.peers) on each data set's shipped config. The other
subcommands live by topic in benchmarks/ (accuracy_bench, ciaodvd_bench, filmtrust_bench, scale_bench,
sentiment_bench); this file dispatches to them. Surprise and implicit come from the optional
`bench` extra (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _bench_common import KEEP, K, RESULTS, machine  # noqa: E402 - benchmarks/ is on the path above

#: the benchmark modules under benchmarks/, each with ``register(subparsers)``
MODULES = ("accuracy_bench", "ciaodvd_bench", "filmtrust_bench", "scale_bench", "sentiment_bench")

# ----------------------------------------------------------------------------- top-N against top-N peers
TOPN_DATA = {
    # name: (importer, config, folds: "given" u1..u5 or the config's k folds)
    "ml100k": ("movielens-100k", "movielens-100k.yaml", "given"),
    "filmtrust": ("filmtrust", "filmtrust.yaml", "kfold"),
    "ciaodvd": ("ciaodvd", "ciaodvd.yaml", "kfold"),
}
PEERS = ["popularity", "ease", "als", "bpr", "item_knn", "rp3beta"]
LABELS = {"popularity": "popularity", "ease": "EASE (lambda {lam:g})", "als": "implicit ALS (64 factors, 15 iterations)",
          "bpr": "implicit BPR (64 factors, 100 iterations)", "item_knn": "implicit item-kNN (cosine, 100 neighbours)",
          "rp3beta": "RP3beta (alpha 0.8, beta 0.5, 100 neighbours)"}


def topn_folds(name: str, data: Path, work: Path, overrides: list[str]) -> list[dict]:
    """``evaluate`` on the data set's own config: one result per fold (ML-100K: u1..u5)."""
    from movierec.config import load_config
    from movierec.evaluation.evaluate import evaluate

    _, cfg_name, kind = TOPN_DATA[name]
    base = [f"data.dir={data}", f"workdir={work}", "evaluate.ablations=[]", *overrides]
    if kind == "given":
        return [evaluate(load_config(ROOT / "configs" / cfg_name, base + [
            f"workdir={work}-u{i}", f"split.train={data}/splits/u{i}.train.csv",
            f"split.test={data}/splits/u{i}.test.csv"])) for i in range(1, 6)]
    res = evaluate(load_config(ROOT / "configs" / cfg_name, base + ["split.method=kfold"]))
    return [dict(f, significance=res["significance"]) for f in res["folds"]]


def _verdict(runs: list[dict], peer: str) -> str:
    """The paired test of NDCG@K against ``peer``: k folds pooled (one test), given splits one each."""
    from movierec.evaluation.stats import p_words

    tests = [((r.get("significance") or {}).get(peer) or {}).get(f"ndcg@{K}") for r in runs]
    if not all(tests):
        return "-"
    if all(t is tests[0] for t in tests):
        return f"{tests[0]['difference']:+.4f}, {p_words(tests[0]['p_value'], tests[0].get('rounds'))}"
    won = sum(t["better"] and t["p_value"] < 0.05 for t in tests)
    lost = sum(not t["better"] and t["p_value"] < 0.05 for t in tests)
    return f"{np.mean([t['difference'] for t in tests]):+.4f}; better on {won}, worse on {lost} of {len(tests)} (p < 0.05)"


def bench_topn(args) -> str:
    """Top-10 lists of movierec and the top-N peers, each benchmark its data set's config and
    ``evaluate.baselines``; the table is evaluate's result read back."""
    import logging

    from movierec.config import load_config
    from movierec.data.datasets import import_dataset
    from movierec.evaluation.peers import ease_lambda

    logging.basicConfig(level=logging.WARNING)
    sources = {"ml100k": args.ml100k, "filmtrust": args.filmtrust, "ciaodvd": args.ciaodvd}
    nd, sections, summary = f"ndcg@{K}", [], []
    cols = [nd, f"precision@{K}", f"recall@{K}", f"map@{K}", "coverage"]
    for name in args.datasets:
        root = Path(tempfile.mkdtemp(prefix=f"mr-topn-{name}-"))
        import_dataset(TOPN_DATA[name][0], Path(sources[name]), root / "data")
        lam = ease_lambda(load_config(ROOT / "configs" / TOPN_DATA[name][1]))
        per: dict[str, list[dict]] = {}
        for ranking in args.rankings:
            runs = topn_folds(name, root / "data", root / f"w-{ranking}", [
                f"model.ranking={ranking}", f"evaluate.baselines=[{','.join(PEERS)}]"])
            ours = f"movierec, ranking {ranking}" + (f" (lambda {lam:g})" if ranking == "ease" else "")
            per[ours] = [dict(r, fit=r["fit_seconds"] + r.get("ranking_fit_seconds", 0.0)) for r in runs]
            for p in PEERS:  # the peers once (the same fits whatever movierec's ranking)
                per.setdefault(LABELS[p].format(lam=lam), [dict(r["baselines"][p], fit=r["baselines"][p].get(
                    "fit_seconds", 0.0), peer=p) for r in runs])
            per[ours + " verdicts"] = runs
            print(f"{name}, ranking {ranking}: " + ", ".join(f"{k.split(' (')[0]} {np.mean([r[nd] for r in v]):.4f}"
                                                            for k, v in per.items() if "verdicts" not in k),
                  file=sys.stderr, flush=True)
        rows = sorted(((k, v) for k, v in per.items() if not k.endswith(" verdicts")),
                      key=lambda kv: not kv[0].startswith("movierec"))  # movierec first, then the peers
        ours_keys = [k for k, _ in rows if k.startswith("movierec")]
        lines = ["| model | " + " | ".join(cols) + f" | RMSE | fit s (median) | {nd} cold users | {nd} known users | "
                 f"{nd} per fold | " + " | ".join(f"{k[10:]}: {nd} difference, p" for k in ours_keys) + " |",
                 "|---" * (len(cols) + 6 + len(ours_keys)) + "|"]
        for label, runs in rows:
            mean = {c: float(np.mean([r[c] for r in runs])) for c in cols}
            split = [r.get("users_split", {}) for r in runs]
            part = lambda g: np.mean([s[g][nd] for s in split if nd in s.get(g, {})]) if any(  # noqa: E731
                nd in s.get(g, {}) for s in split) else None
            cells = ["-" if part(g) is None else f"{part(g):.4f}" for g in ("cold", "known")]
            rmse = f"{np.mean([r['rmse'] for r in runs]):.4f}" if "rmse" in runs[0] else "-"
            verdicts = ["" if label.startswith("movierec") else _verdict(per[o + " verdicts"], runs[0]["peer"])
                        for o in ours_keys]
            lines.append(f"| {label} | " + " | ".join(f"{mean[c]:.4f}" for c in cols) +
                         f" | {rmse} | {statistics.median(r['fit'] for r in runs):.2f} | {cells[0]} | {cells[1]} | " +
                         " ".join(f"{r[nd]:.4f}" for r in runs) + " | " + " | ".join(verdicts) + " |")
        pop = per["popularity"]
        peers = {k: float(np.mean([r[nd] for r in v])) for k, v in rows if not k.startswith("movierec")}
        best = max(peers, key=peers.get)
        cold = [r["users_split"]["cold"].get("users_ranked", 0) for r in per[ours_keys[0]]]
        known = [r["users_split"]["known"].get("users_ranked", 0) for r in per[ours_keys[0]]]
        for ours in ours_keys:
            mine = float(np.mean([r[nd] for r in per[ours]]))
            above = sum(a[nd] > b[nd] for a, b in zip(per[ours], pop))
            summary.append(f"| {name} | {ours[10:]} | {mine:.4f} | {best} {peers[best]:.4f} | {above} of {len(pop)} | "
                           f"{'yes' if mine >= peers[best] else 'no'} |")
        sections.append(f"## {name} ({len(pop)} folds; ranked test users per fold: {np.mean(cold):.0f} cold (no "
                        f"training rating), {np.mean(known):.0f} known)\n\n" + "\n".join(lines))
    return "\n\n".join([
        "# Top-N against top-N peers",
        f"Machine: {machine()}  \nCommand: `python scripts/benchmark.py topn`  \nDate: {time.strftime('%Y-%m-%d %H:%M')}",
        "Every figure is `movierec evaluate`'s (each data set's shipped config, `evaluate.ablations=[]`, "
        f"`evaluate.baselines=[{','.join(PEERS)}]`): each fold's training ratings are the only input (peers get "
        "them as implicit feedback), every movie the user did not rate in training is ranked, test ratings at or "
        "above the config's threshold are the positives, users with at least one positive are scored. Users "
        "without a training rating (cold) get the most rated movies from every peer, and from movierec unless "
        "their reviews gave it something (`evaluate.unseen_users: fallback`); their NDCG and the known "
        "users' are apart. Difference, p: movierec minus the peer, paired bootstrap over the test users "
        "(k folds pooled; ML-100K: each given split tested, counted).",
        "| data | movierec | NDCG@10 | best peer (mean) | folds above popularity | at or above the best peer |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(summary),
        *sections,
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="which", required=True)
    tn = sub.add_parser("topn", help="top-N against top-N peers: movierec evaluate with the peers as baselines")
    tn.add_argument("--datasets", nargs="+", default=list(TOPN_DATA), choices=list(TOPN_DATA))
    tn.add_argument("--ml100k", default=str(ROOT.parent / "shared" / "datasets" / "ml-100k"))
    tn.add_argument("--filmtrust", default=str(ROOT.parent / "shared" / "datasets" / "filmtrust"))
    tn.add_argument("--ciaodvd", default=str(ROOT.parent / "shared" / "datasets" / "ciaodvd"))
    tn.add_argument("--out", default=str(RESULTS / "topn.md"))
    tn.add_argument("--rankings", nargs="+", default=["hybrid", "ease"], choices=["hybrid", "ease", "rating"])
    tn.set_defaults(run=bench_topn)
    for name in MODULES:
        importlib.import_module(name).register(sub)
    args = ap.parse_args()
    text = args.run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and KEEP in out.read_text():  # hand-written notes below the marker survive a rerun
        text += "\n\n" + KEEP + out.read_text().split(KEEP, 1)[1].rstrip("\n")
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
