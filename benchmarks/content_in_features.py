"""Diagnostic: review content as item features inside q_i + V y_i, against the content maps.

    python benchmarks/content_in_features.py --work /tmp/movierec-cold-start

The alternative design the cold-start issue names: the movies' review content vectors appended
to the item features y_i (so V learns from them jointly with everything else) and no map after
the fit. Same data and cold_items seeds as benchmarks/cold_start.py (run that first: it
imports the data); NDCG@10 among the new movies. Prints a table.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/movierec-cold-start")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import movierec.pipeline as pipeline
    from movierec.catalog import Catalog
    from movierec.config import load_config
    from movierec.evaluation.evaluate import measure_users, model_recommender
    from movierec.models.content import review_content
    from movierec.stages.clean import train_test

    work = Path(args.work)
    real_fuse = pipeline.fuse_for_fold
    lines = ["# Review content inside V y_i against the content maps (cold_items, ML-100K + critics)", "",
             f"Command: `python benchmarks/content_in_features.py --work {args.work}`; NDCG@10 among the new movies.",
             "", "| seed | content maps (shipped) | content columns in y_i, no map | neither (genre-only) |",
             "|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    rows = []
    for seed in range(args.seeds):
        cfg = load_config(ROOT / "configs" / "movielens-100k-critics.yaml", [
            f"data.dir={work}/data", f"workdir={work}/diag", f"split.seed={seed}", "evaluate.bootstrap_rounds=0"])
        pipeline.ensure(cfg, "fuse")
        cat = Catalog(work / "diag")
        train, test = train_test(cat.read("ratings_clean"), 0)
        n_users, n_items = len(cat.read("user_ids")), len(cat.read("movie_ids"))
        rc = review_content(cat.read("review_sentiment"), test[["user_idx", "movie_idx"]], n_users, n_items)
        extra = rc.item.copy()
        extra[:, -2:] = (extra[:, -2:] - extra[:, -2:].mean(0)) / (extra[:, -2:].std(0) + 1e-6)

        def with_content(*a, **k):
            res = real_fuse(*a, **k)
            res.item_features = np.hstack([res.item_features, extra]).astype(np.float32)
            return res

        def ndcg(**kw) -> float:
            m = pipeline.train_for_fold(cfg, cat, 0, **kw).model
            return measure_users(model_recommender(m), train, test, n_users, n_items, cfg)[0]["ndcg@10"]

        shipped = ndcg()
        no_content = replace(cfg.features, use_review_content=False)
        pipeline.fuse_for_fold = with_content
        try:
            in_y = ndcg(features=no_content)
        finally:
            pipeline.fuse_for_fold = real_fuse
        genre = ndcg(features=no_content)
        rows.append((shipped, in_y, genre))
        lines.append(f"| {seed} | {shipped:.4f} | {in_y:.4f} | {genre:.4f} |")
        print(lines[-1], flush=True)
    m = np.mean(rows, 0)
    lines.append(f"| mean | {m[0]:.4f} | {m[1]:.4f} | {m[2]:.4f} |")
    print(lines[-1])
    (ROOT / "benchmarks" / "results" / "content_in_features.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
