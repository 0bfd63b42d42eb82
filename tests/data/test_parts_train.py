"""Training from ratings in parts (movierec.data.parts_train) as plain functions: the hashed
validation slice, the parts' figures, a worker's slice of the rows, and seen.npz streamed from
per-part pieces equal to the registry's own (scipy) file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from movierec.data.parts_train import (PartsRatings, held_out, read_rows, shards, summarize, write_seen)
from movierec.data.ray_tables import Tasks
from movierec.registry import Registry


def _parts(tmp_path, n_users=300, n_items=80, n_parts=4, row_group=97, seed=0, by_range=True):
    """Ratings as clean writes them on Ray: part k holds a range of viewers, rows in no order
    (``by_range=False``: parts of any rows, as a user's own parts may be)."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, size=6000, replace=False)
    df = pd.DataFrame({"user_idx": (pairs // n_items).astype(np.int32), "movie_idx": (pairs % n_items).astype(np.int32),
                       "rating": rng.integers(1, 6, len(pairs)).astype(np.float32),
                       "fold": rng.integers(0, 5, len(pairs)).astype(np.int8)})
    cuts = np.linspace(0, n_users, n_parts + 1).astype(int)
    folder = tmp_path / "ratings_clean"
    folder.mkdir()
    which = rng.integers(0, n_parts, len(df))
    for k in range(n_parts):
        mine = (df["user_idx"] >= cuts[k]) & (df["user_idx"] < cuts[k + 1]) if by_range else which == k
        part = df[mine].sample(frac=1, random_state=k)
        part.to_parquet(folder / f"part-{k:05d}.parquet", index=False, row_group_size=row_group)
    return folder, df


def test_held_out_is_a_stable_share_of_any_pairs():
    u, i = np.repeat(np.arange(400), 250), np.tile(np.arange(250), 400)
    a = held_out(u, i, seed=3, fraction=0.1)
    assert abs(a.mean() - 0.1) < 0.005
    # the same pairs in another order and split across calls: the same answer
    order = np.random.default_rng(0).permutation(len(u))
    b = np.concatenate([held_out(u[order[:777]], i[order[:777]], 3, 0.1), held_out(u[order[777:]], i[order[777:]], 3, 0.1)])
    assert np.array_equal(a[order], b)
    assert not np.array_equal(a, held_out(u, i, seed=4, fraction=0.1))  # another seed, another slice
    assert not held_out(u, i, 3, 0.0).any()


@pytest.mark.parametrize("by_range", [True, False])
def test_summary_counts_what_the_local_fit_computes(tmp_path, by_range):
    folder, df = _parts(tmp_path, by_range=by_range)
    src = summarize(PartsRatings.of(folder, 2, 300, 80), Tasks(), seed=5, fraction=0.2)
    train = df[df["fold"] != 2]
    val = held_out(train["user_idx"].to_numpy(), train["movie_idx"].to_numpy(), 5, 0.2)
    fit = train[~val]
    assert (src.rated, src.n_train, src.n_val) == (len(train), len(fit), int(val.sum()))
    assert src.global_mean == pytest.approx(fit["rating"].mean(), rel=1e-9)
    assert (src.rating_min, src.rating_max) == (train["rating"].min(), train["rating"].max())
    assert np.array_equal(src.user_counts, np.bincount(fit["user_idx"], minlength=300))
    assert np.array_equal(src.item_counts, np.bincount(fit["movie_idx"], minlength=80))


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_workers_read_every_training_row_once(tmp_path, workers):
    folder, df = _parts(tmp_path)
    src = PartsRatings.of(folder, 1, 300, 80)
    whole = pd.concat([pd.read_parquet(f) for f in src.files], ignore_index=True)
    got = [read_rows(src.files, src.rows, lo, hi, 1) for lo, hi in shards(src.rows, workers)]
    sizes = [len(g[0]) for g in got]
    assert max(sizes) - min(sizes) < 0.1 * max(sizes) + 50  # balanced (the fold filter aside)
    u, i, r = (np.concatenate([g[k] for g in got]) for k in range(3))
    expect = whole[whole["fold"] != 1]
    assert np.array_equal(u, expect["user_idx"]) and np.array_equal(i, expect["movie_idx"])
    assert np.array_equal(r, expect["rating"]) and u.dtype == np.int32 and r.dtype == np.float32


def test_seen_from_pieces_equals_the_registrys_file(tmp_path):
    folder, df = _parts(tmp_path)
    n_users, n_items = 310, 80  # viewers past the last rated one: empty rows
    gone = np.r_[0:3, 74, 150:160]  # and before the first, at a part's end, across two parts
    for f in folder.glob("part-*.parquet"):
        t = pd.read_parquet(f)
        t[~t["user_idx"].isin(gone)].to_parquet(f, index=False, row_group_size=97)
    df = df[~df["user_idx"].isin(gone)]
    rng = np.random.default_rng(1)
    reviewed = pd.concat([df.sample(40, random_state=2)[["user_idx", "movie_idx"]],  # rated
                          pd.DataFrame({"user_idx": rng.integers(0, n_users, 60), "movie_idx": rng.integers(0, n_items, 60)})])
    ref = tmp_path / "ref"
    ref.mkdir()
    Registry._write_seen(ref, df, reviewed, n_users, n_items)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "seen.npz"
    files = [str(f) for f in sorted(folder.glob("part-*.parquet"))][::-1]  # any order of parts
    n = write_seen(out, files, Tasks(), n_users, n_items, reviewed["user_idx"].to_numpy(),
                   reviewed["movie_idx"].to_numpy(), scratch)
    assert n == len(df) and not list(scratch.iterdir())  # the pieces are removed once copied
    with np.load(ref / "seen.npz") as a, np.load(out) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
        assert len(b["watched_indices"]) > 0


def test_seen_refuses_parts_whose_viewers_overlap(tmp_path):
    folder, df = _parts(tmp_path, n_parts=2)
    extra = df[df["user_idx"] < 5].copy()
    extra["movie_idx"] = (extra["movie_idx"] + 1) % 80
    extra.drop_duplicates(["user_idx", "movie_idx"]).to_parquet(folder / "part-00002.parquet", index=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = [str(f) for f in sorted(folder.glob("part-*.parquet"))]
    with pytest.raises(ValueError, match="hold the same viewers"):
        write_seen(tmp_path / "seen.npz", files, Tasks(), 300, 80, np.zeros(0), np.zeros(0), scratch)


def test_the_id_table_in_parts_is_copied_into_one_file_in_order(tmp_path):
    """A version's user_ids.parquet from the id table's parts (Ray's clean), a row group at a
    time: the ids by dense index; parts that do not number the viewers in order are refused."""
    from movierec.data.parts_train import IdParts
    from movierec.errors import ModelError

    folder = tmp_path / "user_ids"
    folder.mkdir()
    ids = [f"v{k:04d}" for k in range(1000)]
    cuts = [0, 300, 301, 1000]
    for j in range(3):
        pd.DataFrame({"user_idx": np.arange(cuts[j], cuts[j + 1], dtype=np.int32), "user_id": ids[cuts[j]:cuts[j + 1]]}
                     ).to_parquet(folder / f"part-{j:05d}.parquet", index=False, row_group_size=128)
    assert IdParts(folder).write_parquet(tmp_path / "user_ids.parquet") == 1000
    got = pd.read_parquet(tmp_path / "user_ids.parquet")
    assert got["user_id"].tolist() == ids and got["user_idx"].tolist() == list(range(1000))
    (folder / "part-00001.parquet").rename(folder / "part-00009.parquet")  # range 1 after range 2
    with pytest.raises(ModelError, match="in order"):
        IdParts(folder).write_parquet(tmp_path / "again.parquet")
