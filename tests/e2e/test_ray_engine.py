"""engine.kind: ray on a local Ray: partitioned inputs and sentiment give the
artifacts of the local engine (training and recommend --all: test_ray_train.py). The
commands connect to one local Ray head of the test session (``ray_head`` in conftest.py), as
to a cluster; a command with the address unset starting a Ray of its own: test_ray_ops.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from movierec.catalog import Catalog
from movierec.sentiment import cache as C
from tests.conftest import ROOT, make_data, run_cli, write_config

ray = pytest.importorskip("ray")

DEMO = str(ROOT / "configs" / "default.yaml")


def _ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _art(work, name: str) -> pd.DataFrame:
    return pd.read_parquet(work / "artifacts" / f"{name}.parquet")


# ----------------------------------------------------------------------------- partitioned inputs
def _partition(src, dst, bad_row: bool = True):
    """``src``'s tables with ratings and reviews as folders of part files (CSV, Parquet, a
    Hive-style sub-folder); a rating repeated across parts with a later timestamp, and
    (``bad_row``) a bad rating in the Parquet part."""
    dst.mkdir()
    for name in ("users", "movies", "social"):
        (dst / f"{name}.csv").write_bytes((src / f"{name}.csv").read_bytes())
    r = pd.read_csv(src / "ratings.csv", dtype={"user_id": str, "movie_id": str})
    again = r.iloc[[5]].assign(rating=1 if r["rating"].iloc[5] != 1 else 5, timestamp=r["timestamp"].iloc[5] + 10)
    (dst / "ratings" / "date=2").mkdir(parents=True)
    a, b = len(r) // 3, 2 * len(r) // 3
    r.iloc[:a].to_csv(dst / "ratings" / "part-0.csv", index=False)
    mid = r.iloc[a:b].copy()
    if bad_row:
        mid["rating"] = mid["rating"].astype(str)
        mid.iloc[3, mid.columns.get_loc("rating")] = "x"
    mid.to_parquet(dst / "ratings" / "part-1.parquet", index=False)
    pd.concat([r.iloc[b:], again]).to_csv(dst / "ratings" / "date=2" / "part-2.csv", index=False)
    (dst / "ratings" / "_SUCCESS").write_text("")
    rv = pd.read_csv(src / "reviews.csv", dtype=str)
    (dst / "reviews").mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(rv)), 4)):
        rv.iloc[part].to_csv(dst / "reviews" / f"part-{k}.csv", index=False)
    # the same rows as one file (the repeated rating last; the bad value too)
    whole = pd.concat([r.iloc[:a], mid, r.iloc[b:], again])
    return whole


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_partitioned_inputs_give_the_clean_artifacts_of_single_files(tmp_path, engine, request):
    src = make_data(tmp_path / "src")
    whole = _partition(src, tmp_path / "parts")
    single = tmp_path / "single"
    single.mkdir()
    for name in ("users", "movies", "social", "reviews"):
        (single / f"{name}.csv").write_bytes((src / f"{name}.csv").read_bytes())
    whole.to_csv(single / "ratings.csv", index=False)
    c1 = write_config(tmp_path / "one.yaml", single, tmp_path / "w1")
    c2 = write_config(tmp_path / "parts.yaml", tmp_path / "parts", tmp_path / "w2",
                      data={"dir": str(tmp_path / "parts"), "ratings": "ratings", "reviews": "reviews"},
                      engine={"kind": engine, "workers": 2} if engine == "local" else
                      {"kind": "ray", "workers": 2, "address": request.getfixturevalue("ray_head")})
    _ok(run_cli("clean", "--config", str(c1)))
    r = _ok(run_cli("clean", "--config", str(c2)))
    assert "3 part files" in r.stderr
    # the same rows (parts are read in path order, "date=2/..." first, so rows may come in
    # another order) and the same dense ids
    for name in ("ratings_clean", "reviews_clean", "users_clean", "social_clean", "user_ids", "movie_ids"):
        a, b = _art(tmp_path / "w1", name), _art(tmp_path / "w2", name)
        if name in ("ratings_clean", "reviews_clean"):
            a, b = (x.sort_values(list(x.columns)).reset_index(drop=True) for x in (a, b))
        pd.testing.assert_frame_equal(a, b, obj=name)
    # latest wins across parts: the repeated rating (last part, later timestamp) is the one kept
    rc, uid, mid = _art(tmp_path / "w2", "ratings_clean"), _art(tmp_path / "w2", "user_ids"), _art(tmp_path / "w2", "movie_ids")
    last = whole.iloc[-1]
    u = int(uid.loc[uid["user_id"] == str(last["user_id"]), "user_idx"].iloc[0])
    m = int(mid.loc[mid["movie_id"] == str(last["movie_id"]), "movie_idx"].iloc[0])
    kept = rc[(rc["user_idx"] == u) & (rc["movie_idx"] == m)]
    assert len(kept) == 1 and float(kept["rating"].iloc[0]) == float(last["rating"])
    # the bad value is quarantined with its part and its row in that part
    q = pd.read_csv(tmp_path / "w2" / "quarantine" / "ratings.csv")
    assert list(q["file"]) == ["part-1.parquet"] and list(q["row"]) == [4]
    stats = json.loads((tmp_path / "w2" / "manifests" / "ingest.json").read_text())
    assert "quarantined" in json.dumps(stats)
    # the input checks of a nightly run count the same empty values (on Ray, the reviews'
    # texts are hashed by the workers that read them: an empty text is the key "")
    one = json.loads((tmp_path / "w1" / "manifests" / "ingest.json").read_text())["stats"]["input_checks"]
    nulls = stats["stats"]["input_checks"]["null_share"]
    assert nulls == one["null_share"] and "reviews.text" in nulls and not any("text_rule" in c for c in nulls)
    # a changed part makes ingest stale; an unchanged folder does not
    assert "fresh" in _ok(run_cli("clean", "--config", str(c2))).stderr
    (tmp_path / "parts" / "ratings" / "part-3.csv").write_text("user_id,movie_id,rating\nu00001,m00002,4\n")
    assert "ingest: done" in _ok(run_cli("clean", "--config", str(c2))).stderr


def test_a_partitioned_folder_without_parts_exits_65(tmp_path):
    src = make_data(tmp_path / "src")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ratings").mkdir()
    (tmp_path / "d" / "ratings" / "notes.txt").write_text("x")
    (tmp_path / "d" / "movies.csv").write_bytes((src / "movies.csv").read_bytes())
    c = write_config(tmp_path / "c.yaml", tmp_path / "d", tmp_path / "w", data={"dir": str(tmp_path / "d"),
                                                                             "ratings": "ratings"})
    r = run_cli("ingest", "--config", str(c))
    assert r.returncode == 65 and "no .csv or .parquet part files" in r.stderr


# ----------------------------------------------------------------------------- sentiment
def test_sentiment_on_ray_equals_local_and_a_rerun_scores_nothing(tmp_path, ray_opts):
    # the demo's generator, with 1,500 of its reviews (the scores, not the volume, are compared)
    data = make_data(tmp_path / "data", n_users=600, n_movies=300, seed=0)
    reviews = pd.read_csv(data / "reviews.csv", dtype=str, keep_default_na=False)
    # in 3 parts: on Ray, the texts are read by a task per part and stay in the object store
    # (the social messages, one file, by the driver); the same text in two parts is found twice
    (data / "reviews").mkdir()
    rows = reviews.iloc[:1500]
    for k, part in enumerate(np.array_split(np.arange(len(rows)), 3)):
        rows.iloc[part].to_csv(data / "reviews" / f"part-{k}.csv", index=False)
    rows.iloc[[0, 1, 2]].to_csv(data / "reviews" / "part-3.csv", index=False)
    # chunks of 256 texts on both engines (a chunk's texts are scored together); Ray in windows
    # of 512: its actors start once and score every window
    site = (f"data.dir={data}", "data.reviews=reviews", "sentiment.checkpoint_every=256")
    local, onray = tmp_path / "local", tmp_path / "ray"
    first = _ok(run_cli("sentiment", "--config", DEMO, f"workdir={local}", *site))
    # ingest and clean are the local site's; the score cache and the sentiment outputs are not
    shutil.copytree(local, onray, ignore=shutil.ignore_patterns("lock", "cache", "sentiment.json", "*_sentiment.parquet"))
    r = _ok(run_cli("sentiment", "--config", DEMO, f"workdir={onray}", *site, *ray_opts, "engine.window=512"))
    assert "clean: fresh" in r.stderr
    # the English model's three windows (and the one text of another language's model) by
    # one pool of actors per model: the model loaded once per actor, not once per window
    windows, pools = r.stderr.count("texts scored on Ray by 2 actors"), r.stderr.count("2 scoring actors started")
    assert windows >= 4 and pools <= windows - 2, r.stderr[-3000:]
    # the texts were found by a Ray task per part (the social messages' few distinct texts
    # by the driver) for the languages; each model's texts were then taken from those by Ray
    # tasks, without reading the inputs again
    found = re.findall(r"(\d+) texts to score found by 4 Ray tasks in the inputs' parts \((\d+) read by the driver",
                       r.stderr)
    assert len(found) == 1 and int(found[0][0]) > 1000 and int(found[0][1]) < 20, r.stderr[-3000:]
    taken = re.findall(r"(\d+) texts to score taken from the (\d+) found before", r.stderr)
    assert sorted(int(t) for t, _ in taken) == [1, int(found[0][0]) - 1] and {b for _, b in taken} == {found[0][0]}
    a, b = _art(local, "review_sentiment"), _art(onray, "review_sentiment")
    assert len(a) == len(b) > 1400
    assert np.abs(a["sentiment"].to_numpy() - b["sentiment"].to_numpy()).max() < 1e-4
    assert (a["sentiment_label"] == b["sentiment_label"]).all()
    # languages detected by Ray tasks of 256 texts, not in the driver: the codes of a local run
    assert re.search(r"languages of \d+ texts detected on Ray by [6-9] tasks", r.stderr), r.stderr[-3000:]
    assert (a["language"] == b["language"]).all() and a["language"].nunique() >= 2
    # text features (embeddings; none for a text the encoder does not read) agree
    sizes_a, sizes_b = a["features"].map(len), b["features"].map(len)
    assert (sizes_a == sizes_b).all() and (sizes_a > 0).mean() > 0.8
    full = (sizes_a > 0).to_numpy()
    fa = np.stack([np.frombuffer(x, np.float16) for x in a["features"][full]]).astype(np.float32)
    fb = np.stack([np.frombuffer(x, np.float16) for x in b["features"][full]]).astype(np.float32)
    assert np.abs(fa - fb).max() < 1e-2
    # the review content vectors of movies and viewers (what the model reads) agree across engines
    from movierec.models.content import review_content

    n_users, n_movies = len(_art(local, "user_ids")), len(_art(local, "movie_ids"))
    ca, cb = review_content(a, None, n_users, n_movies), review_content(b, None, n_users, n_movies)
    assert (ca.item_has == cb.item_has).all() and ca.item_has.sum() > 0.8 * n_movies
    assert np.abs(ca.item - cb.item).max() < 1e-2 and np.abs(ca.user - cb.user).max() < 1e-2
    m1, m2 = _art(local, "message_sentiment"), _art(onray, "message_sentiment")
    assert np.abs(m1["sentiment"].to_numpy() - m2["sentiment"].to_numpy()).max() < 1e-4
    # a re-run finds every text in the cache: no Ray work at all
    r = _ok(run_cli("sentiment", "--config", DEMO, f"workdir={onray}", *site, *ray_opts, "--force"))
    scored = re.search(r"(\d+) of \1 texts not in the cache", first.stderr)
    assert scored and f"all {scored.group(1)} texts found in the cache" in r.stderr and "engine: Ray" not in r.stderr


def test_texts_on_ray_are_found_in_the_parts_and_a_vanished_one_is_a_data_error(tmp_path, ray_head, caplog):
    import logging

    from movierec.config import load_config
    from movierec.engine import hold
    from movierec.errors import DataError
    from movierec.privacy import key_of_text
    from movierec.sentiment.ray_gather import TextGatherer

    data = tmp_path / "d"
    (data / "reviews").mkdir(parents=True)
    texts = [(f"review {i} " + "great " * (i % 6) * 5).strip() for i in range(30)]  # (as ingest normalises)
    rows = pd.DataFrame({"user_id": [f"u{i % 7}" for i in range(30)], "movie_id": [f"m{i}" for i in range(30)],
                         "text": texts})
    for k, part in enumerate(np.array_split(np.arange(30), 3)):
        rows.iloc[list(part) + ([29] if k == 0 else [])].to_csv(data / "reviews" / f"part-{k}.csv", index=False)
    pd.DataFrame({"user_id": ["u1"], "friend_id": ["u2"], "text": ["a message, one file: the driver's"]}).to_csv(
        data / "social.csv", index=False)
    # the inputs at a URL: the tasks open the parts through pyarrow's filesystems (a local
    # path is the sentiment command's test above)
    cfg = load_config(None, [f"data.dir={data.as_uri()}", "data.reviews=reviews",
                             "engine.kind=ray", "engine.workers=2",
                             f"engine.address={ray_head}", "sentiment.checkpoint_every=8", "sentiment.max_chars=100"])
    asked = [texts[i] for i in (29, 3, 17, 0, 11, 25, 8, 14, 21, 5, 2)] + ["a message, one file: the driver's"]
    keys = [key_of_text(t) for t in asked]
    with hold():
        g = TextGatherer(cfg)
        assert list(g.folders()) == ["reviews"]
        with caplog.at_level(logging.WARNING, "movierec"):
            got = g.gather(keys)
        assert len(got) == 12 and [c.size for c in got.chunks] == [8, 4]
        assert got.get() == [t[:100] for t in asked] and max(map(len, asked)) > 100  # cut, as locally
        # each long text counted once (texts[29] is in two parts)
        assert f"{sum(len(t) > 100 for t in asked)} texts longer than sentiment.max_chars" in caplog.text
        # the scorer's windows of the same list: its chunks, no new read
        assert g.texts(keys[:8]).chunks == got.chunks[:1] and g.texts(keys[8:]).chunks == got.chunks[1:]
        # texts among those found: taken from their pieces by Ray tasks, in the order asked
        sub = keys[::-1] + [keys[4]]
        again = g.gather(sub)
        assert again.get() == [t[:100] for t in asked[::-1] + [asked[4]]] and [c.size for c in again.chunks] == [8, 5]
        # a text the inputs no longer have
        with pytest.raises(DataError, match="1 texts to score are no longer in"):
            g.gather(keys + [key_of_text("a review deleted since ingest")])


def test_score_cache_lookups_in_ray_tasks_equal_the_local_ones(tmp_path, ray_head, caplog):
    import logging

    from movierec.config import load_config
    from movierec.engine import hold
    from tests.stages.test_score_cache import _rows

    base, part = tmp_path / "sentiment.parquet", tmp_path / "part-1.parquet"
    _rows([f"k{i}" for i in range(400)], 0.1, features=b"\x00\x3c").to_parquet(base, index=False, row_group_size=10)
    pd.concat([_rows(["k7", "k399"], 0.8), pd.DataFrame({"key": ["lang:x"], "language": ["nl"]})]).to_parquet(
        part, index=False)
    engine = load_config(None, ["engine.kind=ray", "engine.workers=2", f"engine.address={ray_head}"]).engine
    keys = ["k399", "k3", "lang:x", "k7", "k250", "missing"]
    local = C.ScoreCache(files=[base, part]).lookup(keys, ["sentiment", "features", "language"])
    with hold(), caplog.at_level(logging.INFO, "movierec"):
        onray = C.ScoreCache(files=[base, part], engine=engine, ray_rows=0).lookup(keys, ["sentiment", "features",
                                                                                           "language"])
    assert "the score cache's 2 files looked up by 4 Ray tasks" in caplog.text  # 40 row groups: 3 tasks + the part
    pd.testing.assert_frame_equal(onray.sort_index(), local.sort_index())
    assert local.loc["k7", "sentiment"] == np.float32(0.8) and local.loc["k3", "features"] == b"\x00\x3c"
    assert len(local) == 5 and local.loc["lang:x", "language"] == "nl"


# ----------------------------------------------------------------------------- imports
# (--help, recommend and the local engine's train import no ray: tests/e2e/test_cli_small.py)
def test_ray_missing_is_a_config_error(monkeypatch):
    from movierec.engine import import_ray
    from movierec.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"movierec\[ray\]"):
        import_ray()


# ----------------------------------------------------------------------------- ratings kept out of the driver
def _clean_tables(work) -> dict[str, pd.DataFrame]:
    from movierec.catalog import read_parts

    out = {}
    for p in sorted((work / "artifacts").glob("*.parquet")):
        df = read_parts(p) if p.is_dir() else pd.read_parquet(p)
        if p.stem.startswith(("ratings", "test")):
            # ids as strings: a local table that feedback was appended to holds them so, parts
            # (and the local engine's joined parts) as categories
            df = df.astype({c: str for c in ("user_id", "movie_id") if c in df.columns})
            if p.stem == "ratings_raw":  # (appended to, the local table's ratings are float64)
                df["rating"] = df["rating"].astype(np.float64)
            df = df.sort_values(list(df.columns)).reset_index(drop=True)
        out[p.stem] = df
    return out


@pytest.mark.parametrize("case", ["given", "kfold", "temporal", "cold_items", "random+privacy+feedback"])
def test_ray_ingest_and_clean_of_parts_give_the_local_artifacts(tmp_path, case, request):
    """Every split method, privacy and the feedback log: the artifacts of Ray's workers
    (ratings_raw and ratings_clean as folders of parts) hold the rows of the local engine's."""
    src = make_data(tmp_path / "src", n_users=200, n_movies=120, seed=3)
    _partition(src, tmp_path / "parts")
    data = {"dir": str(tmp_path / "parts"), "ratings": "ratings", "reviews": "reviews"}
    split = {"method": case.split("+")[0], "seed": 1}
    if case == "given":  # the training ratings in parts, the test ratings one file
        r = pd.read_csv(src / "ratings.csv", dtype={"user_id": str, "movie_id": str})
        r.iloc[::7].to_csv(tmp_path / "test.csv", index=False)
        split.update(train=str(tmp_path / "parts" / "ratings"), test=str(tmp_path / "test.csv"))
    extra: dict = {"split": split}
    env = None
    if "privacy" in case:
        extra["privacy"] = {"pseudonymize_ids": True}
        env = {"MOVIEREC_ID_KEY": "a-long-secret-key-for-tests"}
    works = {}
    for engine in ("local", "ray"):
        work = tmp_path / f"w-{engine}"
        cfg = write_config(tmp_path / f"{engine}.yaml", tmp_path / "parts", work, data=data,
                           engine={"kind": "local"} if engine == "local" else
                           {"kind": "ray", "workers": 2, "address": request.getfixturevalue("ray_head")}, **extra)
        if "feedback" in case:
            _ok(run_cli("feedback", "--config", str(cfg), "--user", "u00001", "--movie", "m00002", "--rating", "5",
                        env=env))
            # a comment: a review with its text, beside the parts' reviews that Ray's workers
            # keyed (text hashes, no texts); both reach reviews_raw keyed as locally
            _ok(run_cli("feedback", "--config", str(cfg), "--user", "u00002", "--movie", "m00003", "--comment",
                        "Loved   the ending 👍", env=env))
            # shares: of a movie the viewer rated in a part (no share rating: looked up in the
            # parts on Ray) and, maybe, of one not rated (a share rating)
            first = pd.read_csv(src / "ratings.csv", dtype=str).iloc[0]
            for u, m in ((first["user_id"], first["movie_id"]), ("u00003", "m00004")):
                _ok(run_cli("feedback", "--config", str(cfg), "--user", u, "--movie", m, "--share-with", "u00002",
                            env=env))
        r = _ok(run_cli("clean", "--config", str(cfg), env=env))
        works[engine] = work
        if engine == "ray":
            kept_out = True  # feedback to fold in too: the new ratings are one part more
            assert "joined in the driver" not in r.stderr
            assert ("read and written by Ray workers" in r.stderr) is True
            assert (work / "artifacts" / "ratings_raw.parquet").is_dir() is kept_out
            assert (work / "artifacts" / "ratings_clean.parquet").is_dir() is kept_out
            # the viewers numbered by range in the workers: the id table in parts too
            assert (work / "artifacts" / "user_ids.parquet").is_dir() is kept_out
            assert "deduplicated and split by Ray workers" in r.stderr or not kept_out
    a, b = _clean_tables(works["local"]), _clean_tables(works["ray"])
    assert sorted(a) == sorted(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_categorical=False, obj=name)
    q = pd.read_csv(works["ray"] / "quarantine" / "ratings.csv")
    assert list(q["file"]) == ["part-1.parquet"] and list(q["row"]) == [4]
    if "privacy" in case:
        raw = b["ratings_raw"]["user_id"].astype(str)
        assert not raw.str.startswith("u0").any()  # no raw id reached a part
    m_local = json.loads((works["local"] / "manifests" / "ingest.json").read_text())["stats"]
    m_ray = json.loads((works["ray"] / "manifests" / "ingest.json").read_text())["stats"]
    assert m_local["input_checks"] == m_ray["input_checks"] and m_local["ratings"] == m_ray["ratings"]


def test_folder_artifacts_are_checked_replaced_and_read_by_either_engine(tmp_path, ray_opts):
    src = make_data(tmp_path / "src", n_users=150, n_movies=80, seed=4)
    _partition(src, tmp_path / "parts", bad_row=False)
    cfg = write_config(tmp_path / "c.yaml", tmp_path / "parts", tmp_path / "w",
                       data={"dir": str(tmp_path / "parts"), "ratings": "ratings", "reviews": "reviews"})
    art = tmp_path / "w" / "artifacts"
    _ok(run_cli("clean", "--config", str(cfg), *ray_opts))
    assert (art / "ratings_clean.parquet").is_dir()
    # a part that lost bytes (a crash before the page cache reached the disk) makes clean stale
    part = sorted((art / "ratings_clean.parquet").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-10])
    r = _ok(run_cli("clean", "--config", str(cfg), *ray_opts))
    assert "ingest: fresh" in r.stderr and "clean: done" in r.stderr
    ray_tables = _clean_tables(tmp_path / "w")
    cat = Catalog(tmp_path / "w")  # sizes from the parts' metadata, without reading the ids
    assert (art / "user_ids.parquet").is_dir() and len(list((art / "user_ids.parquet").glob("part-*"))) > 1
    assert cat.rows("user_ids") == len(cat.read("user_ids")) >= 150
    assert cat.rows("ratings_clean") == len(cat.read("ratings_clean"))
    # the nightly entry point on the parts: trained on ratings_clean's parts, gated, served
    r = _ok(run_cli("run", "--config", str(cfg), *ray_opts))
    assert "clean: fresh" in r.stderr and (art / "ratings_clean.parquet").is_dir()
    r = _ok(run_cli("recommend", "--config", str(cfg), "--user", "u00001", "-n", "5"))
    assert len([ln for ln in r.stdout.splitlines() if ln.strip()[:1].isdigit()]) == 5
    # the local engine reads the parts Ray wrote and writes one file over the folder, and back
    r = _ok(run_cli("train", "--config", str(cfg), "split.seed=5"))
    assert (art / "ratings_clean.parquet").is_file() and (art / "ratings_raw.parquet").is_dir()
    assert (art / "user_ids.parquet").is_file() and cat.rows("user_ids") == len(cat.read("user_ids"))
    _ok(run_cli("clean", "--config", str(cfg), "split.seed=0", *ray_opts))
    assert (art / "ratings_clean.parquet").is_dir()
    after = _clean_tables(tmp_path / "w")
    for name in ray_tables:
        pd.testing.assert_frame_equal(ray_tables[name], after[name], check_categorical=False, obj=name)
    assert not list(art.glob(".*.tmp"))  # no staging folder left behind
    # a part the workers cannot read: exit 65 naming it, the artifacts as they were, no staging left
    (tmp_path / "parts" / "ratings" / "part-9.csv").write_bytes(b"user_id,movie_id,rating\nu1,m1,4\nu2,m\x002,3\n")
    before = {p.name: p.read_bytes() for p in (art / "ratings_raw.parquet").glob("part-*")}
    r = run_cli("clean", "--config", str(cfg), *ray_opts)
    assert r.returncode == 65 and "part-9.csv: line 3" in r.stderr, r.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in (art / "ratings_raw.parquet").glob("part-*")} == before
    assert not list(art.glob(".*.tmp"))
