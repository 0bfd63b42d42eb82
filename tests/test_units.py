"""Unit tests of pure functions that the end-to-end tests reach only through the CLI."""

import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from movierec.config import load_config
from movierec.errors import DataError, ModelError


@pytest.fixture
def cfg(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("workdir: w\n")
    return load_config(p)


# ----------------------------------------------------------------------------- refresh.input_checks
def test_input_checks_name_each_problem(cfg):
    from movierec.refresh import input_checks

    last = {"ratings_rows": 1000, "null_share": {"users.age": 0.1}, "rating_scale": [1, 5]}
    ok = {"ratings_rows": 990, "null_share": {"users.age": 0.15}, "rating_scale": [1, 5], "unknown_movie_share": 0.0}
    assert input_checks(ok, last, cfg) == []
    bad = {"ratings_rows": 300, "null_share": {"users.age": 0.9}, "rating_scale": [0, 100],
           "unknown_movie_share": 0.5}
    problems = " | ".join(input_checks(bad, last, cfg))
    for part in ("ratings rows fell from 1000 to 300", "empty values in users.age", "rating scale changed",
                 "50.0% of ratings name movies missing"):
        assert part in problems
    assert input_checks(bad, None, cfg) == [p for p in input_checks(bad, None, cfg) if "movies missing" in p]


# ----------------------------------------------------------------------------- registry
def _version(root, name, created, status=None, fmt=3):
    d = root / name
    d.mkdir(parents=True)
    (d / "model.npz").write_bytes(b"x")
    (d / "meta.json").write_text(json.dumps({"created": created, "format": fmt}))
    if status:
        (d / "gate.json").write_text(json.dumps({"status": status}))
    return d


def test_registry_orders_by_creation_time_and_prunes_only_versions(tmp_path):
    from movierec.registry import Registry

    reg = Registry(tmp_path)
    a, b, c = "20260104T000000Z-0000000a", "20260103T000000Z-0000000b", "20260101T000000Z-0000000c"
    _version(tmp_path, b, "2026-01-03T00:00:00.000000Z")
    _version(tmp_path, a, "2026-01-04T00:00:00.000000Z")
    _version(tmp_path, c, "2026-01-01T00:00:00.000000Z")
    (tmp_path / "notes").mkdir()
    (tmp_path / ".tmp-x-1").mkdir()
    assert [v.name for v in reg.versions()] == [c, b, a]
    (tmp_path / "current").write_text(f"{c}\n")
    assert reg.apply_retention(1) == [b]  # keeps the newest and current
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-x-1", c, a, "current", "notes"]
    assert reg.cleanup_temp() == 1 and not (tmp_path / ".tmp-x-1").exists()


def test_registry_rollback_skips_rejected_and_old_formats(tmp_path):
    from movierec.registry import Registry

    reg = Registry(tmp_path)
    _version(tmp_path, "20260101T000000Z-00000001", "2026-01-01T00:00:00.000000Z", "promoted")
    _version(tmp_path, "20251201T000000Z-00000000", "2025-12-01T00:00:00.000000Z", "promoted", fmt=1)
    _version(tmp_path, "20260102T000000Z-00000002", "2026-01-02T00:00:00.000000Z", "rejected")
    _version(tmp_path, "20260103T000000Z-00000003", "2026-01-03T00:00:00.000000Z", "promoted")
    (tmp_path / "current").write_text("20260103T000000Z-00000003\n")
    v3 = reg.get("20260103T000000Z-00000003")
    older = [v.name for v in reg.versions() if v.created < v3.created and v.status != "rejected" and v.format == 3]
    assert older == ["20260101T000000Z-00000001"]
    assert reg.pending("20260103T000000Z-00000003") is None and reg.pending("20260102T000000Z-00000002") is None
    (tmp_path / "20260102T000000Z-00000002" / "gate.json").write_text(json.dumps({"status": "passed"}))
    assert reg.pending("20260102T000000Z-00000002").name == "20260102T000000Z-00000002"
    with pytest.raises(ModelError, match="format 1"):
        reg.get("20251201T000000Z-00000000").check_format()
    with pytest.raises(ModelError, match="no model version 'zzz'"):
        reg.get("zzz")
    (tmp_path / "current").write_text("../x\n")
    with pytest.raises(ModelError, match="not a version name"):
        reg.current_name()


# ----------------------------------------------------------------------------- stage freshness and config hashing
def test_freshness_follows_inputs_and_config(tmp_path):
    from movierec.catalog import Catalog
    from movierec.pipeline import is_fresh, stage_config_hash

    c1 = load_config(None, [f"workdir={tmp_path}", "social.pagerank_alpha=0.8"])
    c2 = load_config(None, [f"workdir={tmp_path}", "social.pagerank_alpha=0.9"])
    assert stage_config_hash("social", c1) != stage_config_hash("social", c2)
    assert stage_config_hash("clean", c1) == stage_config_hash("clean", c2)  # social is not clean's business
    cat = Catalog(tmp_path)
    entry = cat.write("social_features", pd.DataFrame({"user_idx": [0]}))
    cat.write_manifest("social", {"clean.x": "h"}, stage_config_hash("social", c1), {"social_features": entry}, 1.0)
    cat.write_manifest("clean", {}, "", {"x": {"file": "social_features.parquet", "rows": 1, "hash": "h"}}, 1.0)
    assert is_fresh("social", c1, cat) and not is_fresh("social", c2, cat)
    cat.write_manifest("clean", {}, "", {"x": {"file": "social_features.parquet", "rows": 1, "hash": "other"}}, 1.0)
    assert not is_fresh("social", c1, cat)  # an input changed
    cat.write_manifest("clean", {}, "", {"x": {"file": "social_features.parquet", "rows": 1, "hash": "h"}}, 1.0)
    assert is_fresh("social", c1, cat)
    # artifacts are not fsynced: one whose data a power loss took (another size) is stale
    p = cat.path("social_features")
    p.write_bytes(p.read_bytes()[:-7])
    assert entry["bytes"] > 7 and not is_fresh("social", c1, cat)


# ----------------------------------------------------------------------------- catalog
def test_catalog_round_trip_and_atomic_writes(tmp_path):
    from movierec.catalog import Catalog, atomic_path

    cat = Catalog(tmp_path)
    df = pd.DataFrame({"user_idx": [1, 2], "movie_idx": [3, 4]})
    e = cat.write("ratings_clean", df)
    assert e["rows"] == 2 and len(e["hash"]) == 16 and cat.read("ratings_clean").equals(df)
    cat.write("user_features", {"X": np.ones((3, 2)), "names": np.array(["a", "b"])})
    assert cat.read("user_features")["X"].shape == (3, 2)
    cat.write("feedback_state", {"offset": 5, "last_time": None})
    assert cat.read("feedback_state") == {"offset": 5, "last_time": None}
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert not (tmp_path / "x.txt").exists() and not list(tmp_path.glob(".x.txt.*"))


def test_tables_kept_in_memory_are_what_the_disk_holds(tmp_path):
    """A stage reads what the one before wrote from memory: the same values and dtypes as
    from disk, a reader's changes never reach the next reader, and a file another process
    replaced (or a removed artifact) is read again."""
    import movierec.catalog as C

    cat = C.Catalog(tmp_path)
    df = pd.DataFrame({"user_idx": np.array([1, 2, 3], np.int32), "rating": np.array([4.5, 3.0, 1.0], np.float32),
                       "fold": np.array([-1, 0, -1], np.int16)})
    cat.write("ratings_clean", df)
    C.forget_tables()
    disk = cat.read("ratings_clean")
    cat.write("ratings_clean", df)
    kept = cat.read("ratings_clean")
    pd.testing.assert_frame_equal(kept, disk)
    kept.loc[0, "rating"] = 99.0
    kept["extra"] = 1
    again = cat.read("ratings_clean")
    assert again.loc[0, "rating"] == 4.5 and "extra" not in again.columns
    # replaced behind the catalogue's back: the new file wins
    pd.DataFrame({"user_idx": np.array([7], np.int32), "rating": np.array([2.0], np.float32),
                  "fold": np.array([0], np.int16)}).to_parquet(cat.path("ratings_clean"), index=False)
    assert cat.read("ratings_clean")["user_idx"].tolist() == [7]
    # ids and texts are never kept from a write (their dtypes change on the way to disk)
    ids = pd.DataFrame({"user_idx": np.array([0], np.int32), "user_id": ["u1"]})
    cat.write("user_ids", ids)
    assert str(cat.path("user_ids")) not in C._KEPT
    pd.testing.assert_frame_equal(cat.read("user_ids"), pd.read_parquet(cat.path("user_ids")))
    cat.remove("ratings_clean")
    assert str(cat.path("ratings_clean")) not in C._KEPT and not cat.exists("ratings_clean")


# ----------------------------------------------------------------------------- feedback
def test_feedback_after_a_torn_line_keeps_the_new_event(tmp_path):
    from movierec.feedback import append_event, read_events

    append_event(tmp_path, "u1", "m1", rating=4)
    with open(tmp_path / "feedback" / "events.jsonl", "ab") as fh:  # a writer killed mid-line
        fh.write(b'{"time": 1, "user_id": "u00001", "rat')
    append_event(tmp_path, "u2", "m2", rating=5)
    append_event(tmp_path, "u3", "m3", rating=3)
    assert read_events(tmp_path)["movie_id"].tolist() == ["m1", "m2", "m3"]


def test_feedback_short_write_is_undone_and_raised(tmp_path, monkeypatch):
    import os as os_mod

    from movierec import feedback
    from movierec.errors import StorageError

    feedback.append_event(tmp_path, "u1", "m1", rating=4)
    log_path = tmp_path / "feedback" / "events.jsonl"
    before = log_path.read_bytes()
    real_write = os_mod.write

    def half(fd, data):  # the disk fills up half way through the line
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(feedback.os, "write", half)
    with pytest.raises(StorageError, match="not recorded"):
        feedback.append_event(tmp_path, "u2", "m2", rating=5)
    monkeypatch.setattr(feedback.os, "write", real_write)
    assert log_path.read_bytes() == before  # nothing half-written is left
    feedback.append_event(tmp_path, "u3", "m3", rating=3)
    assert feedback.read_events(tmp_path)["movie_id"].tolist() == ["m1", "m3"]


def test_feedback_events_since_a_version(tmp_path):
    from movierec.feedback import append_event, read_events_since, snapshot

    append_event(tmp_path, "u1", "m1", rating=4)
    _, state = snapshot(tmp_path)
    append_event(tmp_path, "u1", "m2", rating=5)
    append_event(tmp_path, "u2", "m3", comment="nice")
    new = read_events_since(tmp_path, state)
    assert new["movie_id"].tolist() == ["m2", "m3"] and state["offset"] > 0
    # a log that was replaced (shorter than the offset): events after the recorded time
    (tmp_path / "feedback" / "events.jsonl").write_text(
        json.dumps({"time": state["last_time"] - 1, "user_id": "u", "movie_id": "old"}) + "\n"
        + json.dumps({"time": time.time() + 1, "user_id": "u", "movie_id": "new"}) + "\n")
    got = read_events_since(tmp_path, dict(state, offset=10 ** 9))
    assert got["movie_id"].tolist() == ["new"]


def test_feedback_check_event():
    from movierec.feedback import check_event

    check_event("m1", 4.0, {"m1"}, (1.0, 5.0))
    with pytest.raises(DataError, match="not in the catalogue"):
        check_event("zzz", 4.0, {"m1"}, (1.0, 5.0))
    with pytest.raises(DataError, match="outside the rating scale 1..5"):
        check_event("m1", 9.0, {"m1"}, (1.0, 5.0))
    check_event("anything", 9.0, None, None)  # nothing ingested yet: the run checks it


def test_fold_events_latest_rating_wins_and_shares_become_ratings():
    from movierec.feedback import fold_events

    tables = {"ratings": pd.DataFrame({"user_id": ["u1"], "movie_id": ["m1"], "rating": [2.0], "timestamp": [1.0]})}
    ev = pd.DataFrame({"time": [5.0, 6.0], "user_id": ["u1", "u2"], "movie_id": ["m1", "m2"], "rating": [5.0, np.nan],
                       "comment": [np.nan, np.nan], "share_with": [np.nan, "u1"]})
    counts = fold_events(tables, ev, share_rating=4.0)
    r = tables["ratings"]
    assert counts == {"ratings": 1, "comments": 0, "shares": 1}
    assert r.sort_values("timestamp").groupby(["user_id", "movie_id"]).last()["rating"].to_dict() == {
        ("u1", "m1"): 5.0, ("u2", "m2"): 4.0}


# ----------------------------------------------------------------------------- report rows
def test_report_formats_intervals_and_verdicts():
    from movierec.evaluation.report import _with_ci, format_table

    res = {"rmse": 0.8, "ci": {"rmse": [0.79, 0.81]}, "confidence": 0.95, "baselines": {}, "ablations": {},
           "significance": {"no_social": {"verdict": "no_social: no significant difference"}}}
    assert _with_ci(res, "rmse") == "0.8000 [0.7900, 0.8100]" and _with_ci(res, "mae") == "-"
    text = format_table(res, [10])
    assert "95% intervals: rmse 0.8000 [0.7900, 0.8100]" in text and "no_social: no significant difference" in text


def test_scale_learning_sets_absurd_values_aside():
    from movierec.data.scale import learn_scale

    r = np.r_[np.tile([1.0, 2, 3, 4, 5], 200), 1e30, -3]
    s = learn_scale(r)
    assert (s.lo, s.hi, s.inferred) == (1.0, 5.0, True)
    assert learn_scale(r, 0, 10).describe() == "0..10"
    assert os.environ.get("MOVIEREC_FAILPOINT") is None


def test_a_rotated_log_that_grew_past_the_offset_is_read_by_time(tmp_path):
    from movierec.feedback import append_event, read_events_since, snapshot

    for k in range(3):
        append_event(tmp_path, "u1", f"m{k}", rating=4)
    _, state = snapshot(tmp_path)
    log = tmp_path / "feedback" / "events.jsonl"
    log.write_text("")  # rotated away
    for k in range(6):  # ... and longer than the old offset again
        append_event(tmp_path, "u2", f"n{k}", rating=3)
    got = read_events_since(tmp_path, state)
    assert got["movie_id"].tolist() == [f"n{k}" for k in range(6)]


def test_zero_ratings_are_seen_and_short_lists_hold_no_seen_movie(tmp_path):
    """On a 0-10 scale a 0 is a rating: the movie is excluded like any other; a user with
    fewer unseen movies than n gets a shorter list, not seen movies."""
    from movierec.models.mf import MatrixFactorization, TrainData
    from movierec.registry import Registry, ServingData

    rng = np.random.default_rng(0)
    n_users, n_items = 30, 12
    rows = [(u, i, float(rng.integers(0, 11))) for u in range(n_users) for i in range(n_items) if rng.random() < 0.5]
    rows += [(0, i, 0.0) for i in range(n_items - 2)]  # user 0 rated all but two, with zeros
    df = pd.DataFrame(rows, columns=["user_idx", "movie_idx", "rating"]).drop_duplicates(["user_idx", "movie_idx"],
                                                                                       keep="last")
    m = MatrixFactorization(factors=2, epochs=3, use_features=False, watch_epochs=2).fit(
        TrainData(df.user_idx, df.movie_idx, df.rating, n_users, n_items))
    data = ServingData(model=m, holdout=None,
                       user_ids=pd.DataFrame({"user_idx": range(n_users), "user_id": [f"u{u}" for u in range(n_users)]}),
                       movies=pd.DataFrame({"movie_idx": range(n_items), "movie_id": [f"m{i}" for i in range(n_items)],
                                            "title": "t", "genres": "", "year": 2000}),
                       ratings=df, config_hash="x" * 16)
    b = Registry(tmp_path).load(Registry(tmp_path).write(data).name)
    mine = set(df.loc[df.user_idx == 0, "movie_idx"])
    assert b.seen[0].nnz == len(mine)
    got = [it["movie_id"] for it in b.recommend_user("u0", 5)["items"]]
    assert len(got) == n_items - len(mine) and not {f"m{i}" for i in mine} & set(got)
    lists = b.recommend_all(5)
    assert set(lists.loc[lists.user_id == "u0", "movie_id"]) == set(got)


# ----------------------------------------------------------------------------- stage table
def test_each_stage_is_declared_once_and_reads_only_what_it_declares(cfg):
    from movierec.pipeline import STAGE, STAGE_TABLE, STAGES, ConfigView, stage_config_hash

    assert STAGES == ("ingest", "clean", "sentiment", "social", "fuse", "train")
    for st in STAGE_TABLE:  # upstream stages come earlier
        assert all(STAGES.index(u) < STAGES.index(st.name) for u in st.upstream)
    view = ConfigView(cfg, STAGE["social"])
    assert view.social.directed == cfg.social.directed and view.workdir == cfg.workdir
    with pytest.raises(AttributeError, match="'model', which its Stage does not declare"):
        view.model
    fuse = ConfigView(cfg, STAGE["fuse"])
    assert fuse.split.fold == cfg.split.fold
    with pytest.raises(AttributeError, match="'split.seed'"):
        fuse.split.seed
    # the hash follows exactly the declared values
    import dataclasses

    moved = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, factors=cfg.model.factors + 1))
    assert stage_config_hash("social", moved) == stage_config_hash("social", cfg)
    assert stage_config_hash("train", moved) != stage_config_hash("train", cfg)
    refolded = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, fold=1))
    assert stage_config_hash("fuse", refolded) != stage_config_hash("fuse", cfg)
    assert stage_config_hash("social", refolded) == stage_config_hash("social", cfg)


def test_adam_without_tensorflow_stops_before_any_stage_naming_the_extra(monkeypatch, tmp_path):
    """TensorFlow is the `adam` extra: without it, optimizer adam is a config error (exit 78)
    that names the extra, raised before a stage runs; SGD needs nothing."""
    import importlib.util

    from movierec.errors import EXIT_CONFIG, ConfigError
    from movierec.models.mf import check_trainer
    from movierec.pipeline import ensure

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "tensorflow" else real(name, *a, **k))
    adam = load_config(None, [f"workdir={tmp_path / 'w'}", "model.optimizer=adam"])
    with pytest.raises(ConfigError, match=r"movierec\[adam\]") as err:
        check_trainer(adam.model)
    assert err.value.exit_code == EXIT_CONFIG
    check_trainer(load_config(None, [f"workdir={tmp_path / 'w'}"]).model)  # sgd: nothing to install
    with pytest.raises(ConfigError, match="TensorFlow"):
        ensure(adam, "train")
    assert not (tmp_path / "w" / "manifests").exists()  # no stage ran


# ----------------------------------------------------------------------------- cli._app.write_csv_rows
@pytest.mark.parametrize("title", ["Title, with a comma", "=HYPERLINK(\"x\")", "a\rlone carriage return", 'Quote "x"'])
def test_one_viewers_csv_is_the_bytes_pandas_writes(title):
    """`recommend --user --format csv` writes its few rows with the csv module (no pandas):
    the same bytes as write_csv of the DataFrame, formula cells, empty cells and quoting too."""
    import io

    from movierec.cli._app import write_csv, write_csv_rows

    cols = ["rank", "movie_id", "title", "year", "genres", "predicted_rating", "rank_score"]
    rows = [[1, "m1", title, 1999, "Drama", 4.123456789012345, 0.5], [2, "-m2", "+x", None, "", None, 1e-7],
            [3, "m3", "Plain", 2001, "-3", 3.0, 12.0]]
    df = pd.DataFrame({"rank": pd.Series([r[0] for r in rows], dtype="int64"),
                       "movie_id": pd.Series([r[1] for r in rows], dtype=object),
                       "title": pd.Series([r[2] for r in rows], dtype=object),
                       "year": pd.array([r[3] for r in rows], dtype="Int64"),
                       "genres": pd.Series([r[4] for r in rows], dtype=object),
                       "predicted_rating": pd.Series([r[5] for r in rows], dtype="float64"),
                       "rank_score": pd.Series([r[6] for r in rows], dtype="float64")})
    a, b = io.StringIO(), io.StringIO()
    write_csv_rows(cols, rows, a)
    write_csv(df, b)
    assert a.getvalue() == b.getvalue()
    assert "'=HYPERLINK" in a.getvalue() or "=HYPERLINK" not in title
    back = pd.read_csv(io.StringIO(a.getvalue()), keep_default_na=False, dtype=str)
    assert len(back) == 3 and back["title"][2] == "Plain" and back["predicted_rating"][1] == ""


# ----------------------------------------------------------------------------- data.scale._on_grid
def test_on_grid_is_the_tolerance_rule_with_fewer_temporaries():
    """|x - round(x)| <= 1e-9 max(1, |x|), x = r / step: stars, half stars, points, values a hair
    off the grid, NaN, infinities, huge values and -0.0 alike (the rule written out)."""
    from movierec.data.scale import _on_grid

    rng = np.random.default_rng(0)
    r = np.concatenate([rng.integers(-5, 101, 5000).astype(np.float64), rng.integers(0, 11, 500) / 2,
                        rng.normal(3, 2, 500), [np.nan, np.inf, -np.inf, 1e300, -0.0, 3 + 1e-12, 3 + 1e-6]])
    for step in (1.0, 0.5):
        x = r / step
        with np.errstate(invalid="ignore"):
            want = np.abs(x - np.round(x)) <= 1e-9 * np.maximum(1.0, np.abs(x))
            got = _on_grid(r, step)
        assert (got == want).all()
    assert _on_grid(np.array([4.5, 4.0, 3 + 1e-12, 3.2]), 0.5).tolist() == [True, True, True, False]


# ----------------------------------------------------------------------------- data.scale.levels
def test_scale_learning_from_counted_levels_is_numpys_to_the_last_bit():
    """The scale is learned from each distinct rating and its count (a hash count, not a sort
    of 2M ratings): every quantile equals np.quantile's on the ratings themselves, and the
    learned scale is what the sorted ratings give, outliers and continuous scores included."""
    from movierec.data.scale import find_grid, learn_scale, levels, outlier_fence, quantile

    rng = np.random.default_rng(3)
    qs = [0.0, 0.001, 0.01, 0.25, 0.3333, 0.5, 0.75, 0.99, 0.999, 1.0]
    for trial in range(60):
        n = int(rng.integers(1, 30_000))
        kind = trial % 5
        if kind == 0:
            r = rng.integers(1, 6, n).astype(float)
        elif kind == 1:
            r = rng.integers(0, 21, n) / 2.0
        elif kind == 2:
            r = rng.normal(3, 1, n)  # continuous: sorted
        elif kind == 3:  # rare values a sample misses: a 0, a 6, a 5.5, an absurd one
            r = np.where(rng.random(n) < 0.999, rng.integers(1, 6, n), rng.choice([0, 6, 5.5, 1e30], n)).astype(float)
        else:
            r = rng.integers(0, 101, n).astype(float)
        values, counts = levels(r)
        assert np.array_equal(np.repeat(values, counts), np.sort(r))
        for method in ("linear", "lower", "higher"):
            assert np.array_equal(quantile(values, counts, qs, method), np.quantile(r, qs, method=method))
        lo, hi = outlier_fence(r)
        inside = r[(r >= lo) & (r <= hi)]
        scale = learn_scale(r)
        assert scale.lo >= inside.min() and scale.hi <= inside.max()
        if kind in (0, 3) and n > 2000:  # whole stars: 1..5 on a grid of 1, the rare 0/6/5.5/1e30 set aside
            assert (scale.lo, scale.hi, scale.step) == (1.0, 5.0, 1.0)
        if kind == 2:
            assert scale.step is None and find_grid(r) is None


# ----------------------------------------------------------------------------- _jit, _memory
def test_a_cached_kernel_loads_without_numbas_compile_only_imports():
    """A kernel in numba's cache loads in a fresh process without the implementation modules
    numba imports to compile (numpy's array math, linear algebra): 0.15-0.3 s a command. Its
    answer is numpy's."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from movierec._topk import topk_rows; "
            "s = np.random.default_rng(0).random((64, 50)).astype(np.float32); idx, val = topk_rows(s, 5); "
            "assert (idx == np.argsort(-s, axis=1, kind='stable')[:, :5]).all(); "
            "print('numba.np.arraymath' in sys.modules, 'numba.np.linalg' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # compiles if not cached
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.split() == ["False", "False"]


def test_the_lean_loader_leaves_a_miss_or_an_error_to_numba():
    from contextlib import nullcontext

    from movierec._jit import _lean_load

    class Runtime:
        started = 0

        def initialize(self, ctx):
            self.started += 1

    class Cache:
        def __init__(self, found):
            self.found = found

        def _guard_against_spurious_io_errors(self):
            return nullcontext()

        def _load_overload(self, sig, ctx):
            if isinstance(self.found, Exception):
                raise self.found
            return self.found

    def numbas_own(cache, sig, ctx):
        return "numba's own"

    rt = Runtime()
    assert _lean_load(Cache("machine code"), numbas_own, rt, "sig", "ctx") == "machine code" and rt.started == 1
    assert _lean_load(Cache(None), numbas_own, rt, "sig", "ctx") == "numba's own"
    assert _lean_load(Cache(ValueError("a changed numba")), numbas_own, rt, "sig", "ctx") == "numba's own"


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="glibc's malloc")
def test_a_batch_command_reuses_the_memory_it_frees():
    """After reuse_freed_memory, a second 256 MB array takes the first one's pages (no new
    page faults); without it, the second is mapped and faulted in again."""
    import subprocess
    import sys

    code = ("import sys, resource, numpy as np\n"
            "if sys.argv[1] == 'on':\n"
            "    from movierec._memory import reuse_freed_memory; assert reuse_freed_memory()\n"
            "a = np.ones(32 << 20); del a\n"
            "f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "a = np.ones(32 << 20); del a\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    got = {}
    for mode in ("off", "on"):
        r = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        got[mode] = int(r.stdout)
    assert got["off"] >= 100 and got["on"] <= got["off"] // 10, got


def test_every_command_but_serve_reuses_freed_memory(monkeypatch):
    from click.testing import CliRunner

    import movierec._memory
    from movierec.cli import cli

    called = []
    monkeypatch.setattr(movierec._memory, "reuse_freed_memory", lambda: called.append(True))
    assert CliRunner().invoke(cli, ["recommend", "--help"]).exit_code == 0 and called == [True]
    called.clear()
    assert CliRunner().invoke(cli, ["serve", "--help"]).exit_code == 0 and called == []
