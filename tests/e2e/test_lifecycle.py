"""Model versions over their life: rolled back and forward, pruned under a kill, next to an
operator's own folders, damaged on disk (issue 26, the lifecycle cases)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from movierec.errors import ModelError
from movierec.registry import Registry, file_sha256
from tests.conftest import call, clone_site, make_data, run_cli, write_config

FAST = ("refresh.max_rmse_increase=1", "refresh.max_ndcg_drop=1")


@pytest.fixture(scope="module")
def three_versions(tmp_path_factory):
    """A small site with three versions: v0 promoted by `movierec train`, v1 and v2 by runs (v2 current)."""
    base = tmp_path_factory.mktemp("lifecycle")
    data = make_data(base / "data", n_users=120, n_movies=60, seed=3)
    cfg = write_config(base / "c.yaml", data, base / "work", model={"factors": 4, "epochs": 5},
                       refresh={"keep": 10})
    assert call("train", "--config", str(cfg)) == 0
    for epochs in (6, 7):  # another config: another version
        assert call("run", "--config", str(cfg), f"model.epochs={epochs}", *FAST) == 0
    assert len(Registry(base / "work" / "models").versions()) == 3
    return cfg


@pytest.fixture
def site(tmp_path, three_versions):
    cfg, data, work = clone_site(three_versions, tmp_path / "site")
    reg = Registry(work / "models")
    return cfg, reg, [v.name for v in reg.versions()]


def listed(cfg, capsys) -> list[dict]:
    capsys.readouterr()
    assert call("models", "list", "--config", str(cfg), "--format", "json") == 0
    return json.loads(capsys.readouterr().out)


def status_json(cfg, capsys) -> dict:
    capsys.readouterr()
    assert call("status", "--config", str(cfg), "--format", "json") == 0
    return json.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------- 1. rollback, roll forward
def test_a_plain_rollback_skips_a_never_gated_twin_and_a_killed_rollback_stays_rolled_back(site, tmp_path):
    """A run killed before its gate leaves a version nobody gated or served (its twin was
    retrained and promoted): a plain rollback passes over it. A rollback marks the version it
    leaves before it switches, so one killed mid-way never leaves that version unmarked for the
    next nightly run to gate and put back."""
    cfg, reg, (v0, v1, v2) = site
    assert reg.get(v0).status == "promoted"  # `movierec train` promoted it: it served
    twin = reg.root / (v1 + ".1")  # the registry's name for a second version of the same second and config
    shutil.copytree(reg.root / v2, twin)
    (twin / "gate.json").unlink()
    meta = json.loads((twin / "meta.json").read_text())
    # created with v1, named after it: the newest version older than the current one
    meta.update(version=twin.name, created=reg.get(v1).created)
    (twin / "meta.json").write_text(json.dumps(meta))
    assert [v.name for v in reg.versions()].index(twin.name) == 2
    assert reg.get(twin.name).status == "trained"
    assert call("models", "rollback", "--config", str(cfg)) == 0
    assert reg.current_name() == v1  # not the twin
    assert call("models", "rollback", v2, "--config", str(cfg)) == 0  # forward again: v2 serves
    # a plain rollback killed just after its switch: v2, the version left, is already marked
    env = dict(os.environ, MOVIEREC_FAILPOINT="switched")
    r = subprocess.run([sys.executable, "-m", "movierec", "models", "rollback", "--config", str(cfg)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL
    assert reg.current_name() == v1 and reg.get(v2).status == "rolled_back"
    # so the next nightly run (v2's config: v2 is its latest training) does not gate v2 and put it back
    assert call("run", "--config", str(cfg), "model.epochs=7", *FAST) == 0
    assert reg.current_name() == v1 and reg.get(v2).status == "rolled_back"


def test_rolling_forward_clears_the_mark_and_marks_the_version_left(site, capsys):
    cfg, reg, (v0, v1, v2) = site
    assert reg.current_name() == v2
    assert call("models", "rollback", "--config", str(cfg)) == 0
    assert reg.current_name() == v1 and reg.get(v2).status == "rolled_back"
    assert call("models", "rollback", v2, "--config", str(cfg)) == 0  # forward again
    assert reg.current_name() == v2
    assert reg.get(v2).status == "promoted" and reg.get(v1).status == "rolled_back"
    assert status_json(cfg, capsys)["current_model"]["status"] == "promoted"
    assert {r["version"]: r["status"] for r in listed(cfg, capsys)} == {
        v0: "promoted", v1: "rolled_back", v2: "promoted"}  # v0: promoted by `movierec train`
    # a plain rollback still works: v1 was left for a newer version, not judged bad
    assert call("models", "rollback", "--config", str(cfg)) == 0
    assert reg.current_name() == v1 and reg.get(v1).status == "promoted" and reg.get(v2).status == "rolled_back"
    assert call("models", "rollback", "--config", str(cfg)) == 0  # v1 rolled back from: v0 next
    assert reg.current_name() == v0 and reg.get(v0).status == "promoted" and reg.get(v1).status == "rolled_back"
    # nothing earlier than v0: refused, and nothing changed
    assert call("models", "rollback", "--config", str(cfg)) == 1 and reg.current_name() == v0
    # the nightly run keeps the operator's choice: its candidate v2 was rolled back from
    assert call("run", "--config", str(cfg), "model.epochs=7", *FAST) == 0 and reg.current_name() == v0


# ----------------------------------------------------------------------------- 2. pruning under a kill
def test_a_kill_mid_prune_leaves_no_half_deleted_version(site, capsys):
    cfg, reg, (v0, v1, v2) = site
    prune = ("import sys; from movierec.registry import Registry; "
             "print(Registry(sys.argv[1]).apply_retention(1))")
    r = subprocess.run([sys.executable, "-c", prune, str(reg.root)], capture_output=True, text=True,
                       env={**os.environ, "MOVIEREC_FAILPOINT": "prune"})
    assert r.returncode == -signal.SIGKILL
    trash = sorted(p for p in reg.root.iterdir() if p.name.startswith(".trash-"))
    assert {p.name.rsplit("-", 1)[0] for p in trash} == {f".trash-{v0}", f".trash-{v1}"}
    (trash[0] / "model.npz").unlink()  # as a kill inside the delete leaves it
    assert [v.name for v in reg.versions()] == [v2]
    assert [row["version"] for row in listed(cfg, capsys)] == [v2]
    # the default rollback has nothing broken to pick: a clear refusal
    assert call("models", "rollback", "--config", str(cfg)) == 1
    assert "no earlier good model version" in capsys.readouterr().err
    assert reg.current_name() == v2
    # the next locked command sweeps the trash; a plain prune leaves none
    assert call("models", "rollback", v2, "--config", str(cfg)) == 0
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".trash-")]
    assert call("run", "--config", str(cfg), "model.epochs=8", "refresh.keep=1", *FAST) == 0
    assert len(reg.versions()) == 1 and not [p for p in reg.root.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- 3. what the registry did not write
def test_retention_and_cleanup_leave_foreign_folders_alone(site, capsys):
    cfg, reg, (v0, v1, v2) = site
    models = reg.root
    foreign = {
        f"{v0}.bak": lambda p: shutil.copytree(models / v0, p, symlinks=True),  # cp -a
        f"{v1}.7": lambda p: shutil.copytree(models / v1, p, symlinks=True),  # a version-like name
        "backup-of-v2": lambda p: shutil.copytree(models / v2, p, symlinks=True),
        ".tmp-mine": lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")),
        ".trash-notes": lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")),
    }
    for name, make in foreign.items():
        make(models / name)
    (models / ".current.bak").write_text(v0 + "\n")
    before = {name: sorted(p.relative_to(models / name).as_posix() for p in (models / name).rglob("*"))
              for name in foreign}
    ours = (models / f".tmp-{v2}.1-4242", models / f".trash-{v0}-4242", models / ".current.4242")

    def leave_ours() -> None:  # what a killed writer, pruner and switch of this registry leave
        ours[0].mkdir()
        ours[1].mkdir()
        ours[2].write_text(v1 + "\n")

    leave_ours()
    assert [v.name for v in reg.versions()] == [v0, v1, v2]
    assert [row["version"] for row in listed(cfg, capsys)] == [v0, v1, v2]
    assert call("models", "rollback", f"{v0}.bak", "--config", str(cfg)) == 1  # not a version
    assert "no model version" in capsys.readouterr().err and reg.current_name() == v2
    assert not any(p.exists() for p in ours)  # swept under the lock; the foreign ones stay (below)
    leave_ours()
    assert reg.cleanup_temp() == 3 and not any(p.exists() for p in ours)
    assert reg.apply_retention(1) == [v0, v1]
    assert [v.name for v in reg.versions()] == [v2]
    assert {name: sorted(p.relative_to(models / name).as_posix() for p in (models / name).rglob("*"))
            for name in foreign} == before
    assert (models / ".current.bak").read_text() == v0 + "\n"
    assert Registry(models).load(None).path.name == v2


# ----------------------------------------------------------------------------- 4. damaged files
def test_each_file_is_recorded_and_a_damaged_model_is_a_clear_error(site, capsys):
    cfg, reg, (v0, v1, v2) = site
    cur = reg.get(v2)
    files = cur.files
    assert {"model.npz", "holdout.npz", "seen.npz", "user_ids.parquet", "movies.parquet"} <= set(files)
    for name, rec in files.items():
        p = cur.path / name
        assert rec == {"bytes": p.stat().st_size, "sha256": file_sha256(p)}, name
    model = cur.path / "model.npz"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])  # truncated
    r = run_cli("recommend", "--config", str(cfg), "--user", "u00001")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "unexpected" not in r.stderr
    assert f"model version {v2} is damaged: model.npz has" in r.stderr
    row = {row["version"]: row for row in listed(cfg, capsys)}[v2]
    assert "model.npz" in row["damaged"]
    capsys.readouterr()
    assert call("models", "list", "--config", str(cfg)) == 0 and "damaged: model.npz" in capsys.readouterr().out
    assert "model.npz" in status_json(cfg, capsys)["current_model"]["error"]
    # same size, other bytes: the digest tells
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    model.write_bytes(bytes(flipped))
    with pytest.raises(ModelError, match="model.npz does not match the SHA-256"):
        reg.load()
    model.write_bytes(good)
    assert reg.load().path.name == v2
    # a damaged older version is skipped by the default rollback
    (reg.get(v1).path / "seen.npz").write_bytes(b"")
    assert call("models", "rollback", "--config", str(cfg)) == 0 and reg.current_name() == v0


def test_a_version_written_before_digests_still_loads(site):
    cfg, reg, (v0, v1, v2) = site
    meta_path = reg.get(v2).path / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]
    meta_path.write_text(json.dumps(meta))
    assert reg.get(v2).files == {} and reg.load().path.name == v2
    assert recs_ok(cfg)
    seen = reg.get(v1).path / "seen.npz"  # an older one half deleted in place, as a kill used to leave it
    meta_path = reg.get(v1).path / "meta.json"
    meta_path.write_text(json.dumps({k: v for k, v in json.loads(meta_path.read_text()).items() if k != "files"}))
    seen.unlink()
    assert reg.get(v1).damage() == "seen.npz is missing"
    assert call("models", "rollback", "--config", str(cfg)) == 0 and reg.current_name() == v0  # v1 skipped
    assert call("models", "rollback", v2, "--config", str(cfg)) == 0
    model = reg.get(v2).path / "model.npz"
    model.write_bytes(model.read_bytes()[:1000])  # damaged all the same: a clear error, not BadZipFile
    with pytest.raises(ModelError, match=f"model version {v2} is damaged: model.npz"):
        reg.load()


def recs_ok(cfg: Path) -> bool:
    return call("recommend", "--config", str(cfg), "--user", "u00001", "--format", "json") == 0
