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
