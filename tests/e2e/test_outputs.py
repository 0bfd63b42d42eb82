"""What the CLI writes and refuses (audit, issue 26): CSV outputs that read back with the same
rows and carry no spreadsheet formulas, unknown users named, texts that are not UTF-8 and
unreadable import files as exit 65 with the file named, never the generic exit 1."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from movierec.errors import EXIT_DATA, EXIT_USAGE
from tests.conftest import call, make_data, write_config

FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _formula_id(prefix_of: int, value: str) -> str:
    return ("=", "+", "-", "@", "", "")[prefix_of % 6] + value


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small trained site whose user ids, movie ids and titles begin like formulas."""
    base = tmp_path_factory.mktemp("outputs")
    data = make_data(base / "data", n_users=60, n_movies=120, seed=3, files=("ratings", "movies"))
    r = pd.read_csv(data / "ratings.csv", dtype=str)
    m = pd.read_csv(data / "movies.csv", dtype=str)
    users = {u: _formula_id(k, u) for k, u in enumerate(sorted(r["user_id"].unique()))}
    movies = {v: _formula_id(k, v) for k, v in enumerate(m["movie_id"])}
    r["user_id"], r["movie_id"] = r["user_id"].map(users), r["movie_id"].map(movies)
    m["movie_id"] = m["movie_id"].map(movies)
    m.loc[::3, "title"] = "=HYPERLINK(\"http://x\") " + m.loc[::3, "title"]
    r.to_csv(data / "ratings.csv", index=False)
    m.to_csv(data / "movies.csv", index=False)
    cfg = write_config(base / "c.yaml", data, base / "work", model={"factors": 4, "epochs": 5},
                       evaluate={"k": [5], "baselines": []})
    assert call("-q", "train", "--config", str(cfg)) == 0
    return cfg, base / "work", sorted(users.values()), sorted(movies.values())


def _write_input(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:  # quoted: the \r survives in the input
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def _safe(v: str) -> bool:
    """No cell a spreadsheet would run: a formula start only behind the leading '."""
    return not v.startswith(FORMULA)


# 1 -------------------------------------------------------------------------------------------
def test_score_text_quotes_a_lone_carriage_return(site, tmp_path, capsys):
    cfg, *_ = site
    texts = ["a fine film", "bad\rending", "two\nlines", "crlf\r\ninside", "trailing\r", "plain, with comma"]
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_input(inp, [{"id": str(k), "review": t} for k, t in enumerate(texts)])
    assert call("score-text", "--config", str(cfg), "--input", str(inp), "--text-column", "review",
                "--output", str(out)) == 0
    back = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(back) == len(texts) and back["review"].tolist() == texts
    assert back["id"].tolist() == [str(k) for k in range(len(texts))]
    assert back["sentiment_label"].ne("").all()
    with open(out, newline="", encoding="utf-8") as fh:  # the csv module reads the same rows too
        assert [row[1] for row in list(csv.reader(fh))[1:]] == texts
    # without a carriage return the file is written as before: quoted only where needed
    _write_input(inp, [{"id": "1", "review": "good"}])
    assert call("score-text", "--config", str(cfg), "--input", str(inp), "--text-column", "review",
                "--output", str(out)) == 0
    assert out.read_text().splitlines()[1].startswith("1,good,")


# 2 -------------------------------------------------------------------------------------------
def test_score_text_neutralises_formulas(site, tmp_path, capsys):
    cfg, *_ = site
    ids = ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\r=y", "-1.5", "+2", "plain"]
    inp, out = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_input(inp, [{"id": i, "review": "=cmd|' /C calc'!A0" if k == 0 else "ok"} for k, i in enumerate(ids)])
    assert call("score-text", "--config", str(cfg), "--input", str(inp), "--text-column", "review",
                "--output", str(out)) == 0
    back = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(back) == len(ids)
    assert back["id"].tolist() == ["'" + i for i in ids[:6]] + ["-1.5", "+2", "plain"]  # numbers stay numbers
    assert back["review"].tolist() == ["'=cmd|' /C calc'!A0"] + ["ok"] * (len(ids) - 1)
    capsys.readouterr()
    call("score-text", "--help")
    assert "formulas" in " ".join(capsys.readouterr().out.split())


def test_recommend_csv_outputs_neutralise_formulas_json_and_parquet_do_not(site, tmp_path, capsys):
    cfg, _, users, movies = site
    assert call("-q", "recommend", "--config", str(cfg), "--all", "--output", str(tmp_path / "all.csv"), "-n", "3") == 0
    assert call("-q", "recommend", "--config", str(cfg), "--all", "--output", str(tmp_path / "all.parquet"),
                "-n", "3") == 0
    capsys.readouterr()
    assert call("-q", "recommend", "--config", str(cfg), "--all", "--output", "-", "-n", "3") == 0
    stdout = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out), dtype=str, keep_default_na=False)
    got = pd.read_csv(tmp_path / "all.csv", dtype=str, keep_default_na=False)
    raw = pd.read_parquet(tmp_path / "all.parquet")
    assert len(got) == len(raw) == len(stdout) and got.equals(stdout)
    assert set(raw["user_id"]) <= set(users)  # parquet: the ids as they are
    assert any(u.startswith(FORMULA) for u in raw["user_id"])
    for col in ("user_id", "movie_id"):
        assert got[col].map(_safe).all(), got[col][~got[col].map(_safe)].tolist()
        assert got[col].str.removeprefix("'").tolist() == raw[col].astype(str).tolist()
    # one user's list: csv neutralised, json as it is
    user = next(u for u in users if u.startswith("="))
    assert call("recommend", "--config", str(cfg), "--user", user, "--format", "csv") == 0
    one = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out), dtype=str, keep_default_na=False)
    assert len(one) == 10 and one["movie_id"].map(_safe).all() and one["title"].map(_safe).all()
    assert any(t.startswith("'=HYPERLINK") for t in one["title"]) or any(v.startswith("'") for v in one["movie_id"])
    assert call("recommend", "--config", str(cfg), "--user", user, "--format", "json") == 0
    js = json.loads(capsys.readouterr().out)
    assert js["user_id"] == user and {it["movie_id"] for it in js["items"]} <= set(movies)
    assert [it["movie_id"] for it in js["items"]] == one["movie_id"].str.removeprefix("'").tolist()
    call("recommend", "--help")
    assert "formulas" in " ".join(capsys.readouterr().out.split())


# 3 -------------------------------------------------------------------------------------------
def test_unknown_user_is_named_and_strict_refuses(site, capsys):
    cfg, _, users, _ = site
    capsys.readouterr()
    assert call("recommend", "--config", str(cfg), "--user", "u-typo-42", "--format", "json") == 0
    io = capsys.readouterr()
    assert json.loads(io.out)["fallback"] == "popularity"
    note = [line for line in io.err.splitlines() if "u-typo-42" in line]
    assert len(note) == 1 and "popularity fallback" in note[0], io.err
    assert call("recommend", "--config", str(cfg), "--user", "u-typo-42", "--strict") == EXIT_DATA
    io = capsys.readouterr()
    assert io.out == "" and "u-typo-42" in io.err and "unknown" in io.err
    # a known user: no note, and --strict changes nothing
    assert call("recommend", "--config", str(cfg), "--user", users[0], "--strict", "--format", "json") == 0
    io = capsys.readouterr()
    assert json.loads(io.out)["fallback"] is None and "unknown" not in io.err
    assert call("recommend", "--config", str(cfg), "--all", "--strict", "--output", "-") == EXIT_USAGE
    call("recommend", "--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--strict" in help_text and "exit 65" in help_text


# 4 -------------------------------------------------------------------------------------------
def test_feedback_comment_not_utf8_is_a_data_error(site, capsys):
    cfg, work, users, movies = site
    log = work / "feedback" / "events.jsonl"
    before = log.read_bytes() if log.exists() else None
    bad = os.fsdecode(b"great \xff\xfe film")  # what argv holds for bytes that are not UTF-8
    assert call("feedback", "--config", str(cfg), "--user", users[0], "--movie", movies[0],
                "--comment", bad) == EXIT_DATA
    err = capsys.readouterr().err
    assert "--comment" in err and "UTF-8" in err and "0xff" in err and "unexpected" not in err
    # the console command, bytes in argv as a shell passes them
    r = subprocess.run([sys.executable, "-m", "movierec", "feedback", "--config", str(cfg), "--user", users[0],
                        "--movie", movies[0], "--rating", "4", "--comment", b"caf\xe9"],
                       capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == EXIT_DATA and "--comment" in r.stderr and "unexpected" not in r.stderr, r.stderr
    assert (log.read_bytes() if log.exists() else None) == before  # nothing recorded


# 5 -------------------------------------------------------------------------------------------
BAD_IMPORTS = {
    "latin-1": ("user_id,movie_id,rating\nu1,m1,4\nu2,Caf\u00e9,3\n".encode("latin-1"),
                ["line 3", "utf-8", "--encoding"]),
    "empty": (b"", ["empty"]),
    "blank": (b"\n\n  \n", ["empty"]),
    "too many fields": (b"user_id,movie_id,rating\nu1,m1,4\nu2,m2,3,x,y\n", ["line 3", "5 fields"]),
    "too few fields": (b"user_id,movie_id,rating\nu1,m1,4\nu2,m2\nu3,m3,2\n", ["line 3", "2 fields"]),
    "unclosed quote": (b'user_id,movie_id,rating\nu1,m1,4\nu2,"m2,3\nu3,m3,2\n', ["line 3"]),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["binary"]),
}


@pytest.mark.parametrize("case", sorted(BAD_IMPORTS))
def test_data_import_csv_bad_file_exits_65_naming_it(tmp_path, capsys, case):
    content, words = BAD_IMPORTS[case]
    src = tmp_path / "dump.csv"
    src.write_bytes(content)
    assert call("data", "import", "csv", "--from", str(src), "--to", str(tmp_path / "out")) == EXIT_DATA
    err = capsys.readouterr().err
    assert str(src) in err and "unexpected" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out" / "ratings.csv").exists()


def test_data_import_csv_encoding_and_texts_round_trip(tmp_path, capsys):
    src = tmp_path / "dump.csv"
    src.write_bytes("user_id,movie_id,rating\nu1,Caf\u00e9,4\n".encode("latin-1"))
    assert call("data", "import", "csv", "--from", str(src), "--to", str(tmp_path / "a"), "--encoding", "latin-1") == 0
    assert pd.read_csv(tmp_path / "a" / "ratings.csv", dtype=str)["movie_id"].tolist() == ["Caf\u00e9"]
    # a review text with a lone carriage return stays one row of the canonical file
    _write_input(src, [{"user_id": "u1", "movie_id": "m1", "text": "bad\rending"},
                       {"user_id": "u2", "movie_id": "m2", "text": "=fine"}])
    assert call("data", "import", "csv", "--from", str(src), "--to", str(tmp_path / "b"), "--table", "reviews") == 0
    back = pd.read_csv(tmp_path / "b" / "reviews.csv", dtype=str)
    assert back["text"].tolist() == ["bad\rending", "=fine"]  # canonical data: no spreadsheet prefix
    assert call("data", "import", "csv", "--from", str(src), "--to", str(tmp_path / "c"),
                "--delimiter", "::") == EXIT_USAGE
