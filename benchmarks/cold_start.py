"""What reading reviews adds: new movies (reviews, no ratings) on MovieLens-100K + critics' quotes.

    python benchmarks/cold_start.py                      # cold_items, 5 seeds, + peers
    python benchmarks/cold_start.py --warm               # + the warm check on u1..u5 (slower)

Data (research use only, read where it lies, never copied into the project):
ratings from ../shared/datasets/ml-100k, Rotten Tomatoes critics' quotes from
../shared/datasets/ml-100k-rt-critics/reviews.csv (critics as the reviewers), imported with
`movierec data import` as a user would.

Protocol: `split.method: cold_items` (20% of the reviewed movies lose every rating to the test
part; their reviews stay), seeds 0..4. For each viewer with a positive test rating (>= 4) on a
new movie, only the new movies are ranked. Every recommender is scored by the product's own
function (`evaluation.evaluate.measure_users`) on the same users:

- movierec with review content (configs/movielens-100k-critics.yaml);
- genre-only: the same model with `features.use_review_content: false` (what movierec does
  for a new movie without review content: genres, year and crowd sentiment through V y_i);
- two diagnostic variants of the review content: without the text embedding (review count
  and mean sentiment only) and the embedding alone;
- LightFM (WARP) with the same review content (and genres) as item features;
- Cornac's CTR (collaborative topic regression on the review texts; CDL cannot score a movie
  without ratings in Cornac: see benchmarks/_cornac_peer.py);
- random (the floor). Popularity among the new movies cannot exist: they have no ratings.

Writes benchmarks/results/cold_start.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "datasets"
CRITICS_CSV = SHARED / "ml-100k-rt-critics" / "reviews.csv"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _cornac_peer
METRICS = ("ndcg@10", "recall@10", "precision@10", "coverage", "rmse")


def movierec(*args: str) -> str:
    """The CLI in a fresh process, as a user runs it."""
    out = subprocess.run([sys.executable, "-m", "movierec", *args], check=True, capture_output=True, text=True)
    return out.stdout


def import_data(ml: Path, critics: Path, dst: Path, with_reviews: bool = True) -> None:
    if (dst / "ratings.csv").exists() and (dst / "reviews.csv").exists() == with_reviews:
        return
    movierec("data", "import", "movielens-100k", "--from", str(ml), "--to", str(dst))
    if with_reviews:
        movierec("data", "import", "csv", "--from", str(critics), "--to", str(dst), "--table", "reviews",
                 "--map", "user_id=critic", "--map", "movie_id=movie_id", "--map", "text=text")


def lightfm_vectors(train: pd.DataFrame, n_users: int, n_items: int, item_feats: np.ndarray, identity: bool,
                    epochs: int = 30, seed: int = 0):
    """LightFM WARP on the training ratings (every rated movie a positive interaction), items
    described by ``item_feats`` (and their own identity column when ``identity``)."""
    import scipy.sparse as sp
    from lightfm import LightFM
    from movierec.models.mf import ScoreVectors

    inter = sp.coo_matrix((np.ones(len(train), np.float32), (train["user_idx"], train["movie_idx"])),
                          shape=(n_users, n_items)).tocsr()
    inter.data[:] = 1.0
    F = sp.csr_matrix(item_feats.astype(np.float32))
    if identity:
        F = sp.hstack([sp.identity(n_items, np.float32, format="csr"), F], format="csr")
    model = LightFM(loss="warp", no_components=64, learning_rate=0.05, item_alpha=1e-6, random_state=seed)
    model.fit(inter.tocoo(), item_features=F, epochs=epochs, num_threads=1)
    ib, ie = model.get_item_representations(F)
    ub, ue = model.get_user_representations()
    return ScoreVectors.of(0.0, ub.astype(np.float32), ib.astype(np.float32), ue, ie)


CTR = "Cornac CTR (topics of the review texts)"


def ctr_row(cat, train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_items: int, cfg, seed: int):
    """Cornac's Collaborative Topic Regression on the same split (benchmarks/_cornac_peer.py):
    a new movie scored by its texts' topic proportions."""
    from _cornac_peer import cornac_scores
    from movierec.evaluation.evaluate import Recommender, measure_users

    ids = cat.read("movie_ids")
    quotes = pd.read_csv(CRITICS_CSV, dtype={"movie_id": str})
    at = pd.Series(ids["movie_idx"].to_numpy(), index=ids["movie_id"].astype(str))
    quotes = quotes[quotes["movie_id"].isin(at.index)]
    texts = quotes.groupby(quotes["movie_id"].map(at))["text"].apply(lambda t: " ".join(map(str, t))).to_dict()
    cold = np.unique(test["movie_idx"].to_numpy())
    t = time.perf_counter()
    S = cornac_scores(train, n_users, n_items, texts, cold, seed=seed)

    def rank(users, k, seen):
        s = S[users].copy()
        s[seen[users].toarray() > 0] = -np.inf
        return np.argsort(-s, axis=1, kind="stable")[:, :k]

    res, us = measure_users(Recommender(lambda u, i: np.full(len(u), np.nan), rank_fn=rank), train, test,
                            n_users, n_items, cfg)
    res.pop("rmse", None)
    res.pop("mae", None)
    return res, us, time.perf_counter() - t


def one_seed(cfg_path: Path, data: Path, work: Path, seed: int, rounds: int, ctr: bool = True) -> dict:
    from movierec.catalog import Catalog
    from movierec.config import load_config
    from movierec.evaluation import stats
    from movierec.evaluation.evaluate import Recommender, baseline_recommenders, measure_users, model_recommender
    from movierec.models import content as content_mod
    from movierec.pipeline import ensure, train_for_fold
    from movierec.stages.clean import train_test
    from movierec.stages.fuse import genre_matrix

    cfg = load_config(cfg_path, [f"data.dir={data}", f"workdir={work}", f"split.seed={seed}",
                                 f"evaluate.bootstrap_rounds={rounds}"])
    t0 = time.perf_counter()
    ensure(cfg, "fuse")
    cat = Catalog(work)
    ratings = cat.read("ratings_clean")
    train, test = train_test(ratings, 0)
    n_users, n_items = len(cat.read("user_ids")), len(cat.read("movie_ids"))
    args = (train, test, n_users, n_items, cfg)
    rows: dict[str, tuple[dict, object, float]] = {}

    def fit(name: str, **kw) -> None:
        t = time.perf_counter()
        m = train_for_fold(cfg, cat, 0, **kw).model
        res, us = measure_users(model_recommender(m), *args)
        rows[name] = (res, us, time.perf_counter() - t)

    fit("movierec, review content")
    fit("genre-only (no_review_content)", features=replace(cfg.features, use_review_content=False))
    real = content_mod.review_content
    for name, keep in (("review count + sentiment only (no embedding)", slice(-2, None)),
                       ("embedding only (no count, no sentiment)", slice(0, -2))):
        def variant(*a, keep=keep, **k):
            rc = real(*a, **k)
            if rc is None:
                return None
            mask = np.zeros(rc.item.shape[1], bool)
            mask[keep] = True
            return rc._replace(item=np.where(mask, rc.item, 0.0).astype(np.float32),
                               user=np.where(mask, rc.user, 0.0).astype(np.float32))
        content_mod.review_content = variant
        try:
            fit(name)
        finally:
            content_mod.review_content = real

    # LightFM with the same review content (+ genres) as item features
    rc = real(cat.read("review_sentiment"), test[["user_idx", "movie_idx"]], n_users, n_items)
    _, genres = genre_matrix(cat.read("movies_clean"))
    feats = np.hstack([rc.item[:, :-2], (rc.item[:, -2:] - rc.item[:, -2:].mean(0)) / (rc.item[:, -2:].std(0) + 1e-6),
                       genres])
    # (with an identity column per movie as well, seed 0 gave 0.1285: the new movies' identity
    # columns are never trained and drown their content; left out, it costs 3 minutes a seed)
    for identity in (False,):
        t = time.perf_counter()
        v = lightfm_vectors(train, n_users, n_items, feats, identity, seed=seed)
        name = "LightFM WARP, review content + genres" + (" + item identity" if identity else "")
        res, us = measure_users(Recommender(lambda u, i: np.full(len(u), np.nan), vectors=v), *args)
        res.pop("rmse", None)
        rows[name] = (res, us, time.perf_counter() - t)
    if ctr:
        res, us, secs = ctr_row(cat, train, test, n_users, n_items, cfg, seed)
        rows[CTR] = (res, us, secs)
    rnd = baseline_recommenders(train, n_users, n_items, ["random"])["random"]
    res, us = measure_users(rnd, *args)
    rows["random"] = (res, us, 0.0)

    ours = rows["movierec, review content"][1]
    out = {"seed": seed, "new_movies": int(test["movie_idx"].nunique()), "test_ratings": int(len(test)),
           "users_ranked": int(rows["random"][0].get("users_ranked", 0)), "seconds": time.perf_counter() - t0,
           "rows": {}}
    for name, (res, us, secs) in rows.items():
        entry = {m: res.get(m) for m in METRICS if res.get(m) is not None and np.isfinite(res.get(m))}
        entry["seconds"] = secs
        if us is not ours:
            tests = stats.paired(ours, us, ["ndcg@10"], rounds, seed)
            entry["paired_ndcg"] = tests.get("ndcg@10")
        out["rows"][name] = entry
    # the product's own verdict, as `movierec evaluate` prints it (this seed's split)
    return out


def add_ctr(work: Path, rounds: int, rerender_only: bool = False) -> None:
    """Cornac CTR added to a finished run's results (benchmarks/results/cold_start.json): the
    same seeds re-split in the same workdir, CTR and the paired test against movierec's model
    on each; the report is written again."""
    from movierec.catalog import Catalog
    from movierec.config import load_config
    from movierec.evaluation import stats
    from movierec.evaluation.evaluate import measure_users, model_recommender
    from movierec.pipeline import ensure, train_for_fold
    from movierec.stages.clean import train_test

    saved = json.loads((RESULTS / "cold_start.json").read_text())
    for run in [] if rerender_only else saved["runs"]:
        seed = run["seed"]
        cfg = load_config(ROOT / "configs" / "movielens-100k-critics.yaml", [
            f"data.dir={work}/data", f"workdir={work}/work", f"split.seed={seed}",
            f"evaluate.bootstrap_rounds={rounds}"])
        ensure(cfg, "fuse")
        cat = Catalog(work / "work")
        ratings = cat.read("ratings_clean")
        train, test = train_test(ratings, 0)
        n_users, n_items = len(cat.read("user_ids")), len(cat.read("movie_ids"))
        _, ours = measure_users(model_recommender(train_for_fold(cfg, cat, 0).model), train, test, n_users, n_items,
                                cfg)
        res, us, secs = ctr_row(cat, train, test, n_users, n_items, cfg, seed)
        entry = {m: res.get(m) for m in METRICS if res.get(m) is not None and np.isfinite(res.get(m))}
        entry["seconds"] = secs
        entry["paired_ndcg"] = stats.paired(ours, us, ["ndcg@10"], rounds, seed).get("ndcg@10")
        rows = dict(run["rows"])
        rnd = rows.pop("random")
        run["rows"] = {**rows, CTR: entry, "random": rnd}
        print(f"seed {seed}: CTR {entry['ndcg@10']:.4f} ({secs:.0f} s)", flush=True)
    cli = evaluate_cli(ROOT / "configs" / "movielens-100k-critics.yaml", work / "data", work / "work", 0)
    if not rerender_only:
        saved["cmd"] = saved.get("cmd", "python benchmarks/cold_start.py --warm") + \
            " && python benchmarks/cold_start.py --add-ctr"
    text = report(saved["runs"], cli, saved.get("warm"), saved["cmd"], saved.get("demo", ""))
    (RESULTS / "cold_start.md").write_text(text)
    (RESULTS / "cold_start.json").write_text(json.dumps(saved, indent=1, default=float))
    print(text)


def evaluate_cli(cfg_path: Path, data: Path, work: Path, seed: int) -> dict:
    t = time.perf_counter()
    doc = json.loads(movierec("evaluate", "--config", str(cfg_path), f"data.dir={data}", f"workdir={work}",
                              f"split.seed={seed}", "--format", "json"))
    doc["_wall"] = time.perf_counter() - t
    return doc


def warm_check(data: Path, data_plain: Path, work: Path) -> list[dict]:
    """u1..u5 with the shipped ML-100K config: without reviews (today) and with the critics'
    reviews and review content (the critics-config's sentiment settings)."""
    out = []
    for k in range(1, 6):
        split = [f"split.train={{d}}/splits/u{k}.train.csv", f"split.test={{d}}/splits/u{k}.test.csv"]
        for label, cfg, d, extra in (
                ("ML-100K config, ratings only", "configs/movielens-100k.yaml", data_plain, []),
                ("with critics' reviews + review content", "configs/movielens-100k-critics.yaml", data,
                 ["split.method=given", "evaluate.ablations=[]", "evaluate.baselines=[]"])):
            doc = json.loads(movierec("evaluate", "--config", str(ROOT / cfg), f"data.dir={d}",
                                      f"workdir={work}/warm-{label[:4]}", *[s.format(d=d) for s in split], *extra,
                                      "evaluate.bootstrap_rounds=0", "--format", "json"))
            out.append({"fold": k, "label": label, "rmse": doc["rmse"], "ndcg@10": doc["ndcg@10"]})
            print(f"warm u{k} {label}: RMSE {doc['rmse']:.4f} NDCG@10 {doc['ndcg@10']:.4f}", flush=True)
    return out


DEMO_RUNS = (
    ("all viewers (random split)", ["split.method=random"], ["no_sentiment", "no_review_content"]),
    ("new movies (cold_items)", ["split.method=cold_items"], ["no_sentiment", "no_review_content"]),
    ("viewers who only write (cold_users)", ["split.method=cold_users"], ["no_sentiment", "no_review_content"]),
)


def demo_runs(work: Path) -> str:
    """The demo (configs/default.yaml): the verdicts of no_review_content and no_sentiment for
    every viewer, for new movies and for viewers whose ratings are all unknown."""
    lines = ["", "## The demo (`configs/default.yaml`): what each review signal adds", "",
             "| protocol | model NDCG@10 | RMSE | popularity NDCG@10 | verdicts |", "|---|---|---|---|---|"]
    for label, split, abl in DEMO_RUNS:
        doc = json.loads(movierec("evaluate", "--config", str(ROOT / "configs" / "default.yaml"),
                                  f"workdir={work}/demo", *split, f"evaluate.ablations=[{','.join(abl)}]",
                                  "evaluate.baselines=[popularity, random]", "--format", "json"))
        verdicts = "; ".join(v["verdict"] for k, v in doc.get("significance", {}).items()
                             if k in abl and v.get("verdict"))
        pop = doc["baselines"]["popularity"].get("ndcg@10", float("nan"))
        lines.append(f"| {label} | {doc['ndcg@10']:.4f} | {doc['rmse']:.4f} | {pop:.4f} | {verdicts} |")
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def machine() -> str:
    """The benchmarks' machine line, with the peers of this benchmark."""
    from _bench_common import _version, machine as base

    return f"{base()}, lightfm {_version('lightfm')}, cornac {_version('cornac')}"


def fmt_ci(values: list[float]) -> str:
    from movierec.evaluation.stats import fold_interval

    ci = fold_interval(values)
    m = float(np.mean(values))
    return f"{m:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def report(runs: list[dict], cli: dict, warm: list[dict] | None, cmd: str, demo: str = "") -> str:
    names = list(runs[0]["rows"])
    base = "genre-only (no_review_content)"
    lines = [
        "# Cold start: new movies with reviews and no ratings (MovieLens-100K + critics' quotes)", "",
        f"Command: `{cmd}`  ", f"Machine: {machine()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
        "Data: ratings from MovieLens-100K (GroupLens), 6.3k Rotten Tomatoes critics' quotes on 865 of its movies "
        "(`../shared/datasets/ml-100k-rt-critics`, critics as reviewers; research use, read in place). "
        f"Split `cold_items`, 20% of the reviewed movies new (no rating in training), seeds "
        f"{', '.join(str(r['seed']) for r in runs)}: "
        f"{np.mean([r['new_movies'] for r in runs]):.0f} new movies, "
        f"{np.mean([r['users_ranked'] for r in runs]):.0f} viewers ranked per seed, each ranking only the new "
        "movies. Mean over seeds with a 95% t-interval over seeds; the paired test is movierec's bootstrap over "
        "the same viewers (per seed; the largest p of the five shown).", "",
        "| recommender | NDCG@10 | recall@10 | coverage of new movies | RMSE (new movies) | vs movierec: "
        "NDCG@10 difference (p, max over seeds) | × genre-only |",
        "|---|---|---|---|---|---|---|",
    ]
    g = np.mean([r["rows"][base]["ndcg@10"] for r in runs])
    for n in names:
        vals = [r["rows"][n] for r in runs]
        nd = [v["ndcg@10"] for v in vals]
        pair = [v.get("paired_ndcg") for v in vals]
        ptxt = "-" if not pair[0] else (f"{-np.mean([p['difference'] for p in pair]):+.4f} "
                                        f"(p ≤ {max(p['p_value'] for p in pair):.3f})")
        rm = [v["rmse"] for v in vals if "rmse" in v]
        lines.append(f"| {n} | {fmt_ci(nd)} | {fmt_ci([v['recall@10'] for v in vals])} | "
                     f"{np.mean([v.get('coverage', np.nan) for v in vals]):.3f} | "
                     f"{fmt_ci(rm) if rm else '-'} | {ptxt} | {np.mean(nd) / g:.2f} |")
    lines += ["", "Per seed, NDCG@10:", "",
              "| seed | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in runs:
        lines.append(f"| {r['seed']} | " + " | ".join(f"{r['rows'][n]['ndcg@10']:.4f}" for n in names) + " |")
    if cli:
        lines += ["", f"`movierec evaluate` on seed 0 (a fresh process, {cli['_wall']:.0f} s), its verdicts:", ""]
        lines += [f"- {v['verdict']}" for v in cli.get("significance", {}).values() if v.get("verdict")]
    if warm:
        df = pd.DataFrame(warm)
        lines += ["", "## Warm check: the same reviews on the given splits u1..u5", "",
                  "| | RMSE | NDCG@10 |", "|---|---|---|"]
        for label, grp in df.groupby("label", sort=False):
            lines.append(f"| {label} | {fmt_ci(grp['rmse'].tolist())} | {fmt_ci(grp['ndcg@10'].tolist())} |")
    return "\n".join(lines) + "\n" + demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ml100k", default=str(SHARED / "ml-100k"))
    ap.add_argument("--critics", default=str(SHARED / "ml-100k-rt-critics" / "reviews.csv"))
    ap.add_argument("--work", default="/tmp/movierec-cold-start")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=200, help="bootstrap resamples of the paired tests")
    ap.add_argument("--warm", action="store_true", help="also the warm check on u1..u5")
    ap.add_argument("--demo", action="store_true", help="also the demo's verdicts (all, cold_items, cold_users)")
    ap.add_argument("--only-demo", action="store_true", help="only the demo's verdicts (printed)")
    ap.add_argument("--add-ctr", action="store_true", help="add Cornac CTR to the saved results (same seeds)")
    ap.add_argument("--rerender", action="store_true", help="the saved results' report again, with a new "
                                                             "`movierec evaluate` of seed 0")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work)
    if args.add_ctr or args.rerender:
        add_ctr(work, args.rounds, rerender_only=args.rerender)
        return
    if args.only_demo:  # added to the saved results' report when there are some
        demo = demo_runs(work)
        saved_path = RESULTS / "cold_start.json"
        if saved_path.exists():
            saved = json.loads(saved_path.read_text())
            md = (RESULTS / "cold_start.md").read_text()
            if saved.get("demo"):
                md = md.replace(saved["demo"], "")
            saved["demo"] = demo
            (RESULTS / "cold_start.md").write_text(md + demo)
            saved_path.write_text(json.dumps(saved, indent=1, default=float))
        print(demo)
        return
    data, plain = work / "data", work / "data-ratings-only"
    import_data(Path(args.ml100k), Path(args.critics), data)
    cfg = ROOT / "configs" / "movielens-100k-critics.yaml"
    runs = []
    for seed in range(args.seeds):
        r = one_seed(cfg, data, work / "work", seed, args.rounds)
        runs.append(r)
        print(f"seed {seed}: " + ", ".join(f"{n} {v['ndcg@10']:.4f}" for n, v in r["rows"].items()), flush=True)
    cli = evaluate_cli(cfg, data, work / "work", 0)
    warm = None
    if args.warm:
        import_data(Path(args.ml100k), Path(args.critics), plain, with_reviews=False)
        warm = warm_check(data, plain, work)
    demo = demo_runs(work) if args.demo else ""
    cmd = "python benchmarks/cold_start.py" + (" --warm" if args.warm else "") + (" --demo" if args.demo else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    # the measurements first: a report that fails to render can be rendered again (--rerender)
    (RESULTS / "cold_start.json").write_text(json.dumps({"runs": runs, "warm": warm, "cmd": cmd, "demo": demo},
                                                        indent=1, default=float))
    text = report(runs, cli, warm, cmd, demo)
    (RESULTS / "cold_start.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
