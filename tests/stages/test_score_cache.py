"""The score cache on disk (movierec.sentiment.cache): rows looked up by key without loading
the cache, a later row of a key winning; a run's rows merged into the file a row group at a
time, atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from movierec.sentiment import cache as C


def _rows(keys, score, features=None, language=None) -> pd.DataFrame:
    df = pd.DataFrame({"key": keys, "sentiment": np.float32(score)})
    if features is not None:
        df["features"] = [features] * len(keys)
    if language is not None:
        df["language"] = language
    return df


@pytest.fixture
def files(tmp_path):
    """The cache's file (k0..k199, scores only, row groups of 50) and two parts an interrupted
    run left: k10..k19 scored again with features, then k15 once more and language rows."""
    base = tmp_path / "sentiment.parquet"
    _rows([f"k{i}" for i in range(200)], 0.1).to_parquet(base, index=False, row_group_size=50)
    p1, p2 = tmp_path / "part-1.parquet", tmp_path / "part-2.parquet"
    _rows([f"k{i}" for i in range(10, 20)], 0.5, features=b"\x00\x3c").to_parquet(p1, index=False)
    pd.concat([_rows(["k15"], 0.9, features=b"\x00\x40"),
               pd.DataFrame({"key": ["lang:a", "lang:b"], "language": ["en", "fr"]})]).to_parquet(p2, index=False)
    return base, p1, p2


def test_a_lookup_reads_only_the_keys_asked_and_the_last_row_wins(files, monkeypatch):
    cache = C.ScoreCache(files=files)
    base = str(files[0])
    read = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, g, columns=None, **kw: read.append((g, tuple(columns))) or real(self, g, columns, **kw))
    C.lookup_groups(base, None, ["sentiment", "features"], pa.array(["k3", "k120", "k121"]))
    # every row group's keys; the scores of the two row groups with a key asked for only
    assert read == [(0, ("key",)), (0, ("key", "sentiment")), (1, ("key",)), (2, ("key",)), (2, ("key", "sentiment")),
                    (3, ("key",))]
    assert cache.columns() == {"key", "sentiment", "features", "language"} and cache.file_rows() == 213
    got = cache.lookup(["k3", "k15", "k12", "lang:b", "nowhere"], ["sentiment", "features"])
    assert sorted(got.index) == ["k12", "k15", "k3", "lang:b"] and list(got.columns) == ["sentiment", "features"]
    assert got.loc["k3", "sentiment"] == np.float32(0.1) and got.loc["k3", "features"] is None
    assert got.loc["k12", "sentiment"] == np.float32(0.5) and got.loc["k12", "features"] == b"\x00\x3c"
    assert got.loc["k15", "sentiment"] == np.float32(0.9) and got.loc["k15", "features"] == b"\x00\x40"
    assert np.isnan(got.loc["lang:b", "sentiment"])
    langs = cache.lookup(["lang:a", "k1"], ["language"])["language"]
    assert langs["lang:a"] == "en" and pd.isna(langs["k1"]) and len(langs) == 2
    # a column no file has is left out; nothing asked, nothing read
    assert list(cache.lookup(["k1"], ["sentiment", "other"]).columns) == ["sentiment"]
    assert cache.lookup([], ["sentiment"]).empty
    # rows in memory come before the files'
    mixed = C.ScoreCache(_rows(["k1", "mem"], 0.7), files=files[:1]).lookup(["k1", "mem"], ["sentiment"])
    assert mixed["sentiment"].to_dict() == {"k1": np.float32(0.1), "mem": np.float32(0.7)}


def test_an_aligned_lookup_gives_a_value_per_key_as_lookup_does(files):
    cache = C.ScoreCache(_rows(["k1", "mem"], 0.7), files=files)
    asked = ["k3", "k15", "nowhere", "k12", "lang:b", "mem", "k15"]
    want = cache.lookup(asked, ["sentiment", "features", "language"]).reindex(asked)
    for keys in (asked, np.array(asked, dtype="S")):  # str, or bytes (what the stage passes)
        got = cache.lookup_aligned(keys, ["sentiment", "features", "language", "other"])
        assert got["sentiment"].dtype == np.float32 and got["sentiment"].flags.writeable
        np.testing.assert_array_equal(got["sentiment"], want["sentiment"].to_numpy(np.float32))
        assert list(got["features"]) == [None, b"\x00\x40", None, b"\x00\x3c", None, None, b"\x00\x40"]
        assert list(got["language"]) == [None, None, None, None, "fr", None, None]
        assert list(got["other"]) == [None] * len(asked)  # a column no file has: none for each
    langs = cache.lookup_aligned(["lang:a", "lang:b", "lang:a"], ["language"])["language"]
    assert list(langs) == ["en", "fr", "en"] and langs[0] is langs[2]  # one str object per language
    assert np.isnan(C.ScoreCache().lookup_aligned(["k1"], ["sentiment"])["sentiment"]).all()


def test_rows_handed_to_the_checkpoint_are_not_kept_and_the_merge_folds_them_in(tmp_path):
    from tests.stages.test_sentiment import CountingScorer

    saved = []

    def checkpoint(rows):
        saved.append(tmp_path / f"part-{len(saved)}.parquet")
        rows.to_parquet(saved[-1], index=False)

    c = C.CachedScorer(CountingScorer, "m", None, checkpoint=checkpoint, checkpoint_every=3, features=True)
    texts = [f"a good film {k}" for k in range(8)]
    scores, feats = c.score_features(texts)
    assert len(saved) == 2 and [len(r) for r in c.new_rows] == [2]  # 3 + 3 saved; the last 2 held
    c.save_pending()
    assert len(saved) == 3 and c.new_rows == []
    base = tmp_path / "sentiment.parquet"
    assert C.merge(base, saved, None, row_group=4) == 8
    assert [pq.ParquetFile(base).metadata.row_group(g).num_rows for g in range(2)] == [4, 4]  # whole row groups
    again = C.CachedScorer(CountingScorer, "m", C.ScoreCache(files=[base]), features=True)
    s2, f2 = again.score_features(texts)
    assert again.misses == 0
    np.testing.assert_array_equal(s2, scores)
    np.testing.assert_array_equal(f2, feats)
    # the run's tables as they are held (a list, in order): a later row of a key wins
    base2 = tmp_path / "two.parquet"
    assert C.merge(base2, saved[:1], [_rows(["x", "y"], 0.1), _rows(["y"], 0.2)]) == 5
    got = pd.read_parquet(base2).set_index("key")["sentiment"]
    assert got["y"] == np.float32(0.2) and got["x"] == np.float32(0.1) and got.index.is_unique


def test_distinct_keys_are_hashed_in_arrow_in_the_order_they_come():
    from movierec.stages.sentiment import distinct_keys

    keys = ["b" * 32, "", "a" * 32, "b" * 32, "c" * 40]
    codes, uniques = distinct_keys(pa.array(keys))
    assert uniques.dtype.kind == "S" and [u.decode() for u in uniques] == ["b" * 32, "", "a" * 32, "c" * 40]
    assert codes.tolist() == [0, 1, 2, 0, 3]
    codes, uniques = distinct_keys(pa.array(keys[2:], pa.large_string()))
    assert [u.decode() for u in uniques] == ["a" * 32, "b" * 32, "c" * 40] and codes.tolist() == [0, 1, 2]


def test_a_scorer_over_the_files_scores_only_what_they_lack(files):
    from tests.stages.test_sentiment import CountingScorer

    base = files[0]
    texts = ["a good film", "a dull film"]
    c = C.CachedScorer(CountingScorer, "m", None)
    c.score(texts)
    C.merge(base, [], pd.concat(c.new_rows))
    again = C.CachedScorer(CountingScorer, "m", C.ScoreCache(files=[base]))
    np.testing.assert_array_equal(again.score(texts + ["a third film"]), [0.5, -0.5, -0.5])
    assert again.misses == 1  # only the text the file lacks
    # features wanted: a cached score without them is scored again
    feats = C.CachedScorer(CountingScorer, "m", C.ScoreCache(files=[base]), features=True)
    feats.score(texts)
    assert feats.misses == 2


def test_merge_folds_the_rows_in_a_row_group_at_a_time(files, monkeypatch):
    base, p1, p2 = files
    new = pd.concat([_rows(["k15", "k300"], 0.3, features=b"\x00\x44"),
                     pd.DataFrame({"key": ["lang:c"], "language": ["de"]})], ignore_index=True)
    before = C.ScoreCache(files=files).load()
    read = []
    real = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", lambda self, g, **kw: read.append(g) or real(self, g, **kw))
    rows = C.merge(base, [p1, p2], new, row_group=64)
    assert read == [0, 1, 2, 3]  # the old file's row groups, one at a time
    out = pd.read_parquet(base)
    assert rows == len(out) == 204 and out["key"].is_unique
    assert list(out.columns) == ["key", "sentiment", "features", "language"]
    expected = pd.concat([before, new]).drop_duplicates("key", keep="last").set_index("key").sort_index()
    def nulls_as_none(df):
        return df.astype(object).where(df.notna(), None)

    pd.testing.assert_frame_equal(nulls_as_none(out.set_index("key").sort_index()), nulls_as_none(expected))
    assert out.set_index("key").loc["k15", "sentiment"] == np.float32(0.3)
    assert max(pq.ParquetFile(base).metadata.row_group(g).num_rows
               for g in range(pq.ParquetFile(base).num_row_groups)) <= 64
    # a first run: no file yet
    first = base.with_name("first.parquet")
    assert C.merge(first, [], new) == 3 and pd.read_parquet(first)["key"].tolist() == ["k15", "k300", "lang:c"]


def test_a_merge_that_fails_leaves_the_file_as_it_was(files, monkeypatch):
    base, p1, _ = files
    was = base.read_bytes()

    def broken(self, table, *a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        C.merge(base, [p1], _rows(["k999"], 0.2))
    assert base.read_bytes() == was and not list(base.parent.glob(".*.tmp"))


def test_a_cache_file_that_cannot_be_read_is_set_aside_and_named(files, caplog):
    base, p1, p2 = files
    whole = base.read_bytes()
    base.write_bytes(whole[: len(whole) // 2])  # torn: no footer
    pd.DataFrame({"other": [1]}).to_parquet(p2, index=False)  # Parquet, but not the cache's
    with caplog.at_level("WARNING", "movierec"):
        assert C.readable([base, p1, p2]) == [p1]
    assert not base.exists() and base.with_name("sentiment.parquet.damaged").read_bytes() == whole[: len(whole) // 2]
    assert p2.with_name("part-2.parquet.damaged").exists()
    assert f"the score cache file {base} cannot be read" in caplog.text and "no key column" in caplog.text
