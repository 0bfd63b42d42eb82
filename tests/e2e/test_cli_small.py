"""CLI behaviour on small generated data: planted taste, both trainers, errors, imports."""

import http.server
import io
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import (CHECK_HEAVY, HEAVY, check_imports, clone_site, make_data, run_cli, tree_snapshot,
                            write_config)


def test_loved_genre_comes_first(tmp_path):
    data = make_data(tmp_path / "data", n_users=400, n_movies=200, seed=3)
    movies = pd.read_csv(data / "movies.csv")
    westerns = movies[movies.genres.str.contains("Western")].movie_id.tolist()
    # the fan dislikes the genres that the Western-loving community also loves, so the
    # model must learn the genre itself, not just the community
    others = movies[movies.genres.str.contains("Crime|Film-Noir") & ~movies.genres.str.contains("Western")].movie_id.tolist()
    assert len(westerns) >= 12
    ratings = pd.read_csv(data / "ratings.csv")
    fan = pd.DataFrame({"user_id": "fan", "movie_id": westerns[:8] + others[:8],
                        "rating": [5] * 8 + [1] * 8, "timestamp": 0})
    pd.concat([ratings, fan]).to_csv(data / "ratings.csv", index=False)
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "work", split={"method": "none"})
    assert run_cli("train", "--config", str(cfg)).returncode == 0
    out = json.loads(run_cli("recommend", "--config", str(cfg), "--user", "fan", "-n", "5", "--format", "json").stdout)
    genres = movies.set_index("movie_id").loc[[it["movie_id"] for it in out["items"]], "genres"]
    assert genres.str.contains("Western").sum() >= 4, genres.tolist()
    assert "Western" in genres.iloc[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_both_trainers_through_the_cli(trained_small, optimizer, tmp_path):
    r = run_cli("--log-format", "json", "evaluate", "--config", str(trained_small), "--format", "json",
                f"model.optimizer={optimizer}", f"workdir={tmp_path / optimizer}", "model.learning_rate=0.01")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["rmse"] < m["baselines"]["bias"]["rmse"], (optimizer, m["rmse"], m["baselines"]["bias"]["rmse"])
    # every log line is JSON: TensorFlow's own C++ lines are quieted at the source
    for line in r.stderr.splitlines():
        assert json.loads(line)["message"], line


def test_kfold_reports_mean_and_folds(trained_small, tmp_path):
    r = run_cli("evaluate", "--config", str(trained_small), "--format", "json", "split.method=kfold", "split.folds=3",
                f"workdir={tmp_path / 'k'}", "evaluate.ablations=[no_features]")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert len(m["folds"]) == 3
    assert m["rmse"] == pytest.approx(sum(f["rmse"] for f in m["folds"]) / 3)
    assert "no_features" in m["ablations"] and m["std"]["rmse"] >= 0


def _bad(tmp_path, trained_small, name, content, expect, **write_kw):
    """Replace one input file, re-run train: exit code and message, model untouched."""
    import yaml

    cfg = yaml.safe_load(trained_small.read_text())
    data_dir = tmp_path / "bad"
    shutil.copytree(cfg["data"]["dir"], data_dir)
    p = data_dir / name
    if content is None:
        p.unlink()
    elif isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, **write_kw)
    models = tree_snapshot(__import__("pathlib").Path(cfg["workdir"]) / "models")
    r = run_cli("train", "--config", str(trained_small), f"data.dir={data_dir}")
    assert r.returncode == expect, r.stderr
    assert tree_snapshot(__import__("pathlib").Path(cfg["workdir"]) / "models") == models
    assert "Traceback" not in r.stderr
    return r.stderr


def test_non_numeric_rating_exits_65(tmp_path, trained_small):
    rows = ["user_id,movie_id,rating"] + [f"u{i},m1,five" for i in range(50)] + [f"u{i},m2,4" for i in range(50)]
    err = _bad(tmp_path, trained_small, "ratings.csv", "\n".join(rows) + "\n", 65)
    assert "ratings.csv" in err and "not a number" in err and "'five'" in err


def test_missing_column_exits_65(tmp_path, trained_small):
    err = _bad(tmp_path, trained_small, "ratings.csv", "user_id,movie_id,stars\n1,2,3\n", 65)
    assert "missing required column(s) rating" in err


def test_latin1_file_exits_65(tmp_path, trained_small):
    err = _bad(tmp_path, trained_small, "movies.csv", "movie_id,title\nm00000,Am\u00e9lie (2001)\n", 65, encoding="latin-1")
    assert "movies.csv" in err and "line 2" in err and "latin-1" in err


def test_empty_file_exits_65(tmp_path, trained_small):
    err = _bad(tmp_path, trained_small, "ratings.csv", "", 65)
    assert "empty" in err


def test_missing_ratings_file_exits_65(tmp_path, trained_small):
    err = _bad(tmp_path, trained_small, "ratings.csv", None, 65)
    assert "file not found" in err


def test_config_typo_exits_78(trained_small):
    r = run_cli("train", "--config", str(trained_small), "model.factros=3")
    assert r.returncode == 78 and "model.factros" in r.stderr and str(trained_small) in r.stderr
    r = run_cli("recommend", "--config", str(trained_small), "--user", "u1", "recommend.n=ten")
    assert r.returncode == 78 and "recommend.n" in r.stderr


def test_usage_errors_exit_2(trained_small):
    assert run_cli("recommend", "--config", str(trained_small)).returncode == 2
    assert run_cli("no-such-command").returncode == 2


def test_no_model_yet_is_a_clear_error(tmp_path, small_data):
    cfg = write_config(tmp_path / "c.yaml", small_data, tmp_path / "w")
    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001")
    assert r.returncode == 1 and "movierec train" in r.stderr


@pytest.mark.parametrize("args", [["--help"], ["recommend", "--help"], ["recommend", "--user", "u00001"], ["status"]])
def test_light_commands_do_not_import_tf_or_torch(trained_small, args):
    if args[0] in ("recommend", "status") and args[-1] != "--help":
        args = [args[0], "--config", str(trained_small), *args[1:]]
    r = subprocess.run([sys.executable, "-c", CHECK_HEAVY, *args], capture_output=True, text=True)
    assert "HEAVY=\n" in r.stderr or r.stderr.rstrip().endswith("HEAVY="), r.stderr[-2000:]


def test_commands_import_only_what_they_use(trained_small, tmp_path):
    """A viewer's list needs no compiled kernels (numba), scikit-learn, networkx, pandas or
    scipy (it is read from numpy arrays: 0.2 s in a fresh process on the demo); an evaluation
    of a model without features or a graph imports neither scikit-learn nor networkx, and its
    RMSE, metrics and genre diversity are still there."""
    light = ("numba", "sklearn", "networkx", "scipy", "pandas", *HEAVY)
    r = subprocess.run([sys.executable, "-c", check_imports(*light), "recommend", "--config", str(trained_small),
                        "--user", "u00001"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.rstrip().endswith("HEAVY="), r.stderr[-2000:]
    assert len([line for line in r.stdout.splitlines() if line.strip()[:1].isdigit()]) == 10
    # as CSV too (written by the csv module; the bytes pandas wrote, tests/test_units.py)
    r = subprocess.run([sys.executable, "-c", check_imports(*light), "recommend", "--config", str(trained_small),
                        "--user", "u00001", "--format", "csv"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.rstrip().endswith("HEAVY="), r.stderr[-2000:]
    got = pd.read_csv(io.StringIO(r.stdout))
    assert got.columns.tolist() == ["rank", "movie_id", "title", "year", "genres", "predicted_rating", "rank_score"]
    assert got["rank"].tolist() == list(range(1, 11)) and got["rank_score"].is_monotonic_decreasing
    site, _, work = clone_site(trained_small, tmp_path / "site")
    # one feedback event is checked against the version's catalogue and appended: no pandas
    r = subprocess.run([sys.executable, "-c", check_imports(*light), "feedback", "--config", str(site),
                        "--user", "u00001", "--movie", "m00002", "--rating", "4"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.rstrip().endswith("HEAVY="), r.stderr[-2000:]
    assert json.loads((work / "feedback" / "events.jsonl").read_text().splitlines()[-1])["movie_id"] == "m00002"
    r = subprocess.run([sys.executable, "-c", check_imports(*light), "feedback", "--config", str(site),
                        "--user", "u00001", "--movie", "no-such-movie", "--rating", "4"], capture_output=True, text=True)
    assert r.returncode == 65 and "not in the catalogue" in r.stderr, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-c", check_imports("sklearn", "networkx", *HEAVY), "evaluate", "--config",
                        str(site), "--format", "json", "model.use_features=false", "social.enabled=false"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.rstrip().endswith("HEAVY="), r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert 0.5 < out["rmse"] < 1.2 and out["ndcg@10"] > 0 and out["diversity"] > 0
    assert "fuse: the model uses no features" in r.stderr
    assert not (Path(yaml.safe_load(site.read_text())["workdir"]) / "artifacts" / "user_features.npz").exists()


def test_sgd_training_does_not_import_tf(trained_small, tmp_path):
    r = subprocess.run([sys.executable, "-c", CHECK_HEAVY, "train", "--config", str(trained_small),
                        f"workdir={tmp_path / 'w'}"], capture_output=True, text=True)
    assert r.stderr.rstrip().endswith("HEAVY="), r.stderr[-2000:]


def _ml100k_archive(tmp_path):
    src = tmp_path / "ml-100k"
    src.mkdir()
    (src / "u.data").write_text("1\t10\t4\t881250949\n2\t10\t3\t881250950\n1\t20\t5\t881250951\n")
    (src / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    genres = ["0"] * 19
    genres[1] = "1"
    (src / "u.item").write_text(
        "10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(genres) + "\n"
        "20|Caf\xe9 (1996)|01-Jan-1996||http://y|" + "|".join(["0"] * 18 + ["1"]) + "\n", encoding="latin-1")
    (src / "u1.base").write_text("1\t10\t4\t881250949\n")
    (src / "u1.test").write_text("1\t20\t5\t881250951\n")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in src.iterdir():
            zf.write(p, f"ml-100k/{p.name}")
    return src, archive


def test_data_import_movielens_100k(tmp_path):
    src, _ = _ml100k_archive(tmp_path)
    r = run_cli("data", "import", "movielens-100k", "--from", str(src), "--to", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    movies = pd.read_csv(tmp_path / "out" / "movies.csv")
    assert movies.loc[0, "genres"] == "Action" and movies.loc[1, "title"] == "Caf\u00e9 (1996)"
    assert movies.loc[1, "genres"] == "Western" and movies.loc[0, "year"] == 1995
    assert len(pd.read_csv(tmp_path / "out" / "ratings.csv")) == 3
    assert len(pd.read_csv(tmp_path / "out" / "splits" / "u1.test.csv")) == 1


def test_data_download_from_local_server(tmp_path):
    _, archive = _ml100k_archive(tmp_path)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
        r = run_cli("data", "download", "movielens-100k", "--to", str(tmp_path / "dl"), "--url", url)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["ratings"] == 3
        assert "next: movierec evaluate --config configs/movielens-100k.yaml" in r.stderr
        r = run_cli("data", "download", "movielens-100k", "--to", str(tmp_path / "dl2"), "--url", url + ".missing")
        assert r.returncode == 65 and "could not download" in r.stderr and "data import movielens-100k" in r.stderr
        # a pinned digest that does not match: nothing is written
        r = run_cli("data", "download", "movielens-100k", "--to", str(tmp_path / "dl3"), "--url", url,
                    "--sha256", "0" * 64)
        assert r.returncode == 65 and "sha256" in r.stderr and not (tmp_path / "dl3").exists()
        # plain http to another machine is refused
        r = run_cli("data", "download", "movielens-100k", "--to", str(tmp_path / "dl4"), "--url",
                    "http://example.org/ml-100k.zip")
        assert r.returncode == 65 and "https" in r.stderr
    finally:
        server.shutdown()


def test_download_size_limit(tmp_path, monkeypatch):
    import io

    from movierec.data import datasets
    from movierec.errors import DataError

    class Big(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda url, timeout: Big(b"x" * 5000))
    with pytest.raises(DataError, match="larger than"):
        datasets._fetch("https://example.org/a.zip", tmp_path / "a.zip", 10, limit=4096)


def test_filmtrust_import(tmp_path):
    src = tmp_path / "ft"
    src.mkdir()
    (src / "ratings.txt").write_text("1 1 2.0\n1 2 4.0\n2 1 3.5\n")
    (src / "trust.txt").write_text("1 2 1\n")
    r = run_cli("data", "import", "filmtrust", "--from", str(src), "--to", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "out" / "social.csv").columns.tolist() == ["user_id", "friend_id", "weight"]


def test_score_text(tmp_path, trained_small):
    inp = tmp_path / "in.csv"
    pd.DataFrame({"id": [1, 2], "review": ["I loved this film", "a dull, boring mess"]}).to_csv(inp, index=False)
    out = tmp_path / "out.csv"
    r = run_cli("score-text", "--config", str(trained_small), "--input", str(inp), "--text-column", "review",
                "--output", str(out))
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert df["sentiment_label"].tolist() == ["positive", "negative"]
    assert df["sentiment"].between(-1, 1).all()
    r = run_cli("score-text", "--config", str(trained_small), "--input", str(inp), "--text-column", "nope",
                "--output", str(out))
    assert r.returncode == 65 and "nope" in r.stderr


def test_ciaodvd_epinions_and_csv_importers(tmp_path):
    ciao = tmp_path / "ciao"
    ciao.mkdir()
    (ciao / "movie-ratings.txt").write_text("1,10,3,100,5,2001-01-01\n1,10,3,101,2,2002-01-01\n2,11,4,102,4,2003-05-06\n")
    (ciao / "trusts.txt").write_text("1,2,1\n")
    r = run_cli("data", "import", "ciaodvd", "--from", str(ciao), "--to", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ratings": 3, "social": 1, "movies": 2}
    ratings = pd.read_csv(tmp_path / "c" / "ratings.csv")
    assert ratings["timestamp"].tolist() == [978307200, 1009843200, 1052179200]
    # the duplicate (user 1, movie 10) resolves as in clean: the later rating wins
    cfg = write_config(tmp_path / "cc.yaml", tmp_path / "c", tmp_path / "wc", split={"method": "none"})
    assert run_cli("clean", "--config", str(cfg)).returncode == 0
    clean = pd.read_parquet(tmp_path / "wc" / "artifacts" / "ratings_clean.parquet")
    assert len(clean) == 2 and sorted(clean["rating"]) == [2.0, 4.0]
    assert pd.read_csv(tmp_path / "c" / "movies.csv")["genres"].tolist() == ["genre-3", "genre-4"]

    ep = tmp_path / "ep"
    ep.mkdir()
    (ep / "rating_with_timestamp.txt").write_text("1 7 2 4 3 1000\n2 7 2 5 1 2000\n2 8 9 1 0 3000\n")
    (ep / "trustnetwork.txt").write_text("1 2\n2 1\n")
    r = run_cli("data", "import", "epinions", "--from", str(ep), "--to", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "e" / "ratings.csv").columns.tolist() == ["user_id", "movie_id", "rating",
                                                                           "timestamp"]
    assert len(pd.read_csv(tmp_path / "e" / "social.csv")) == 2

    src = tmp_path / "dump.csv"
    src.write_text("uid;item;stars\na;x;4\nb;y;2\n")
    r = run_cli("data", "import", "csv", "--from", str(src), "--to", str(tmp_path / "k"), "--delimiter", ";",
                "--map", "user_id=uid", "--map", "movie_id=item", "--map", "rating=stars")
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "k" / "ratings.csv").columns.tolist() == ["user_id", "movie_id", "rating"]
    r = run_cli("data", "import", "csv", "--from", str(src), "--to", str(tmp_path / "k2"), "--delimiter", ";",
                "--map", "user_id=nope")
    assert r.returncode == 65 and "no column 'nope'" in r.stderr


def test_a_plain_models_evaluation_does_not_import_scipy_sparse(tmp_path):
    """Ratings and movies only, no implicit feedback, features or peers (Surprise's SVD
    setting, ranking by rating): the seen movies are CSR arrays of numpy's, and scipy.sparse (0.13 s of a small
    evaluate) is never imported, nor numba (on Linux), the sentiment stage's routing or the pseudo-ratings (no
    texts, no scores); the lists still leave every seen movie out."""
    data = make_data(tmp_path / "d", files=("ratings", "movies"))
    cfg = write_config(tmp_path / "c.yaml", data, tmp_path / "w",
                       model={"implicit": False, "use_features": False, "ranking": "rating", "factors": 16, "epochs": 10},
                       evaluate={"baselines": ["popularity"], "ablations": [], "bootstrap_rounds": 0},
                       social={"enabled": False})
    from movierec.models._kernels import _BLOCK, _EPOCH_BY_USER

    # numba neither: the SGD epochs load as kept objects (kept now if they were not yet) and the
    # lists are ranked by numpy; on two cores (block by block, a thread per block) too, and the
    # command still ends (it waits for every thread it started)
    watch = ("scipy.sparse", "movierec.sentiment.routing", "movierec.models.pseudo", *HEAVY)
    if _EPOCH_BY_USER.function() is not None and _BLOCK.function() is not None:
        watch += ("numba",)
    for threads in ("1", "2"):
        r = subprocess.run([sys.executable, "-c", check_imports(*watch), "evaluate", "--config", str(cfg),
                            "--format", "json", f"model.threads={threads}"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and r.stderr.rstrip().endswith("HEAVY="), r.stderr[-2000:]
        out = json.loads(r.stdout)
        assert 0.5 < out["rmse"] < 1.2 and out["precision@10"] > 0
    # the same lists as with scipy's matrix: no seen movie in any list
    import numpy as np

    from movierec.evaluation.evaluate import Recommender, SeenMovies, _topk
    from movierec.models.mf import ScoreVectors

    rng = np.random.default_rng(0)
    u, m = rng.integers(0, 50, 1500), rng.integers(0, 60, 1500)
    seen = SeenMovies(u, m, 50, 60)
    for scorer in (Recommender(None, rank_scores=rng.random(60).astype(np.float32)),
                   Recommender(None, vectors=ScoreVectors.of(0.0, rng.random(50), rng.random(60),
                                                             rng.random((50, 4)), rng.random((60, 4))))):
        a = _topk(scorer, np.arange(50), 10, seen)
        assert (a == _topk(scorer, np.arange(50), 10, seen.csr)).all()
        assert (a == _topk(scorer, np.arange(50), 10, seen)).all()  # making the scipy matrix changed nothing
        pairs = set(zip(u.tolist(), m.tolist()))
        assert not any((row, int(x)) in pairs for row in range(50) for x in a[row])
