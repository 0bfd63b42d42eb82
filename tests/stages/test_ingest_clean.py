import numpy as np
import pandas as pd
import pytest

from movierec.config import load_config
from movierec.errors import ConfigError, DataError
from movierec.stages.clean import clean, train_test
from movierec.stages.ingest import ingest


def cfg_for(data_dir, *over):
    return load_config(None, [f"data.dir={data_dir}", *over])


def test_ingest_fails_past_bad_fraction_and_passes_below(tmp_path):
    rows = ["user_id,movie_id,rating"] + [f"u{i},m{i},4" for i in range(95)] + [f"u{i},m{i},x" for i in range(5)]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    res = ingest(cfg_for(tmp_path, "data.max_bad_fraction=0.05"))
    assert len(res.tables["ratings"]) == 95 and res.stats["ratings"]["quarantined"] == 5
    with pytest.raises(DataError) as e:
        ingest(cfg_for(tmp_path, "data.max_bad_fraction=0.01"))
    assert "5 of 100 rows" in str(e.value) and "row 96" in str(e.value)


def test_optional_files_skipped(tmp_path):
    (tmp_path / "ratings.csv").write_text("user_id,movie_id,rating\n1,a,4\n")
    res = ingest(cfg_for(tmp_path))
    assert set(res.tables) == {"ratings"}


def test_social_tie_to_unknown_user_quarantined(tmp_path):
    (tmp_path / "ratings.csv").write_text("user_id,movie_id,rating\n1,a,4\n2,a,3\n")
    (tmp_path / "users.csv").write_text("user_id\n1\n2\n")
    (tmp_path / "social.csv").write_text("user_id,friend_id\n1,2\n1,99\n")
    res = ingest(cfg_for(tmp_path))
    assert res.tables["social"]["friend_id"].tolist() == ["2"]
    assert "unknown" in " ".join(res.quarantine["social"]["reason"]) or "no other file" in " ".join(res.quarantine["social"]["reason"])


def _clean(tmp_path, text, *over):
    (tmp_path / "ratings.csv").write_text(text)
    cfg = cfg_for(tmp_path, *over)
    return clean(ingest(cfg).tables, cfg)


def test_latest_rating_wins(tmp_path):
    res = _clean(tmp_path, "user_id,movie_id,rating,timestamp\n1,a,1,300\n1,a,5,100\n1,a,3,200\n2,a,2,1\n2,a,4,\n",
                 "split.method=none")
    r = res.tables["ratings"]
    assert len(r) == 2 and res.stats["duplicate_ratings_removed"] == 3
    ids = res.tables["user_ids"].set_index("user_id")["user_idx"]
    assert r.loc[r.user_idx == ids["1"], "rating"].item() == 1.0  # timestamp 300 is latest
    assert r.loc[r.user_idx == ids["2"], "rating"].item() == 2.0  # a missing timestamp sorts first


def test_dense_ids_and_splits(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["user_id,movie_id,rating,timestamp"]
    for u in range(50):
        for m in rng.choice(40, 20, replace=False):
            rows.append(f"user{u},movie{m},{rng.integers(1, 6)},{rng.integers(0, 10**6)}")
    text = "\n".join(rows) + "\n"
    res = _clean(tmp_path, text, "split.method=random", "split.test_fraction=0.25")
    r = res.tables["ratings"]
    assert r["user_idx"].max() == 49 and r["movie_idx"].max() < 40
    assert (r["fold"] == 0).mean() == pytest.approx(0.25, abs=0.04)

    res = _clean(tmp_path, text, "split.method=kfold", "split.folds=5")
    assert sorted(res.tables["ratings"]["fold"].unique()) == [0, 1, 2, 3, 4]
    counts = res.tables["ratings"]["fold"].value_counts()
    assert counts.min() > 0.8 * len(res.tables["ratings"]) / 5

    res = _clean(tmp_path, text, "split.method=temporal", "split.test_fraction=0.2")
    r = res.tables["ratings"]
    train, test = train_test(r, 0)
    for u in range(0, 50, 7):
        assert train[train.user_idx == u]["timestamp"].max() <= test[test.user_idx == u]["timestamp"].min()
    assert len(test) == 50 * 4


def test_random_split_is_stable_when_data_grows(tmp_path):
    rows = ["user_id,movie_id,rating"] + [f"u{u},m{m},3" for u in range(30) for m in range(10)]
    a = _clean(tmp_path, "\n".join(rows) + "\n", "split.method=random").tables
    more = rows + [f"new{u},m{m},4" for u in range(30) for m in range(10)]
    b = _clean(tmp_path, "\n".join(more) + "\n", "split.method=random").tables

    def test_pairs(t):
        uid = t["user_ids"]["user_id"].to_numpy()
        mid = t["movie_ids"]["movie_id"].to_numpy()
        r = t["ratings"]
        r = r[r.fold == 0]
        return set(zip(uid[r.user_idx], mid[r.movie_idx]))

    old = test_pairs(a)
    assert old and old == {p for p in test_pairs(b) if not p[0].startswith("new")}


def test_temporal_needs_timestamps(tmp_path):
    with pytest.raises(ConfigError, match="timestamp"):
        _clean(tmp_path, "user_id,movie_id,rating\n1,a,4\n", "split.method=temporal")


def test_given_split(tmp_path):
    (tmp_path / "train.csv").write_text("user_id,movie_id,rating\n1,a,4\n2,b,3\n")
    (tmp_path / "test.csv").write_text("user_id,movie_id,rating\n1,b,5\n")
    cfg = load_config(None, [f"data.dir={tmp_path}", "split.method=given", f"split.train={tmp_path}/train.csv",
                             f"split.test={tmp_path}/test.csv"])
    res = clean(ingest(cfg).tables, cfg)
    train, test = train_test(res.tables["ratings"], 0)
    assert len(train) == 2 and len(test) == 1


def test_movies_year_from_title_and_unknown_movies(tmp_path):
    (tmp_path / "movies.csv").write_text("movie_id,title,genres\na,Toy Story (1995),Animation|Children\n")
    res = _clean(tmp_path, "user_id,movie_id,rating\n1,a,4\n1,zz,3\n", "split.method=none")
    m = res.tables["movies"].set_index("movie_id")
    assert m.loc["a", "year"] == 1995 and m.loc["a", "genres"] == "Animation|Children"
    assert m.loc["zz", "title"] == "zz"
    assert isinstance(res.tables["users"], pd.DataFrame)
