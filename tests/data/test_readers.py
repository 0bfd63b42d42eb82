import pandas as pd
import pytest

from movierec.data.readers import normalize_text, read_table
from movierec.data.schemas import RATINGS, REVIEWS, SOCIAL
from movierec.errors import DataError


def write(tmp_path, text, name="ratings.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return p


def test_valid_rows_are_typed(tmp_path):
    p = write(tmp_path, "user_id,movie_id,rating,timestamp\n 1 ,a,4.5,1000\n2,b,3,2020-01-02T00:00:00Z\n")
    res = read_table(p, RATINGS)
    assert list(res.valid["user_id"]) == ["1", "2"]  # whitespace around ids removed
    assert res.valid["rating"].tolist() == [4.5, 3.0]
    assert res.valid["timestamp"].tolist() == [1000.0, 1577923200.0]
    assert res.quarantine.empty


def test_bad_rows_quarantined_with_row_and_reason(tmp_path):
    p = write(tmp_path, "user_id,movie_id,rating\n1,a,4\n2,b,abc\n3,c,\n,d,2\n4,e,9\n")
    res = read_table(p, RATINGS, rating_range=(1, 5))
    assert len(res.valid) == 1
    reasons = dict(zip(res.quarantine["row"], res.quarantine["reason"]))
    assert "not a number" in reasons[2] and "'abc'" in reasons[2]
    assert reasons[3] == "missing rating"
    assert reasons[4] == "empty user_id"
    assert "above 5" in reasons[5]
    assert res.bad_fraction == pytest.approx(0.8)


def test_missing_column_names_it_and_hints_delimiter(tmp_path):
    p = write(tmp_path, "user_id;movie_id;rating\n1;a;4\n")
    with pytest.raises(DataError) as e:
        read_table(p, RATINGS)
    assert "missing required column" in str(e.value) and "semicolon" in str(e.value) and str(p) in str(e.value)
    p = write(tmp_path, "user_id,movie_id\n1,a\n")
    with pytest.raises(DataError, match="rating"):
        read_table(p, RATINGS)


def test_latin1_file_fails_naming_line_then_reads_with_encoding(tmp_path):
    p = write(tmp_path, "user_id,movie_id,text\n1,a,fine\n2,b,caf\u00e9 au lait\n", "reviews.csv", "latin-1")
    with pytest.raises(DataError) as e:
        read_table(p, REVIEWS)
    assert "line 3" in str(e.value) and "utf-8" in str(e.value) and "data.encoding" in str(e.value)
    res = read_table(p, REVIEWS, encoding="latin-1")
    assert res.valid["text"].iloc[1] == "caf\u00e9 au lait"


def test_empty_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_table(write(tmp_path, ""), RATINGS)
    with pytest.raises(DataError, match="binary"):
        read_table(write(tmp_path, b"user_id,movie_id,rating\n\x00\x01\x02"), RATINGS)
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "missing.csv", RATINGS)


def test_truncated_last_line_and_extra_fields(tmp_path):
    p = write(tmp_path, "user_id,movie_id,rating\n1,a,4\n2,b,5\n3,c,1,7,8\n4,d")
    res = read_table(p, RATINGS)
    assert len(res.valid) == 2
    reasons = " | ".join(res.quarantine["reason"])
    assert "wrong number of fields" in reasons and "too few fields" in reasons


def test_social_self_loops_and_negative_weights(tmp_path):
    p = write(tmp_path, "user_id,friend_id,weight\n1,1,1\n1,2,-3\n1,3,0.5\n1,4,0\n", "social.csv")
    res = read_table(p, SOCIAL)
    assert res.valid["friend_id"].tolist() == ["3"]
    assert set(res.quarantine["reason"]) == {"self-loop (user_id equals friend_id)",
                                             "weight must be positive (0 or less is no trust)"}


def test_empty_review_text_quarantined_and_text_normalised(tmp_path):
    p = write(tmp_path, 'user_id,movie_id,text\n1,a,"  Great\tfilm\n  really "\n2,b,"   "\n', "reviews.csv")
    res = read_table(p, REVIEWS)
    assert res.valid["text"].tolist() == ["Great film really"]
    assert res.quarantine["reason"].tolist() == ["empty review text"]


def test_normalize_text_unicode():
    assert normalize_text("Cafe\u0301\u0000  ok") == "Caf\u00e9 ok"


def test_long_text_kept(tmp_path):
    long = "good " * 20000
    p = write(tmp_path, f"user_id,movie_id,text\n1,a,{long}\n", "reviews.csv")
    res = read_table(p, REVIEWS)
    assert len(res.valid.loc[0, "text"]) == len(long.strip())
    assert isinstance(res.valid, pd.DataFrame)


def test_parts_keep_ids_as_categories_over_the_union_of_their_ids(tmp_path):
    from movierec.data.parts import combine, read_part

    (tmp_path / "t").mkdir()
    write(tmp_path / "t", "user_id,movie_id,rating\nu1,m1,4\nu2,m2,3\n", name="a.csv")
    pd.DataFrame({"user_id": ["u2", "u3"], "movie_id": ["m3", "m1"], "rating": [5.0, 2.0]}).to_parquet(
        tmp_path / "t" / "b.parquet", index=False)
    res = combine(tmp_path / "t", [read_part(tmp_path / "t" / n, RATINGS) for n in ("a.csv", "b.parquet")])
    for c in ("user_id", "movie_id"):
        assert isinstance(res.valid[c].dtype, pd.CategoricalDtype), c
    assert res.valid["user_id"].astype(str).tolist() == ["u1", "u2", "u2", "u3"]
    assert res.valid["movie_id"].astype(str).tolist() == ["m1", "m2", "m3", "m1"]
    assert res.valid["rating"].tolist() == [4.0, 3.0, 5.0, 2.0]
    # 100k ratings over 1k users in 4 parts: codes, not one string a row
    parts = []
    for k in range(4):
        n = 25_000
        df = pd.DataFrame({"user_id": [f"user-{i % 1000:05d}" for i in range(n)],
                           "movie_id": [f"m{(i * 7 + k) % 500}" for i in range(n)], "rating": 3.0})
        df.to_csv(tmp_path / "t" / f"p{k}.csv", index=False)
        parts.append(read_part(tmp_path / "t" / f"p{k}.csv", RATINGS))
    big = combine(tmp_path / "t", parts)
    assert big.valid.memory_usage(deep=True).sum() / len(big.valid) < 20


def test_a_url_location_answers_like_a_path():
    from movierec.locations import Remote, is_url, location

    r = location("s3://bucket/exports?region=eu-west-1&secret_access=abc") / "ratings" / "part-0.csv"
    assert isinstance(r, Remote) and r.name == "part-0.csv" and r.suffix == ".csv"
    assert r.url == "s3://bucket/exports/ratings/part-0.csv?region=eu-west-1&secret_access=abc"
    assert str(r) == "s3://bucket/exports/ratings/part-0.csv?region=eu-west-1&secret_access=***"
    assert not is_url("C:\\data") and not is_url("c:/data") and not is_url("data/demo")
    assert is_url("file:///tmp/x") and is_url("gs://b/x") and is_url("hdfs://nn:8020/x")


def test_a_local_folder_as_a_file_url_lists_the_same_parts(tmp_path):
    from movierec.data.parts import input_hash, part_files
    from movierec.locations import location

    (tmp_path / "r" / "date=1").mkdir(parents=True)
    for name in ("a.csv", "date=1/b.parquet", "_SUCCESS", ".hidden.csv", "notes.txt"):
        (tmp_path / "r" / name).write_text("x")
    local = [p.relative_to(tmp_path / "r").as_posix() for p in part_files(tmp_path / "r")]
    remote = location((tmp_path / "r").as_uri())
    assert local == ["a.csv", "date=1/b.parquet"]
    assert [p.relative_to(remote) for p in part_files(remote)] == local
    before = input_hash(remote)
    assert input_hash(remote) == before
    (tmp_path / "r" / "c.csv").write_text("y")
    assert input_hash(remote) != before
    assert input_hash(location((tmp_path / "nothing").as_uri() + "/x.csv")) == "absent"
