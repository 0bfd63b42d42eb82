"""Write the demo data set into data/demo/ (deterministic: same seed, same bytes).

    python scripts/make_demo_data.py [--out data/demo] [--users 3000] [--movies 1500]
    python scripts/make_demo_data.py --multilingual   # data/demo-multilingual/reviews.csv

``--multilingual`` writes the reviews of the mixed-language variant (each user writes in one
of en, zh, es, de, fr, pl; configs/demo-multilingual.yaml reads them beside data/demo's
other tables, which are the same).

The generator is movierec.data.synthetic.demo_tables (what it plants is described there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from movierec.data.synthetic import DEMO_LANGUAGES, demo_tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "demo")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--movies", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--multilingual", action="store_true")
    args = ap.parse_args()
    tables = demo_tables(args.users, args.movies, args.seed, DEMO_LANGUAGES if args.multilingual else None)
    if args.multilingual:
        if args.out == ap.get_default("out"):
            args.out = args.out.parent / "demo-multilingual"
        tables = {"reviews": tables["reviews"]}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df.to_csv(args.out / f"{name}.csv", index=False, lineterminator="\n")
        print(f"{name}.csv: {len(df):,} rows")


if __name__ == "__main__":
    main()
