"""engine.kind: ray on the session's local Ray head (conftest.py): Adam on Ray Train reaches the local Adam's RMSE
and serves; recommend --all on Ray gives the local lists; a worker killed mid-epoch resumes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_data, run_cli
from tests.e2e.test_ray_engine import DEMO, _ok

ray = pytest.importorskip("ray")

# split none: one fit on every rating (one Ray Train run, not a holdout fit and a refit); its
# early-stopping slice of the ratings (the same slice for both engines: same seed) is held out
ADAM = ("model.optimizer=adam", "model.learning_rate=0.005", "model.epochs=12", "sentiment.enabled=false",
        "split.method=none")


@pytest.fixture(scope="module")
def adam_sites(tmp_path_factory, ray_opts):
    """The demo's generator at 800 viewers, trained with Adam locally and on Ray (2 workers),
    same settings. Returns (base folder, the Ray train's log, the data override, the data)."""
    base = tmp_path_factory.mktemp("adam")
    data = make_data(base / "data", n_users=800, n_movies=300, seed=0)
    site = f"data.dir={data}"
    _ok(run_cli("train", "--config", DEMO, f"workdir={base / 'local'}", site, *ADAM))
    # the stages before train are the local site's (the engine decides none of their outputs)
    shutil.copytree(base / "local", base / "ray", ignore=shutil.ignore_patterns("lock", "models", "train.json"))
    r = _ok(run_cli("train", "--config", DEMO, f"workdir={base / 'ray'}", site, *ADAM, *ray_opts))
    assert "fuse: fresh" in r.stderr
    return base, r.stderr, site, data


def _validation_rmse(work) -> float:
    """The served version's RMSE on its held-out validation slice (the best epoch: the one kept)."""
    current = (work / "models" / (work / "models" / "current").read_text().strip())
    hist = json.loads((current / "meta.json").read_text())["history"]
    assert len(hist["val_rmse"]) == len(hist["train_rmse"]) >= 10
    return float(min(hist["val_rmse"]))


def test_adam_on_ray_reaches_local_rmse_and_serves(adam_sites):
    base, log, site, data = adam_sites
    assert "Adam on Ray (2 workers)" in log
    local, onray = _validation_rmse(base / "local"), _validation_rmse(base / "ray")
    assert abs(onray - local) < 0.01, (local, onray)
    assert onray < 0.8  # far below the global mean's (~0.95 on the demo)
    r = _ok(run_cli("recommend", "--config", DEMO, f"workdir={base / 'ray'}", site, "--user", "u00001",
                    "--format", "json"))
    items = json.loads(r.stdout)["items"]
    ratings = pd.read_csv(data / "ratings.csv", dtype=str)
    seen = set(ratings.loc[ratings["user_id"] == "u00001", "movie_id"])
    assert len(items) == 10 and not seen & {it["movie_id"] for it in items}


def test_recommend_all_on_ray_equals_local(adam_sites, tmp_path, ray_opts):
    base, _, site, _ = adam_sites
    work = f"workdir={base / 'ray'}"
    _ok(run_cli("recommend", "--config", DEMO, work, site, "--all", "--output", str(tmp_path / "local.parquet")))
    r = _ok(run_cli("recommend", "--config", DEMO, work, site, *ray_opts, "--all", "--output", str(tmp_path / "lists")))
    parts = sorted((tmp_path / "lists").glob("part-*.parquet"))
    assert len(parts) > 1 and "written on Ray" in r.stderr
    a = pd.read_parquet(tmp_path / "local.parquet").sort_values(["user_id", "rank"]).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "lists").sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert len(a) == 10 * a["user_id"].nunique() and a["user_id"].nunique() >= 700
    pd.testing.assert_frame_equal(a[["user_id", "rank", "movie_id", "predicted_rating"]],
                                  b[["user_id", "rank", "movie_id", "predicted_rating"]])
    assert np.abs(a["rank_score"] - b["rank_score"]).max() < 1e-4
    # a file path is refused for the folder output
    r = run_cli("recommend", "--config", DEMO, work, site, *ray_opts, "--all", "--output", str(tmp_path / "x.parquet"))
    assert r.returncode == 2 and "folder" in r.stderr


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_resumes_from_the_last_checkpoint(tmp_path):
    # -v: the workers' log lines reach the command's stderr (without it, only the driver's)
    r = _ok(run_cli("-v", "train", "--config", DEMO, f"workdir={tmp_path / 'w'}", *ADAM, "engine.kind=ray",
                    "engine.workers=2", env={"MOVIEREC_FAILPOINT": "ray_worker"}))
    assert "resuming from the checkpoint of epoch 1" in r.stderr
    assert "resumed 1 times" in r.stderr
    r = _ok(run_cli("recommend", "--config", DEMO, f"workdir={tmp_path / 'w'}", "--user", "u00001"))
    assert "Top 10" in r.stdout


@pytest.mark.slow
def test_a_failed_fit_resumes_from_its_checkpoints_in_the_next_command(tmp_path, ray_opts):
    """The command dies mid-fit (killed after two epochs' checkpoints): the checkpoints stay in
    engine.checkpoint_dir under the fit's key, the same command again resumes from them (not
    from epoch 0), and a finished fit leaves none behind."""
    data = make_data(tmp_path / "data", n_users=300, n_movies=120, seed=0)
    ckpt = tmp_path / "ckpt"
    args = ("-v", "train", "--config", DEMO, f"workdir={tmp_path / 'w'}", f"data.dir={data}", *ADAM,
            "model.epochs=6", "model.early_stopping=false", *ray_opts, f"engine.checkpoint_dir={ckpt}")
    r = run_cli(*args, env={"MOVIEREC_FAILPOINT": "ray_driver"})
    assert r.returncode == -9, r.stderr[-3000:]
    left = list(ckpt.glob("movierec-adam-*"))
    assert len(left) == 1 and list(left[0].rglob("state.npz")), list(ckpt.rglob("*"))
    r = _ok(run_cli(*args))
    assert f"left checkpoints in {left[0]}" in r.stderr
    resumed = [int(line.rsplit(" ", 1)[1]) for line in r.stderr.splitlines()
               if "resuming from the checkpoint of epoch" in line]
    assert resumed and resumed[0] >= 1, r.stderr[-3000:]
    assert not list(ckpt.glob("movierec-adam-*"))  # finished: nothing kept
    current = tmp_path / "w" / "models" / (tmp_path / "w" / "models" / "current").read_text().strip()
    assert len(json.loads((current / "meta.json").read_text())["history"]["train_rmse"]) == 6


def test_adam_on_ray_without_features_fits_holdout_and_refit_in_one_run(tmp_path, ray_opts):
    """No features (empty projections): the fit runs (a variable of an empty tensor crashed the
    first worker in TensorFlow's collective broadcast: SIGSEGV) and learns. With a holdout
    split, the holdout fit and the refit (from the driver's table: a watch ranker) run in one
    Ray Train run, the refit for the holdout fit's best epoch + 1."""
    data = make_data(tmp_path / "data", n_users=200, n_movies=100, seed=2)
    args = [a for a in ADAM if a != "split.method=none"]
    r = _ok(run_cli("train", "--config", DEMO, f"workdir={tmp_path / 'w'}", f"data.dir={data}", *args,
                    "model.epochs=4", "model.use_features=false", *ray_opts))
    assert "the driver reads it whole" not in r.stderr  # (a single ratings file: no parts)
    assert "Adam on Ray (2 workers) finished" in r.stderr
    assert "(the holdout fit and the refit, one Ray Train run)" in r.stderr
    assert r.stderr.count("Adam on Ray (2 workers) finished") == 1
    current = tmp_path / "w" / "models" / (tmp_path / "w" / "models" / "current").read_text().strip()
    meta = json.loads((current / "meta.json").read_text())
    held, hist = meta["holdout"], meta["history"]
    assert len(held["history"]["val_rmse"]) == len(held["history"]["train_rmse"]) >= 1
    assert held["history"]["train_rmse"][-1] < held["history"]["train_rmse"][0]
    # the refit: every rating, no validation slice, the holdout fit's best epoch + 1 epochs
    assert len(hist["train_rmse"]) == held["best_epoch"] + 1 and not hist["val_rmse"]
    assert meta["train_ratings"] > held["train_ratings"]


@pytest.mark.slow
def test_holdout_fit_and_refit_in_one_run_equal_a_run_each(tmp_path, ray_opts):
    """fit_together (one Ray Train run) leaves the models that a Ray Train run per fit leaves:
    the same seeds, the same numbers, features and a wide rating scale (fitted in units) included."""
    from dataclasses import replace

    from movierec.catalog import Catalog
    from movierec.config import load_config
    from movierec.engine import hold
    from movierec.models.mf import fit_together
    from movierec.pipeline import ensure, fold_inputs, train_for_fold

    data = make_data(tmp_path / "data", n_users=200, n_movies=100, seed=2)
    r = pd.read_csv(data / "ratings.csv", dtype={"user_id": str, "movie_id": str})
    r.assign(rating=r["rating"] * 2).to_csv(data / "ratings.csv", index=False)  # 2-10: fitted in units
    cfg = load_config(DEMO, [f"workdir={tmp_path / 'w'}", f"data.dir={data}", *ADAM[:1], "model.learning_rate=0.05",
                             "model.epochs=6", "sentiment.enabled=false", *ray_opts])
    ensure(cfg, "fuse")
    cat = Catalog(tmp_path / "w")
    refit_cfg = replace(cfg.model, early_stopping=False)
    with hold():
        a = fold_inputs(cfg, cat, cfg.split.fold, use_saved_features=True)
        b = fold_inputs(cfg, cat, None, model_cfg=refit_cfg)
        fit_together([a.model, b.model], [a.data, b.data])
        one = train_for_fold(cfg, cat, cfg.split.fold, use_saved_features=True).model
        two = train_for_fold(cfg, cat, None, model_cfg=replace(refit_cfg, epochs=one.history_.best_epoch + 1)).model
    assert a.model.rating_unit_ == one.rating_unit_ > 1 and a.model.user_weights_.size
    for together, alone in ((a.model, one), (b.model, two)):
        assert together.history_ == alone.history_ and together.get_params() == alone.get_params()
        for k in together.STATE:
            np.testing.assert_allclose(getattr(together, k), getattr(alone, k), atol=1e-6, err_msg=k)
        assert together.global_mean_ == alone.global_mean_ and together.n_train_ == alone.n_train_
    assert b.model.epochs == len(b.model.history_.train_rmse) == a.model.history_.best_epoch + 1


#: a model whose side data is O(viewers + movies): train on Ray fits it from ratings_clean's parts
FROM_PARTS = ("model.optimizer=adam", "model.learning_rate=0.02", "model.epochs=12", "sentiment.enabled=false",
              "model.use_features=false", "model.ranking=rating", "model.social_reg=0.05")


def test_train_on_ray_fits_from_the_parts_and_writes_the_local_seen_file(tmp_path, ray_opts):
    """Ratings in parts, cleaned on Ray: Adam's workers read ratings_clean's parts themselves
    (the driver reads none of it whole), the holdout fit (its validation slice 5% of the
    training part, by hash) and the refit learn, and the version's seen.npz, streamed from
    per-part pieces, is the file the local engine writes from the same table."""
    from movierec.catalog import Catalog
    from movierec.registry import Registry

    data = make_data(tmp_path / "data", n_users=800, n_movies=300, seed=3)
    r = pd.read_csv(data / "ratings.csv", dtype={"user_id": str, "movie_id": str})
    r["rating"] *= 2  # a 2-10 scale: fitted in units of 8 / 4.5 (the workers scale the parameters back)
    (data / "ratings.csv").unlink()
    (data / "ratings").mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(r)), 3)):
        r.iloc[rows].to_csv(data / "ratings" / f"part-{k}.csv", index=False)
    movies = pd.read_csv(data / "movies.csv", dtype={"movie_id": str})
    unrated = movies.iloc[:1].assign(movie_id="m-nobody-rated")  # a movie in the catalogue only
    pd.concat([movies, unrated]).to_csv(data / "movies.csv", index=False)
    site = (f"data.dir={data}", "data.ratings=ratings")
    work, ckpt = tmp_path / "ray", tmp_path / "ckpt"
    onray = _ok(run_cli("-v", "train", "--config", DEMO, f"workdir={work}", *site, *FROM_PARTS, *ray_opts,
                        f"engine.checkpoint_dir={ckpt}"))
    assert "fitting from ratings_clean's" in onray.stderr and "reads it whole" not in onray.stderr
    # the holdout fit and the refit one after the other in one Ray Train run (workers started once)
    assert onray.stderr.count("Adam on Ray (2 workers) finished") == 1
    assert "(the holdout fit and the refit, one Ray Train run)" in onray.stderr
    # the driver mapped each fit's final state from its file, and removed the files when done
    assert ckpt.is_dir() and not list(ckpt.iterdir())

    version = work / "models" / (work / "models" / "current").read_text().strip()
    meta = json.loads((version / "meta.json").read_text())
    cat = Catalog(work)
    assert cat.path("ratings_clean").is_dir()
    clean = cat.read("ratings_clean")
    assert meta["all_ratings"] == len(clean) == len(r)
    training_part = int((clean["fold"] != 0).sum())
    assert abs(meta["holdout"]["train_ratings"] - 0.95 * training_part) < 0.02 * training_part
    assert min(meta["holdout"]["history"]["val_rmse"]) < 0.95 * r["rating"].std()  # it learned
    # the refit trained for the holdout fit's best epoch + 1, without a validation slice
    assert len(meta["history"]["train_rmse"]) == meta["holdout"]["best_epoch"] + 1 and not meta["history"]["val_rmse"]
    (tmp_path / "local").mkdir()
    reviews = cat.read("reviews_clean")[["user_idx", "movie_idx"]]
    Registry._write_seen(tmp_path / "local", clean, reviews, cat.rows("user_ids"), cat.rows("movie_ids"))
    with np.load(tmp_path / "local" / "seen.npz") as x, np.load(version / "seen.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for k in x.files:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k
        assert len(y["watched_indices"])  # reviews without a rating: left out of lists too
    # the workers zeroed the rows of the movie without ratings in both models (as a local fit does)
    from movierec.models.mf import MatrixFactorization

    nobody = int(cat.read("movie_ids").set_index("movie_id").loc["m-nobody-rated", "movie_idx"])
    params = MatrixFactorization.load(version / "model.npz").get_params()
    assert params["epochs"] == meta["holdout"]["best_epoch"] + 1 and not params["early_stopping"]
    for name in ("model.npz", "holdout.npz"):
        m = MatrixFactorization.load(version / name)
        assert m.item_bias_[nobody] == 0 and not m.item_factors_[nobody].any(), name
        assert np.abs(m.item_factors_).sum(1).min() == 0 < np.abs(m.item_factors_).sum(1).max()
    # the version serves: a viewer's list leaves out what they rated; its predictions are on the
    # 2-10 scale (the parameters scaled back by the workers, the mean and range by the driver)
    got = _ok(run_cli("recommend", "--config", DEMO, f"workdir={work}", *site, "--user", "u00001",
                      "--format", "json"))
    served = MatrixFactorization.load(version / "model.npz")
    assert served.rating_unit_ == pytest.approx(8 / 4.5) and served.rating_max_ == 10
    pred, mu = served.predict(clean["user_idx"], clean["movie_idx"])[0], served.global_mean_

    def rmse(c: float) -> float:  # the predictions' deviations from the mean scaled by c
        return float(np.sqrt(np.mean((mu + (pred - mu) * c - clean["rating"]) ** 2)))

    # on the data's scale: neither shrunk nor stretched by the unit would fit the ratings better
    assert rmse(1.0) < min(rmse(4.5 / 8), rmse(8 / 4.5)), (rmse(1.0), rmse(4.5 / 8), rmse(8 / 4.5))
    items = {it["movie_id"] for it in json.loads(got.stdout)["items"]}
    assert len(items) == 10 and not items & set(r.loc[r["user_id"] == "u00001", "movie_id"])


@pytest.mark.slow
def test_a_worker_killed_in_the_refit_resumes_it_keeping_the_holdout_fit(tmp_path, ray_opts):
    """From parts, the holdout fit and the refit run in one Ray Train run: a worker killed in
    the refit's second epoch restarts the run at the refit's last checkpoint, which holds the
    holdout fit's final state (that fit is not run again)."""
    data = make_data(tmp_path / "data", n_users=300, n_movies=120, seed=4)
    r = pd.read_csv(data / "ratings.csv", dtype={"user_id": str, "movie_id": str})
    (data / "ratings.csv").unlink()
    (data / "ratings").mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(r)), 2)):
        r.iloc[rows].to_csv(data / "ratings" / f"part-{k}.csv", index=False)
    work = tmp_path / "w"
    got = _ok(run_cli("-v", "train", "--config", DEMO, f"workdir={work}", f"data.dir={data}", "data.ratings=ratings",
                      *FROM_PARTS, "model.epochs=5", *ray_opts, env={"MOVIEREC_FAILPOINT": "ray_worker_fit1"}))
    assert "fit 1 of 2 of this run finished before the restart" in got.stderr
    assert "resuming from the checkpoint of epoch 1" in got.stderr and "resumed 1 times" in got.stderr
    version = work / "models" / (work / "models" / "current").read_text().strip()
    meta = json.loads((version / "meta.json").read_text())
    assert len(meta["history"]["train_rmse"]) == meta["holdout"]["best_epoch"] + 1 >= 2
    assert meta["history"]["train_rmse"][-1] < meta["history"]["train_rmse"][0]
