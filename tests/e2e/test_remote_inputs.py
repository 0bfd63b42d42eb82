"""Inputs at a URL (``data.dir: s3://...``, ``file:///...``): read through pyarrow's
filesystems, by the driver (local engine) or by Ray's workers (engine.kind: ray), with the
artifacts of the same files read from a local folder. S3 is moto's server on a local port."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import _free_port, make_data, run_cli, write_config


def _ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _art(work, name: str) -> pd.DataFrame:
    return pd.read_parquet(work / "artifacts" / f"{name}.parquet")


def _exports(src, dst):
    """``src``'s tables as a platform's export: ratings as a folder of parts (CSV, Parquet,
    a Hive-style sub-folder, a _SUCCESS marker), a bad rating in the Parquet part."""
    dst.mkdir()
    for name in ("users", "movies"):
        (dst / f"{name}.csv").write_bytes((src / f"{name}.csv").read_bytes())
    r = pd.read_csv(src / "ratings.csv", dtype={"user_id": str, "movie_id": str})
    (dst / "ratings" / "date=2").mkdir(parents=True)
    a, b = len(r) // 3, 2 * len(r) // 3
    r.iloc[:a].to_csv(dst / "ratings" / "part-0.csv", index=False)
    mid = r.iloc[a:b].copy()
    mid["rating"] = mid["rating"].astype(str)
    mid.iloc[3, mid.columns.get_loc("rating")] = "x"
    mid.to_parquet(dst / "ratings" / "part-1.parquet", index=False)
    r.iloc[b:].to_csv(dst / "ratings" / "date=2" / "part-2.csv", index=False)
    (dst / "ratings" / "_SUCCESS").write_text("")


@pytest.fixture
def exports(tmp_path):
    """(the export folder, the config of a local run over it, that run's workdir)."""
    src = make_data(tmp_path / "src", files=("ratings", "users", "movies"))
    _exports(src, tmp_path / "exp")
    local = write_config(tmp_path / "local.yaml", tmp_path / "exp", tmp_path / "w-local", data={"ratings": "ratings"})
    _ok(run_cli("clean", "--config", str(local)))
    return tmp_path / "exp", tmp_path / "w-local"


def _same_clean(a, b) -> None:
    for name in ("ratings_clean", "users_clean", "movies_clean", "user_ids", "movie_ids"):
        x, y = _art(a, name), _art(b, name)
        if name == "ratings_clean":
            x, y = (f.sort_values(list(f.columns)).reset_index(drop=True) for f in (x, y))
        pd.testing.assert_frame_equal(x, y, obj=name)
    q = pd.read_csv(b / "quarantine" / "ratings.csv")
    assert list(q["file"]) == ["part-1.parquet"] and list(q["row"]) == [4]


@pytest.fixture
def s3(monkeypatch):
    """A bucket on moto's S3 server: (the URL query that points pyarrow at it, the filesystem)."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer
    import pyarrow.fs as pafs

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "movierec-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "movierec-test")
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    fs, _ = pafs.FileSystem.from_uri(f"s3://exports?{query}&allow_bucket_creation=true")
    fs.create_dir("exports")
    yield query, fs
    server.stop()


def _upload(fs, folder, prefix: str) -> None:
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            with fs.open_output_stream(f"{prefix}/{p.relative_to(folder).as_posix()}") as out:
                out.write(p.read_bytes())


def test_s3_exports_give_the_artifacts_of_a_local_folder(tmp_path, exports, s3):
    folder, w_local = exports
    query, fs = s3
    _upload(fs, folder, "exports/2026-12-06")
    url = f"s3://exports/2026-12-06?{query}"
    cfg = write_config(tmp_path / "s3.yaml", tmp_path, tmp_path / "w-s3", data={"dir": url, "ratings": "ratings"})
    r = _ok(run_cli("clean", "--config", str(cfg)))
    assert "ratings: 3 part files" in r.stderr
    _same_clean(w_local, tmp_path / "w-s3")
    # nothing changed in the bucket: ingest is fresh; a new part makes it stale
    assert "ingest: fresh" in _ok(run_cli("clean", "--config", str(cfg))).stderr
    with fs.open_output_stream("exports/2026-12-06/ratings/part-3.csv") as out:
        out.write(b"user_id,movie_id,rating\nu00001,m00002,4\n")
    r = _ok(run_cli("clean", "--config", str(cfg)))
    assert "ingest: done" in r.stderr
    stats = json.loads((tmp_path / "w-s3" / "manifests" / "ingest.json").read_text())
    assert stats["stats"]["ratings"]["rows"] == stats["stats"]["ratings"]["valid"] + 1
    assert int(np.sum(_art(tmp_path / "w-s3", "ratings_clean")["rating"] > 0)) > 0


def test_a_bad_part_or_a_missing_bucket_is_named_by_its_url(tmp_path, exports, s3):
    folder, _ = exports
    query, fs = s3
    _upload(fs, folder, "exports/d")
    with fs.open_output_stream("exports/d/ratings/part-9.csv") as out:
        out.write(b"user_id,movie_id,rating\nu1,m1,4\nu2,m2\x00,3\n")  # a NUL byte in line 3
    cfg = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "w", data={"dir": f"s3://exports/d?{query}",
                                                                         "ratings": "ratings"})
    r = run_cli("ingest", "--config", str(cfg))
    assert r.returncode == 65, r.stderr[-2000:]
    assert "s3://exports/d/ratings/part-9.csv" in r.stderr and "line 3" in r.stderr
    assert "movierec-fetch-" not in r.stderr  # the message names the part, not the temporary copy
    cfg = write_config(tmp_path / "c2.yaml", tmp_path, tmp_path / "w2", data={"dir": f"s3://no-such-bucket/d?{query}"})
    r = run_cli("ingest", "--config", str(cfg))
    assert r.returncode == 65 and "s3://no-such-bucket/d/ratings.csv" in r.stderr and "not found" in r.stderr


def test_ray_workers_read_the_parts_at_a_file_url(tmp_path, exports, ray_head):
    folder, w_local = exports
    cfg = write_config(tmp_path / "ray.yaml", tmp_path, tmp_path / "w-ray",
                       data={"dir": folder.as_uri(), "ratings": "ratings"},
                       engine={"kind": "ray", "workers": 2, "address": ray_head})
    r = _ok(run_cli("clean", "--config", str(cfg)))
    assert "ratings: 3 part files" in r.stderr
    _same_clean(w_local, tmp_path / "w-ray")


def test_ray_workers_fetch_s3_parts_themselves(tmp_path, exports, s3):
    pytest.importorskip("ray")
    folder, w_local = exports
    query, fs = s3
    _upload(fs, folder, "exports/r")
    # a Ray of the command's own: its workers inherit the driver's AWS credentials
    cfg = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "w", data={"dir": f"s3://exports/r?{query}",
                                                                         "ratings": "ratings"},
                       engine={"kind": "ray", "workers": 2})
    r = _ok(run_cli("clean", "--config", str(cfg), fresh=True))
    assert "engine: Ray" in r.stderr and "ratings: 3 part files" in r.stderr
    _same_clean(w_local, tmp_path / "w")
