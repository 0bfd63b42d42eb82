"""Write MovieLens-20M-shaped synthetic data as the canonical CSVs (for scale benchmarks).

    python scripts/make_synthetic.py --out /tmp/ml20m-synth [--ratings 20000000]

The generator is movierec.data.synthetic.write_synthetic.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from movierec.data.synthetic import write_synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", type=int, default=138_493)
    ap.add_argument("--movies", type=int, default=27_278)
    ap.add_argument("--ratings", type=int, default=20_000_263)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    n = write_synthetic(args.out, args.ratings, args.users, args.movies, args.seed)
    print(f"{n['ratings']:,} ratings, {n['users']:,} users, {n['movies']:,} movies in {time.perf_counter() - t0:.0f}s "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
