"""The model that serves: trained on everything, self-contained, owned by one registry."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from movierec.registry import FORMAT, Registry
from tests.conftest import ROOT, clone_site, make_data, run_cli, tree_snapshot, write_config

CFG = str(ROOT / "configs" / "default.yaml")


def current(work: Path) -> str:
    return (work / "models" / "current").read_text().strip()


def recs(cfg, user, *extra, env=None) -> dict:
    r = run_cli("recommend", "--config", str(cfg), "--user", user, "--format", "json", *extra, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ----------------------------------------------------------------------------- demo: what serves
@pytest.fixture(scope="module")
def demo_copy(demo_workdir, tmp_path_factory):
    """A copy of the trained demo workdir that tests may add feedback to."""
    work = tmp_path_factory.mktemp("demo-copy") / "work"
    shutil.copytree(demo_workdir, work, ignore=shutil.ignore_patterns("lock"))
    return work


def test_served_model_is_trained_on_every_rating_and_never_recommends_a_rated_movie(demo_copy, tmp_path):
    work = demo_copy
    over = f"workdir={work}"
    v = Registry(work / "models").current()
    ratings = pd.read_parquet(work / "artifacts" / "ratings_clean.parquet")
    assert v.meta["train_ratings"] == len(ratings) == v.meta["all_ratings"]
    assert v.meta["holdout"]["train_ratings"] < 0.8 * len(ratings)  # the measured model: training part only
    assert (ratings["fold"] == 0).sum() > 10_000  # the test part is in the served model too
    raw = pd.read_csv(ROOT / "data" / "demo" / "ratings.csv", dtype=str)
    users = sorted(raw["user_id"].unique())[:200]
    # feedback after training: three users rate (or share) what the model would show them first
    feedback = {}
    for user in users[:3]:
        top = [it["movie_id"] for it in recs(CFG, user, over)["items"][:2]]
        assert run_cli("feedback", "--config", CFG, "--user", user, "--movie", top[0], "--rating", "2",
                       over).returncode == 0
        assert run_cli("feedback", "--config", CFG, "--user", user, "--movie", top[1], "--share-with", users[-1],
                       over).returncode == 0
        feedback[user] = set(top)
    out = tmp_path / "all.parquet"
    r = run_cli("recommend", "--config", CFG, "--all", "--output", str(out), over)
    assert r.returncode == 0, r.stderr
    lists = pd.read_parquet(out)
    rated = raw.groupby("user_id")["movie_id"].apply(set)
    for user in users:
        got = set(lists.loc[lists["user_id"] == user, "movie_id"])
        assert len(got) == 10
        assert not got & rated.get(user, set()), user  # any part of the split
        assert not got & feedback.get(user, set()), user
    # one user through --user: the same list as --all, feedback included
    one = recs(CFG, users[0], over)
    assert [it["movie_id"] for it in one["items"]] == lists.loc[lists["user_id"] == users[0], "movie_id"].tolist()
    assert one["feedback_events"] == 2


def test_feedback_moves_the_list_toward_a_genre_before_the_next_run(demo_copy):
    work = demo_copy
    over = f"workdir={work}"
    movies = pd.read_csv(ROOT / "data" / "demo" / "movies.csv", dtype=str)
    raw = pd.read_csv(ROOT / "data" / "demo" / "ratings.csv", dtype=str)
    is_genre = movies.set_index("movie_id")["genres"].str.contains("Horror")

    def position(ids):  # mean position of the genre's movies in the whole ranking, 0 = top
        return sum(i for i, m in enumerate(ids) if is_genre[m]) / max(1, sum(is_genre[m] for m in ids)) / len(ids)

    gained = 0
    for user in ("u00300", "u00450", "u00600"):
        before = [it["movie_id"] for it in recs(CFG, user, over, "-n", "2000")["items"]]
        # three movies of the genre the user has not rated, rated 5 as feedback
        mine = set(raw.loc[raw.user_id == user, "movie_id"]) | set(before[:10])
        pick = [m for m in movies.loc[is_genre.to_numpy(), "movie_id"] if m not in mine][:3]
        for m in pick:
            assert run_cli("feedback", "--config", CFG, "--user", user, "--movie", m, "--rating", "5",
                           over).returncode == 0
        after = recs(CFG, user, over, "-n", "2000")  # no run in between
        got = [it["movie_id"] for it in after["items"]]
        assert after["feedback_events"] == 3 and not set(pick) & set(got) and after["fallback"] is None
        assert position(got) < position([m for m in before if m not in pick]) - 0.02, user
        top_before, top_after = int(is_genre[before[:10]].sum()), int(is_genre[got[:10]].sum())
        assert top_after >= top_before, user
        gained += top_after - top_before
    assert gained >= 2


# ----------------------------------------------------------------------------- evaluate is read-only
def test_evaluate_never_changes_what_serves(trained_small, tmp_path):
    cfg, data, work = clone_site(trained_small, tmp_path / "site")
    cur = current(work)
    before = tree_snapshot(work / "models")
    ratings = pd.read_csv(data / "ratings.csv")
    ratings.sample(200, random_state=1).assign(user_id=lambda d: "x" + d.user_id).pipe(
        lambda extra: pd.concat([ratings, extra])).to_csv(data / "ratings.csv", index=False)
    r = run_cli("evaluate", "--config", str(cfg), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model_version"] is None  # its models were fitted in memory
    assert current(work) == cur and tree_snapshot(work / "models") == before


# ----------------------------------------------------------------------------- self-contained versions
@pytest.fixture(scope="module")
def trained_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("site")
    data = make_data(base / "data", n_users=200, n_movies=100, seed=5)
    cfg = write_config(base / "c.yaml", data, base / "work",
                       model={"factors": 8, "epochs": 15, "social_reg": 0.1}, refresh={"keep": 5})
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    return cfg


@pytest.fixture
def site(tmp_path, trained_site):
    return clone_site(trained_site, tmp_path / "site")


def _ties(data: Path) -> dict[str, set]:
    s = pd.read_csv(data / "social.csv", dtype=str)
    out: dict[str, set] = {}
    for a, b in zip(s.user_id, s.friend_id):
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return out


def _cited(cfg, user) -> list[str]:
    out = recs(cfg, user, "--explain", "-n", "20")
    return [f["user_id"] for it in out["items"] for f in it["evidence"].get("trusted_friends", [])]


def test_explanations_cite_true_ties_after_a_rejected_run_and_a_rollback(site):
    cfg, data, work = site
    ties = _ties(data)
    users = ["u00001", "u00005"]
    assert sum(len(_cited(cfg, u)) for u in users) > 0
    v1 = current(work)
    # a new user whose id sorts first shifts every dense index of the workdir's artifacts
    r = pd.read_csv(data / "ratings.csv")
    new = pd.DataFrame({"user_id": ["a0000"] * 3, "movie_id": r.movie_id.iloc[:3], "rating": [4, 5, 3]})
    pd.concat([new, r]).to_csv(data / "ratings.csv", index=False)
    bad = run_cli("run", "--config", str(cfg), "model.factors=1", "model.epochs=1", "model.learning_rate=0.0001",
                  "model.use_features=false", "model.early_stopping=false", "model.social_reg=0")
    assert bad.returncode == 3 and current(work) == v1
    for u in users:
        assert set(_cited(cfg, u)) <= ties[u], u
    ok = run_cli("run", "--config", str(cfg), "refresh.max_rmse_increase=1", "refresh.max_ndcg_drop=1")
    assert ok.returncode == 0 and current(work) != v1
    assert run_cli("models", "rollback", v1, "--config", str(cfg)).returncode == 0 and current(work) == v1
    for u in users:
        assert set(_cited(cfg, u)) <= ties[u], u


def test_a_version_serves_the_same_after_the_workdir_changes(site):
    cfg, data, work = site
    before = recs(cfg, "u00003", "--explain")
    shutil.rmtree(work / "artifacts")
    shutil.rmtree(work / "manifests")
    assert recs(cfg, "u00003", "--explain") == before


# ----------------------------------------------------------------------------- lifecycle faults
def test_a_passed_candidate_killed_before_promotion_is_promoted_by_the_next_run(site):
    cfg, data, work = site
    v1 = current(work)
    r = pd.read_csv(data / "ratings.csv")
    pd.concat([r, r.sample(100, random_state=3).assign(user_id=lambda d: "z" + d.user_id)]).to_csv(
        data / "ratings.csv", index=False)
    killed = run_cli("run", "--config", str(cfg), "refresh.max_rmse_increase=1", "refresh.max_ndcg_drop=1",
                     env={"MOVIEREC_FAILPOINT": "promote"})
    assert killed.returncode == -signal.SIGKILL and current(work) == v1
    reg = Registry(work / "models")
    cand = [v for v in reg.versions() if v.name != v1]
    assert len(cand) == 1 and cand[0].status == "passed"
    nxt = run_cli("run", "--config", str(cfg))
    assert nxt.returncode == 0, nxt.stderr
    assert current(work) == cand[0].name and "interrupted" in nxt.stderr
    assert reg.get(cand[0].name).status == "promoted" and len(reg.versions()) == 2  # no retraining


def test_retention_keeps_current_and_foreign_folders_and_orders_by_creation_time(site):
    cfg, data, work = site
    models = work / "models"
    v1 = current(work)
    (models / "backup").mkdir()
    (models / "backup" / "notes.txt").write_text("operator's")
    (models / "half").mkdir()
    (models / "half" / "meta.json").write_text("{}")  # no model: not a version
    (models / "README").write_text("hands off")
    # three older copies of v1 whose names sort *after* it but whose creation times are earlier
    olds = [f"2999010{k}T000000Z-0000000{k}" for k in range(3)]
    for k, created in enumerate(("2001-01-01T00:00:00.000000Z", "2002-01-01T00:00:00.000000Z",
                                 "2003-01-01T00:00:00.000000Z")):
        d = models / olds[k]
        shutil.copytree(models / v1, d)
        meta = json.loads((d / "meta.json").read_text())
        meta.update(created=created, version=d.name)
        (d / "meta.json").write_text(json.dumps(meta))
    reg = Registry(models)
    assert [v.name for v in reg.versions()][:3] == olds
    assert run_cli("models", "rollback", olds[0], "--config", str(cfg)).returncode == 0
    r = pd.read_csv(data / "ratings.csv")
    pd.concat([r, r.sample(50, random_state=4).assign(user_id=lambda d: "y" + d.user_id)]).to_csv(
        data / "ratings.csv", index=False)
    out = run_cli("run", "--config", str(cfg), "refresh.keep=2", "refresh.max_rmse_increase=1",
                  "refresh.max_ndcg_drop=1")
    assert out.returncode == 0, out.stderr
    names = [v.name for v in reg.versions()]
    assert len(names) == 2 and v1 in names and current(work) in names and olds[0] not in names
    assert (models / "backup" / "notes.txt").read_text() == "operator's" and (models / "half").is_dir()
    assert (models / "README").exists()
    listed = json.loads(run_cli("models", "list", "--config", str(cfg), "--format", "json").stdout)
    assert [row["version"] for row in listed] == names


def test_a_version_of_an_old_format_is_a_clear_error(site):
    cfg, data, work = site
    models = work / "models"
    v1 = current(work)
    old = models / "20200101T000000-00000000"
    shutil.copytree(models / v1, old)
    meta = json.loads((old / "meta.json").read_text())
    meta.pop("format")
    meta["version"] = old.name
    (old / "meta.json").write_text(json.dumps(meta))
    r = run_cli("models", "rollback", old.name, "--config", str(cfg))
    assert r.returncode == 1 and old.name in r.stderr and f"format {FORMAT}" in r.stderr and current(work) == v1
    (models / "current").write_text(old.name + "\n")  # as an older movierec would have left it
    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001")
    assert r.returncode == 1 and old.name in r.stderr and "format 1" in r.stderr and "Traceback" not in r.stderr
    listed = run_cli("models", "list", "--config", str(cfg)).stdout
    assert "cannot serve" in listed
    # the nightly run can still replace it
    assert run_cli("models", "rollback", v1, "--config", str(cfg)).returncode == 0
    assert recs(cfg, "u00001")["items"]


def test_current_must_name_a_version_inside_models(site):
    cfg, data, work = site
    (work / "models" / "current").write_text("../../etc\n")
    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001")
    assert r.returncode == 1 and "not a version name" in r.stderr


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX users")
def test_a_second_os_user_can_read_a_version(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="movierec-shared-"))
    try:
        shared.chmod(0o755)
        data = make_data(shared / "data", n_users=100, n_movies=60, seed=2)
        cfg = write_config(shared / "c.yaml", data, shared / "work", model={"factors": 4, "epochs": 5})
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        r = subprocess.run([os.sys.executable, "-m", "movierec", "run", "--config", str(cfg)], env=env,
                           capture_output=True, text=True, preexec_fn=lambda: os.umask(0o022))
        assert r.returncode == 0, r.stderr
        version = Registry(shared / "work" / "models").current()
        files = [p for p in version.path.rglob("*") if p.is_file()] + [shared / "work" / "models" / "current"]
        assert {p.name for p in files} >= {"meta.json", "metrics.json", "gate.json", "model.npz", "seen.npz"}
        for p in files + [version.path, version.path.parent]:
            assert p.stat().st_mode & 0o004, f"{p} is not readable by others"
        if os.getuid() == 0:  # really read them as another user
            for p in files:
                out = subprocess.run(["cat", str(p)], user=65534, capture_output=True)
                assert out.returncode == 0, (p, out.stderr)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
