"""Generate MovieLens-20M-shaped synthetic data as the canonical CSVs (for scale benchmarks).

138,493 users, 27,278 movies and 20 million ratings by default, with a long-tailed
popularity (Zipf-like), long-tailed user activity (log-normal), ratings on 0.5..5 in
half stars from a rank-8 taste model, unix timestamps, and a movies.csv with genres.

    python scripts/make_synthetic.py --out /tmp/ml20m-synth [--ratings 20000000]

Written in chunks with pyarrow, so memory stays well under 2 GB.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western"]


def _sample_unique(rng, users, counts, cdf, ni):
    """Each user rates counts[u] distinct movies, drawn by popularity (then uniformly to top up)."""
    need = counts.copy()
    seen = np.zeros(0, dtype=np.int64)
    for attempt in range(6):
        if need.sum() == 0:
            break
        draw_u = np.repeat(users, need * 2)
        if attempt < 4:
            draw_i = np.minimum(np.searchsorted(cdf, rng.random(len(draw_u))), ni - 1)
        else:
            draw_i = rng.integers(0, ni, len(draw_u))
        key = draw_u.astype(np.int64) * ni + draw_i
        key = key[~np.isin(key, seen)]
        key = np.unique(key)  # sorted by user, then movie
        rng.shuffle(key)
        key = key[np.argsort(key // ni, kind="stable")]  # back to user order, movies shuffled
        u = key // ni
        starts = np.searchsorted(u, users)
        ends = np.searchsorted(u, users, side="right")
        take = np.minimum(ends - starts, need)
        keep = np.concatenate([np.arange(a, a + t) for a, t in zip(starts, take)]) if take.sum() else np.zeros(0, int)
        chosen = key[keep]
        seen = np.concatenate([seen, chosen])
        need = need - take
    seen.sort()
    return (seen // ni).astype(np.int32), (seen % ni).astype(np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--users", type=int, default=138_493)
    ap.add_argument("--movies", type=int, default=27_278)
    ap.add_argument("--ratings", type=int, default=20_000_263)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    nu, ni, k = args.users, args.movies, 8

    # catalogue: popularity ~ Zipf over a random order of movies
    rank = rng.permutation(ni) + 1
    pop = 1.0 / rank ** 1.05
    pop /= pop.sum()
    cdf = np.cumsum(pop)
    genre_ids = rng.integers(0, len(GENRES), size=(ni, 2))
    movies = pa.table({
        "movie_id": np.arange(1, ni + 1),
        "title": [f"Synthetic Movie {i} ({1920 + i % 100})" for i in range(1, ni + 1)],
        "genres": [f"{GENRES[a]}|{GENRES[b]}" if a != b else GENRES[a] for a, b in genre_ids],
    })
    pacsv.write_csv(movies, out / "movies.csv")

    # users: activity log-normal, scaled to the requested total (at least 20 each, as in ML-20M)
    act = rng.lognormal(0.0, 1.1, nu)
    counts = np.maximum(20, np.round(act / act.sum() * args.ratings)).astype(np.int64)
    counts = np.minimum(counts, ni // 2)
    excess = counts.sum() - args.ratings
    if excess > 0:  # trim the heaviest users to hit the total exactly
        order = np.argsort(-counts)
        take = np.minimum(counts[order] - 20, np.ceil(excess / 1000).astype(int))
        cum = np.cumsum(take)
        n = np.searchsorted(cum, excess) + 1
        counts[order[:n]] -= take[:n]
        counts[order[n - 1]] += cum[n - 1] - excess
    P = rng.normal(0, 0.35, (nu, k)).astype(np.float32)
    Q = rng.normal(0, 0.35, (ni, k)).astype(np.float32)
    bu = rng.normal(0, 0.35, nu).astype(np.float32)
    bi = (rng.normal(0, 0.3, ni) + 0.3 * np.log(pop * ni)).astype(np.float32)

    starts = np.r_[0, np.cumsum(counts)]
    chunk_users = 5000
    with pacsv.CSVWriter(out / "ratings.csv", pa.schema([("user_id", pa.int32()), ("movie_id", pa.int32()),
                                                        ("rating", pa.float32()), ("timestamp", pa.int64())])) as w:
        for u0 in range(0, nu, chunk_users):
            u1 = min(nu, u0 + chunk_users)
            n = int(starts[u1] - starts[u0])
            users, items = _sample_unique(rng, np.arange(u0, u1), counts[u0:u1], cdf, ni)
            n = len(users)
            raw = 3.5 + bu[users] + bi[items] + np.einsum("ij,ij->i", P[users], Q[items]) + rng.normal(0, 0.7, n)
            rating = np.clip(np.round(raw * 2) / 2, 0.5, 5.0).astype(np.float32)
            ts = rng.integers(789_652_009, 1_427_784_002, n)
            w.write_table(pa.table({"user_id": users + 1, "movie_id": items + 1, "rating": rating, "timestamp": ts}))
    print(f"{int(counts.sum()):,} ratings, {nu:,} users, {ni:,} movies in {time.perf_counter() - t0:.0f}s -> {out}")


if __name__ == "__main__":
    main()
