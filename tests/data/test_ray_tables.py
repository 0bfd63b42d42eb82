"""The two passes of Ray's clean (:mod:`movierec.data.ray_tables`) as plain functions, without
Ray: bucketed by viewer, deduplicated and split, they give the rows of the local clean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from movierec.config import load_config
from movierec.data.ray_tables import _ids_one, _map_one, _reduce_one
from movierec.stages.clean import _index, clean


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


@pytest.mark.parametrize("buckets", [3, 64])  # 64: a bucket a viewer, some with test ratings only
@pytest.mark.parametrize("method", ["random", "kfold", "temporal", "given"])
def test_bucketed_clean_gives_the_local_rows(tmp_path, method, buckets):
    frames, paths = _parts(tmp_path, 4, seed=7)
    sources = [(0, p) for p in paths]
    tables = {"ratings": pd.concat(frames, ignore_index=True)}
    if method == "given":  # the test ratings: one more part, one of its viewers only there
        test = pd.DataFrame({"user_id": pd.Categorical(["u1", "u2", "u99", "u99"]),
                             "movie_id": pd.Categorical(["m1", "m1", "m3", "m3"]),
                             "rating": np.float32([4, 2, 5, 1]), "timestamp": [1.0, 2.0, 3.0, 3.0]})
        tp = tmp_path / "test.parquet"
        test.to_parquet(tp, index=False)
        sources.append((1, str(tp)))
        tables["test"] = test
    given = [f"split.train={tmp_path}", f"split.test={tmp_path / 'test.parquet'}"] if method == "given" else []
    cfg = load_config(None, [f"split.method={method}", "split.seed=3", "split.folds=3", *given])
    ids = [_ids_one(p) for _, p in sources]
    uid = _index([pd.Series(np.concatenate([u for u, _ in ids]), dtype=object)])
    mid = _index([pd.Series(np.concatenate([m for _, m in ids]), dtype=object)])
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    out.mkdir()
    for i, (s, p) in enumerate(sources):
        _map_one(i, p, s, uid, mid, buckets, True, str(scratch))
    got = [_reduce_one(k, str(scratch), str(out), cfg, uid, mid, None, len(mid)) for k in range(buckets)]
    ours = pd.concat([pd.read_parquet(out / g["entry"]["file"]) for g in got if g["entry"]], ignore_index=True)
    local = clean(tables, cfg)
    want = local.tables["ratings"]
    assert list(ours.columns) == list(want.columns)
    key = ["user_idx", "movie_idx", "fold", "rating", "timestamp"]
    pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True)[want.columns],
                                  want.sort_values(key).reset_index(drop=True), check_dtype=True)
    assert sum(g["dups"] for g in got) == local.stats["duplicate_ratings_removed"] > 0
    if method != "kfold":
        assert sum(g["test"] for g in got) == local.stats["test_ratings"] > 0
    if method == "given":  # the viewer found only in the test ratings: its (latest) rating is test
        u99 = int(uid.get_loc("u99"))
        rows = ours[ours["user_idx"] == u99]
        assert rows["fold"].tolist() == [0] and rows["rating"].tolist() == [1.0]
