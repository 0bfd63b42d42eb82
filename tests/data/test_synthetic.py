"""The synthetic MovieLens-shaped sets of the scale benchmarks: written whole, or part by part
by workers (each part a range of viewers, drawn from its own stream over the same shape)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from movierec.data.synthetic import write_synthetic, write_synthetic_movies, write_synthetic_part


def test_parts_by_workers_are_the_whole_sets_viewers_each_once_with_the_same_activity(tmp_path):
    n, users, movies = 60_000, 1_500, 400
    write_synthetic(tmp_path / "whole", n, users, movies, seed=2)
    whole = pd.read_csv(tmp_path / "whole" / "ratings.csv")
    got = [write_synthetic_part(tmp_path / f"part-{k}.csv", k, 3, n, users, movies, seed=2) for k in range(3)]
    parts = [pd.read_csv(tmp_path / f"part-{k}.csv") for k in range(3)]
    assert got == [len(p) for p in parts] and abs(sum(got) - n) < 0.001 * n and abs(len(whole) - n) < 0.001 * n
    # viewer ranges, in order, each viewer in one part only, rating as many movies as in the whole set
    # (a draw may fall a movie or two short of a heavy viewer's count: the whole set's too)
    assert all(parts[k]["user_id"].max() < parts[k + 1]["user_id"].min() for k in range(2))
    both = pd.concat(parts, ignore_index=True)
    a, b = both.groupby("user_id").size(), whole.groupby("user_id").size()
    assert a.index.equals(b.index) and (a == b).mean() > 0.99 and (a - b).abs().max() <= 3 and a.min() >= 20
    assert not both.duplicated(["user_id", "movie_id"]).any()
    assert set(np.unique(both["rating"])) <= set(np.arange(0.5, 5.01, 0.5))
    assert not both.equals(whole)  # their own streams: not the whole set's rows
    # the same catalogue, and its popular movies are the parts' popular movies too
    write_synthetic_movies(tmp_path / "movies.csv", n, users, movies, seed=2)
    assert (tmp_path / "movies.csv").read_bytes() == (tmp_path / "whole" / "movies.csv").read_bytes()
    top = set(whole["movie_id"].value_counts().index[:20])
    assert len(top & set(both["movie_id"].value_counts().index[:20])) >= 15


def test_too_few_ratings_for_the_viewers_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="20 each"):
        write_synthetic(tmp_path, 5_000, 300, 100)
