"""Bad input never gives a traceback: quarantined rows and success, or exit 65 with the
file and the problem named, and the serving model untouched."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import call, make_data, tree_snapshot, write_config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    data = make_data(base / "data", n_users=150, n_movies=80, seed=7)
    cfg = write_config(base / "c.yaml", data, base / "work", model={"factors": 4, "epochs": 10},
                       data={"rating_min": 1, "rating_max": 5},
                       refresh={"max_rmse_increase": 10.0, "max_ndcg_drop": 1.0, "min_rows_ratio": 0.0,
                                "max_unknown_movie_share": 1.0, "max_null_increase": 1.0})
    assert call("run", "--config", str(cfg)) == 0
    return cfg, data, base / "work"


def corrupt(served, tmp_path, name, content, **kw):
    cfg, data, work = served
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    p = bad / name
    if content is None:
        p.unlink()
    elif isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, **kw)
    return cfg, bad, work


GOOD_HEAD = "user_id,movie_id,rating\n"


def ratings_rows(n=60):
    return "".join(f"u{i:05d},m{i % 50:05d},{1 + i % 5}\n" for i in range(n))


FATAL = {
    "missing file": ("ratings.csv", None, "file not found"),
    "missing column": ("ratings.csv", "user_id,movie_id\n1,2\n", "missing required column(s) rating"),
    "wrong delimiter": ("ratings.csv", "user_id;movie_id;rating\n1;2;3\n", "data.delimiter"),
    "non-numeric ratings": ("ratings.csv", GOOD_HEAD + "u1,m1,good\n" * 40 + ratings_rows(10), "not a number"),
    "out-of-range ratings": ("ratings.csv", GOOD_HEAD + "u1,m1,11\n" * 40 + ratings_rows(10), "above 5"),
    "binary garbage": ("ratings.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "latin-1 file": ("movies.csv", "movie_id,title\nm00001,Le R\u00eave (1999)\n".encode("latin-1"), "latin-1"),
    "empty file": ("reviews.csv", "", "empty"),
}


@pytest.mark.parametrize("case", sorted(FATAL))
def test_fatal_input_exits_65_and_keeps_current(served, tmp_path, capsys, case):
    name, content, words = FATAL[case]
    cfg, bad, work = corrupt(served, tmp_path, name, content)
    models = tree_snapshot(work / "models")
    code = call("run", "--config", str(cfg), f"data.dir={bad}")
    err = capsys.readouterr().err
    assert code == 65, err
    assert name in err and words in err and "Traceback" not in err
    assert tree_snapshot(work / "models") == models


def _append(bad, name, text):
    with open(bad / name, "a", encoding="utf-8") as fh:
        fh.write(text)


QUARANTINED = {
    # case: (file, text appended, quarantine reason fragment)
    "truncated last line": ("ratings.csv", "u00001,m000", "too few fields"),
    "empty reviews": ("reviews.csv", 'u00001,m00001,"   ",4,1\n', "empty review text"),
    "social edge to unknown user": ("social.csv", "u00001,ghost,0.5,\n", "no other file"),
    "self-loops": ("social.csv", "u00001,u00001,0.5,\n", "self-loop"),
}


@pytest.mark.parametrize("case", sorted(QUARANTINED))
def test_bad_rows_are_quarantined_and_counted(served, tmp_path, capsys, case):
    name, text, reason = QUARANTINED[case]
    cfg, bad, work = corrupt(served, tmp_path, name, (served[1] / name).read_text())
    _append(bad, name, text)
    code = call("run", "--config", str(cfg), f"data.dir={bad}", f"workdir={tmp_path / 'w'}")
    assert code == 0, capsys.readouterr().err
    q = pd.read_csv(tmp_path / "w" / "quarantine" / f"{name.split('.')[0]}.csv", dtype=str)
    assert q["reason"].str.contains(reason).any()


def test_duplicates_whitespace_unicode_ids_and_long_texts(served, tmp_path, capsys):
    cfg, bad, work = corrupt(served, tmp_path, "ratings.csv", (served[1] / "ratings.csv").read_text())
    _append(bad, "ratings.csv", "u00001,m00001,5,1\nu00001,m00001,5,1\n  u00001 ,m00002,4,2\nz\u00fcrich\u00e9,m00003,3,3\n")
    _append(bad, "reviews.csv", f'u00002,m00001,"{"really good " * 9000}",5,1\n')
    code = call("run", "--config", str(cfg), f"data.dir={bad}", f"workdir={tmp_path / 'w'}")
    assert code == 0, capsys.readouterr().err
    ids = pd.read_parquet(tmp_path / "w" / "artifacts" / "user_ids.parquet")["user_id"]
    assert "z\u00fcrich\u00e9" in set(ids) and "  u00001 " not in set(ids) and "u00001" in set(ids)


FIELD = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "4", "3.5", "-1", "1e9", "nan", "inf", "NaN", "\u00e9", '"', "a,b", "\x00"]),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(FIELD, min_size=0, max_size=5), min_size=0, max_size=25),
       header=st.sampled_from(["user_id,movie_id,rating", "user_id,movie_id,rating,timestamp", "user_id;movie_id;rating",
                               "movie_id,rating", ""]))
def test_malformed_csvs_never_crash(tmp_path_factory, rows, header):
    tmp = tmp_path_factory.mktemp("fuzz")
    data = tmp / "data"
    data.mkdir()
    body = "\n".join(",".join(f.replace("\x00", "") if header == "" else f for f in r) for r in rows)
    (data / "ratings.csv").write_text(header + "\n" + body, encoding="utf-8")
    cfg = write_config(tmp / "c.yaml", data, tmp / "w", data={"max_bad_fraction": 0.5})
    code = call("clean", "--config", str(cfg))
    assert code in (0, 65)
    if code == 0:
        q = tmp / "w" / "quarantine" / "ratings.csv"
        quarantined = len(pd.read_csv(q)) if q.exists() else 0
        valid = len(pd.read_parquet(tmp / "w" / "artifacts" / "ratings_raw.parquet"))
        assert valid > 0 and valid + quarantined >= 1
        assert Path(tmp / "w" / "manifests" / "ingest.json").exists()
