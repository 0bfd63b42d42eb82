"""Issue 26: bad values that reach training (ratings off the scale's grid, absurd feature
values, ratings with nothing to learn)."""

import logging
import warnings

import numpy as np
import pandas as pd
import pytest

from movierec.config import FeaturesConfig, load_config
from movierec.data.readers import read_table
from movierec.data.scale import learn_scale, outlier_fence
from movierec.data.schemas import RATINGS
from movierec.errors import DataError
from movierec.stages.fuse import fuse
from movierec.stages.ingest import ingest
from tests.conftest import call, make_data, write_config

SIX = ("rating 6 is outside the scale of the other ratings (1..5 in steps of 1); "
       "set data.rating_min/max if it is valid")


def _stars(path, values, n=5000, seed=0, at=(10, 20, 30, 40, 50)):
    """A 1..5 whole-star file of ``n`` rows with ``values`` written on the data rows ``at``."""
    rng = np.random.default_rng(seed)
    rows = [f"u{i % 97},m{i},{v}" for i, v in enumerate(rng.integers(1, 6, n))]
    for k, v in zip(at, values):
        rows[k - 1] = f"u1,x{k},{v}"
    path.write_text("user_id,movie_id,rating\n" + "\n".join(rows) + "\n")
    return path


# 1 ------------------------------------------------------------------------------ the rating grid
def test_ratings_off_the_scale_or_its_grid_are_quarantined_with_row_and_reason(tmp_path):
    res = read_table(_stars(tmp_path / "ratings.csv", ["0", "6", "5.5", "5.0000001", "3.5"]), RATINGS)
    assert (res.scale.lo, res.scale.hi, res.scale.step) == (1.0, 5.0, 1.0)
    q = res.quarantine.set_index("row")["reason"]
    assert sorted(q.index) == [10, 20, 30, 40, 50]
    assert q[20] == SIX
    assert q[10].startswith("rating 0 is outside") and q[30].startswith("rating 5.5 is outside")
    assert q[40].startswith("rating 5.0000001 is outside")  # not shown as "5"
    assert q[50].startswith("rating 3.5 is off the grid of the other ratings (1..5 in steps of 1)")
    r = res.valid["rating"].to_numpy()
    assert r.min() == 1 and r.max() == 5 and (r == np.round(r)).all()


def test_half_stars_and_configured_bounds(tmp_path):
    halves = np.arange(0.5, 5.01, 0.5)
    s = learn_scale(np.r_[np.tile(halves, 300), 5.25, 7.0])
    assert (s.lo, s.hi, s.step) == (0.5, 5.0, 0.5)
    assert s.on_grid(np.array([3.5, 3.25])).tolist() == [True, False]
    # set bounds: nothing learned, no grid imposed (a 3.7 on a configured 1..5 scale is fine)
    p = _stars(tmp_path / "ratings.csv", ["3.7", "6"])
    res = read_table(p, RATINGS, rating_range=(1, 10))
    assert len(res.quarantine) == 0 and not res.scale.inferred and res.scale.step is None


def test_continuous_ratings_keep_the_fence(tmp_path):
    rng = np.random.default_rng(1)
    r = np.clip(rng.normal(3, 0.8, 4000), 0, 6).round(3)
    r[:2] = [1e30, -999]
    s = learn_scale(r)
    bulk = r[2:]
    assert s.step is None and (s.lo, s.hi) == (bulk.min(), bulk.max())
    rows = "".join(f"u{i % 50},m{i},{float(v)!r}\n" for i, v in enumerate(r))
    (tmp_path / "ratings.csv").write_text("user_id,movie_id,rating\n" + rows)
    res = read_table(tmp_path / "ratings.csv", RATINGS)
    assert sorted(res.quarantine["row"]) == [1, 2] and len(res.valid) == len(r) - 2


def test_a_small_whole_star_file_keeps_its_rare_edges():
    """0.1% of a small file is less than one row: a single 1 among 2..5 is a mark, not an outlier."""
    s = learn_scale(np.r_[1.0, np.tile([2.0, 3, 4, 5], 50)])
    assert (s.lo, s.hi) == (1.0, 5.0)


def test_bad_ratings_do_not_widen_the_trained_scale(tmp_path, capsys):
    data = make_data(tmp_path / "data", files=("ratings", "movies"))
    with open(data / "ratings.csv", "a") as fh:
        fh.write("u00001,m00001,0,1\nu00002,m00001,6,1\nu00003,m00001,5.5,1\nu00004,m00001,5.0000001,1\n")
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "w", model={"epochs": 2, "use_features": False})
    assert call("train", "--config", str(cfg)) == 0, capsys.readouterr().err
    q = pd.read_csv(tmp_path / "w" / "quarantine" / "ratings.csv")
    assert len(q) == 4 and SIX in set(q["reason"])
    from movierec.registry import Registry

    assert Registry(tmp_path / "w" / "models").current().meta["rating_scale"] == {"min": 1.0, "max": 5.0}


# 2 ------------------------------------------------------------------------------ feature columns
def _fuse_with_ages(ages):
    n = len(ages)
    users = pd.DataFrame({"user_idx": np.arange(n), "age": ages})
    movies = pd.DataFrame({"movie_idx": [0, 1, 2], "title": ["a", "b", "c"],
                           "genres": ["Drama", "Comedy", "Drama"], "year": [1990.0, 2001.0, 2010.0]})
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"user_idx": np.arange(n), "movie_idx": rng.integers(0, 3, n),
                          "rating": rng.integers(1, 6, n).astype(float)})
    res = fuse(users, movies, train, None, None, None, FeaturesConfig())
    return res, res.user_features[:, res.user_names.index("num__demo_age")]


def test_one_absurd_age_changes_nothing_for_the_others(caplog):
    rng = np.random.default_rng(2)
    ages = rng.integers(18, 70, 300).astype(float)
    _, clean_age = _fuse_with_ages(ages)
    bad = ages.copy()
    bad[7] = 1e30
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        res, age = _fuse_with_ages(bad)
    others = np.arange(300) != 7
    assert np.std(age[others]) > 0.9  # not flattened
    assert np.allclose(age[others], clean_age[others], atol=0.02)
    assert age[7] == age.max()  # still the oldest, clipped
    assert "1 extreme values clipped" in caplog.text
    assert res.transformers["fences"]["user"]["demo_age"][1] < 1e4


@pytest.mark.parametrize("bad", [np.inf, -np.inf, "inf", "1e400"])
def test_a_non_finite_age_becomes_missing_without_warnings(bad, caplog):
    rng = np.random.default_rng(3)
    ages = rng.integers(18, 70, 300).astype(float)
    _, clean_age = _fuse_with_ages(ages)
    col = ages.astype(object)
    col[5] = bad
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        res, age = _fuse_with_ages(col)
    assert np.isfinite(res.user_features).all()
    others = np.arange(300) != 5
    assert np.allclose(age[others], clean_age[others], atol=0.02)
    assert abs(age[5]) < 0.2  # imputed with the median
    assert "1 non-finite values treated as missing" in caplog.text


def test_outlier_fence_holds_on_a_small_sample():
    v = np.r_[np.arange(18.0, 78.0, 0.2), 1e30]
    lo, hi = outlier_fence(v)
    assert 78 <= hi < 1000 and lo < 18


# 3 ------------------------------------------------------------------------------ nothing to learn
def _cfg(path):
    return load_config(None, [f"data.dir={path}"])


@pytest.mark.parametrize("text, words", [
    ("user_id,movie_id,rating\nu1,m1,4\n", "1 valid rating: at least 10 needed"),
    ("user_id,movie_id,rating\nu1,m1,4\nu2,m1,3\n", "2 valid ratings: at least 10 needed"),
    ("user_id,movie_id,rating\n" + "".join(f"u{i},m{i % 7},4\n" for i in range(500)),
     "every rating is 4: nothing to learn"),
])
def test_ratings_with_nothing_to_learn_are_refused(tmp_path, capsys, text, words):
    (tmp_path / "ratings.csv").write_text(text)
    with pytest.raises(DataError, match=words):
        ingest(_cfg(tmp_path), learnable=True)
    ingest(_cfg(tmp_path))  # ingest alone reads such a file (an import, a check); training refuses it
    cfg = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "w")
    assert call("train", "--config", str(cfg)) == 65
    err = capsys.readouterr().err
    # the training part of the split (a share of the ratings is held out for testing)
    assert ("at least 10 needed" in err or "nothing to learn" in err) and "ratings.csv" in err
    assert not (tmp_path / "w" / "models").exists() or not any((tmp_path / "w" / "models").iterdir())


def test_ten_differing_ratings_are_enough(tmp_path):
    (tmp_path / "ratings.csv").write_text("user_id,movie_id,rating\n"
                                          + "".join(f"u{i},m{i % 3},{1 + i % 5}\n" for i in range(10)))
    assert len(ingest(_cfg(tmp_path), learnable=True).tables["ratings"]) == 10
