"""The passes of Ray's clean (:mod:`movierec.data.ray_tables`) run as plain functions, without
Ray: viewer ids numbered range by range, rows bucketed by range, deduplicated and split, they
give the tables of the local clean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from movierec.config import load_config
from movierec.data.ray_tables import Tasks, _bounds, _range_of, clean_passes
from movierec.stages.clean import clean


def _parts(tmp_path, n_parts: int, seed: int):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_parts):
        n = int(rng.integers(40, 80))
        frames.append(pd.DataFrame({
            "user_id": pd.Categorical([f"u{x}" for x in rng.integers(0, 25, n)]),
            "movie_id": pd.Categorical([f"m{x}" for x in rng.integers(0, 15, n)]),
            "rating": rng.integers(1, 6, n).astype(np.float32),
            # equal times too: then the later row (part, then row) wins
            "timestamp": rng.integers(0, 5, n).astype(np.float64)}))
    paths = []
    for k, f in enumerate(frames):
        p = tmp_path / f"part-{k:05d}.parquet"
        f.to_parquet(p, index=False)
        paths.append(str(p))
    return frames, paths


def _side_tables() -> dict[str, pd.DataFrame]:
    """Viewers the ratings do not name too: a0 (users.csv, a tie), zz (users.csv, a review),
    b9 (a tie only)."""
    users = pd.DataFrame({"user_id": ["u3", "a0", "u7", "zz", "u12"], "age": [30, 41, 22, 35, 50]})
    reviews = pd.DataFrame({"user_id": ["u1", "u2", "zz", "u20"], "movie_id": ["m1", "m2", "m99", "m3"],
                            "text": ["great", "awful", "fine", "so so"]})
    social = pd.DataFrame({"user_id": ["u1", "u5", "b9"], "friend_id": ["u2", "a0", "u1"], "weight": [1.0, 2.0, 0.5]})
    return {"users": users, "reviews": reviews, "social": social}


@pytest.mark.parametrize("n_parts", [4, 30])  # 30: about a range a viewer, some ranges of side viewers only
@pytest.mark.parametrize("method", ["random", "kfold", "temporal", "given", "cold_users"])
def test_the_passes_give_the_local_tables(tmp_path, method, n_parts):
    frames, _ = _parts(tmp_path, n_parts, seed=7)
    side = _side_tables()
    raw: dict = {"ratings": (tmp_path, [{"file": f"part-{k:05d}.parquet"} for k in range(n_parts)]), **side}
    tables = {"ratings": pd.concat(frames, ignore_index=True), **side}
    if method == "given":  # the test ratings: one more source, one of its viewers only there
        test = pd.DataFrame({"user_id": pd.Categorical(["u1", "u2", "u99", "u99"]),
                             "movie_id": pd.Categorical(["m1", "m1", "m3", "m3"]),
                             "rating": np.float32([4, 2, 5, 1]), "timestamp": [1.0, 2.0, 3.0, 3.0]})
        raw["test"] = tables["test"] = test
    given = [f"split.train={tmp_path}", f"split.test={tmp_path / 'test.parquet'}"] if method == "given" else []
    cfg = load_config(None, [f"split.method={method}", "split.seed=3", "split.folds=3", "split.cold_fraction=0.5",
                             *given])

    def parts_of(name):
        v = raw.get(name)
        return [str(v[0] / f["file"]) for f in v[1]] if isinstance(v, tuple) else []

    out, ids = tmp_path / "out", tmp_path / "ids"
    out.mkdir()
    ids.mkdir()
    ours = clean_passes(cfg, Tasks(), raw, parts_of, out, ids, tmp_path / "scratch")
    local = clean(tables, cfg)
    got = ours.tables["ratings"].to_frame()
    want = local.tables["ratings"]
    assert list(got.columns) == list(want.columns)
    key = ["user_idx", "movie_idx", "fold", "rating", "timestamp"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True)[want.columns],
                                  want.sort_values(key).reset_index(drop=True), check_dtype=True)
    # the viewers numbered by ranges: the local id table, in parts
    assert len(ours.tables["user_ids"].files) > (1 if n_parts == 30 else 0)
    pd.testing.assert_frame_equal(ours.tables["user_ids"].to_frame(), local.tables["user_ids"])
    for name in ("users", "movies", "reviews", "social", "movie_ids"):
        pd.testing.assert_frame_equal(ours.tables[name], local.tables[name], obj=name)
    assert ours.stats == local.stats
    assert local.stats["duplicate_ratings_removed"] > 0
    if method not in ("kfold",):
        assert local.stats["test_ratings"] > 0
    if method == "given":  # the viewer found only in the test ratings: its (latest) rating is test
        uid = local.tables["user_ids"].set_index("user_id")["user_idx"]
        rows = got[got["user_idx"] == int(uid["u99"])]
        assert rows["fold"].tolist() == [0] and rows["rating"].tolist() == [1.0]


def test_the_ranges_cut_the_ids_in_order_and_cover_them():
    ids = np.array(sorted(f"v{k:04d}" for k in range(1000)), dtype=object)
    samples = [ids[::37], ids[5::41], np.array([], dtype=object)]
    bounds = _bounds(samples, 8)
    assert 1 <= len(bounds) <= 7 and list(bounds) == sorted(bounds)
    at = _range_of(ids, bounds)
    assert (np.diff(at) >= 0).all() and at[0] == 0 and at[-1] == len(bounds)
    sizes = np.bincount(at)
    assert sizes.min() > 0 and sizes.max() < 3 * 1000 / len(sizes)  # about equal
    assert len(_bounds([ids[:1]], 8)) == 0 and len(_bounds(samples, 1)) == 0


def test_feedback_appended_as_a_part_counts_as_the_local_table(tmp_path):
    """Ratings from the feedback log join parts without times (and with a column the new rows
    lack): the table's rows, empty values, per-movie counts and range are those of the local
    engine's appended frame, and it reads back as one table."""
    from movierec.catalog import read_parts
    from movierec.data.ray_tables import PART, PartsTable, _write_part, append_part
    from movierec.data.readers import empty_counts

    parts = [pd.DataFrame({"user_id": pd.Categorical(["u1", "u2"]), "movie_id": pd.Categorical(["m1", "m2"]),
                           "rating": np.float32([4, np.nan]), "note": ["a", " "]}),
             pd.DataFrame({"user_id": pd.Categorical(["u3"]), "movie_id": pd.Categorical(["m1"]),
                           "rating": np.float32([2]), "note": [None]})]
    table = PartsTable(tmp_path, files=[_write_part(p, tmp_path / PART.format(k)) for k, p in enumerate(parts)],
                       user_ids=np.array(["u1", "u2", "u3"], dtype=object))
    whole = pd.concat(parts, ignore_index=True)
    table.movie_counts = whole["movie_id"].astype(str).value_counts()
    table.nulls = empty_counts(whole)
    table.rating_min, table.rating_max, table.rated = 2.0, 4.0, 2
    new = pd.DataFrame({"user_id": ["u9", "u1"], "movie_id": ["m3", "m1"], "rating": [5.0, 1.0],
                        "timestamp": [100.0, np.nan]})
    append_part(table, new)
    local = pd.concat([whole.assign(timestamp=np.nan), new], ignore_index=True)
    assert len(table) == len(local) == 5 and table.files[-1]["file"] == PART.format(2)
    assert table.nulls == empty_counts(local)
    assert table.movie_counts.sort_index().to_dict() == local["movie_id"].astype(str).value_counts().sort_index().to_dict()
    assert (table.rating_min, table.rating_max, table.rated) == (1.0, 5.0, 4)
    assert sorted(table.user_ids) == ["u1", "u2", "u3", "u9"]
    back = read_parts(tmp_path)
    assert len(back) == 5 and back["rating"].dtype == np.float32 and back["user_id"].astype(str).tolist()[-2:] == ["u9", "u1"]
