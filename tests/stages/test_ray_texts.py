"""The texts to score on Ray, in pieces (movierec.sentiment.ray_texts), and texts as
artifacts hold them (privacy.keyed_texts). No Ray here: the pieces' bookkeeping and
assembly; a command on Ray is tests/e2e/test_ray_engine.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from movierec.privacy import key_of_text, keyed_texts, without_texts
from movierec.sentiment.ray_texts import Chunk, RemoteTexts, piece_pairs, text_pieces, assemble
from movierec.sentiment.signal import rule_scores


def _wanted(keys):
    want = np.asarray(keys, dtype=object).astype("S")
    order = np.argsort(want, kind="stable")
    return want[order], order.astype(np.int64)


def test_pieces_from_parts_assemble_the_texts_asked_for_in_their_chunks():
    texts = [f"review number {i}: " + "good " * (i % 7) for i in range(23)]
    asked = [texts[i] for i in (5, 0, 17, 3, 22, 9, 11, 1, 20, 14)]  # the order a scorer asks in
    keys = [key_of_text(t) for t in asked]
    wanted = _wanted(keys)
    # three parts; text 9 in two of them, text 3 twice in one; texts never asked for around
    parts = [texts[:8] + [texts[3]], texts[8:16], texts[16:] + [texts[9]]]
    every = 4
    chunks = [Chunk(min(every, len(keys) - a)) for a in range(0, len(keys), every)]
    for part in parts:
        arr = np.array(part, dtype=object)
        for (c, places, cut), got in piece_pairs(text_pieces(arr, np.array([key_of_text(t) for t in part], dtype=object),
                                                     wanted, every, 10_000)):
            assert not len(cut) and len(places) == len(got) and places.max() < chunks[c].size
            chunks[c].places.append(places)
            chunks[c].refs.append(got)
    assert [c.size for c in chunks] == [4, 4, 2]
    assert [t for c in chunks for t in assemble(c.size, c.places, *c.refs)] == asked
    # a place no piece fills is an error, not a None scored as a text
    with pytest.raises(RuntimeError, match="places left empty"):
        assemble(3, [np.array([0, 2], np.int32)], ["a", "b"])


def test_pieces_cut_long_texts_and_count_them():
    texts = np.array(["x" * 50, "short one", "y" * 12], dtype=object)
    keys = np.array([key_of_text(t) for t in texts], dtype=object)
    (header, got), = piece_pairs(text_pieces(texts, keys, _wanted(keys), 8, 10))
    assert header[2].tolist() == [0, 2] and got == ["x" * 10, "short one", "y" * 10]
    # nothing asked for, or nothing found: no piece
    assert list(text_pieces(texts, keys, _wanted([key_of_text("other")]), 8, 10)) == []
    assert list(text_pieces(texts[:0], keys[:0], _wanted(keys), 8, 10)) == []


def test_windows_of_remote_texts_fall_on_chunks():
    keys = np.array([f"k{i}" for i in range(10)], dtype=object)
    chunks = [Chunk(4, [np.arange(4)], [list("abcd")]), Chunk(4, [np.arange(4)], [list("efgh")]),
              Chunk(2, [np.arange(2)], [list("ij")])]
    t = RemoteTexts(keys, 4, chunks)
    w = t.window(4, 10)
    assert len(w) == 6 and w.chunks == chunks[1:] and list(w.keys) == list(keys[4:])
    assert t.window(0, 8).chunks == chunks[:2]
    for bad in ((2, 6), (4, 7)):
        with pytest.raises(ValueError, match="do not fall on chunks"):
            t.window(*bad)


def test_keyed_texts_match_the_local_hashing_and_keep_rows_keyed_by_workers():
    df = pd.DataFrame({"user_id": ["a", "b", "c"], "text": ["Loved it", "10/10", None], "rating": [5.0, 4.0, 3.0]})
    local = without_texts(df.assign(text_rule=rule_scores(df["text"].fillna("").astype(str).tolist())))
    pd.testing.assert_frame_equal(keyed_texts(df), local)
    assert list(local.columns) == ["user_id", "rating", "text_rule", "text_key"]
    # rows a Ray worker keyed, then a feedback comment folded in with its text: each keeps its own
    worker = keyed_texts(df.iloc[:2])
    mixed = pd.concat([worker, pd.DataFrame({"user_id": ["d"], "text": ["Awful 😡"], "rating": [1.0]}),
                       pd.DataFrame({"user_id": ["e"], "rating": [2.0]})], ignore_index=True)
    out = keyed_texts(mixed)
    assert list(out["text_key"]) == [key_of_text("Loved it"), key_of_text("10/10"), key_of_text("Awful 😡"), ""]
    np.testing.assert_allclose(out["text_rule"].to_numpy(), [np.nan, 1.0, np.nan, 0.0])
    assert "text" not in out.columns
    # keyed twice: the same table
    pd.testing.assert_frame_equal(keyed_texts(out), out)


def test_the_inputs_are_read_for_texts_only_while_some_are_missing(tmp_path, monkeypatch):
    from movierec.config import load_config
    from movierec.errors import DataError
    from movierec.stages import ingest

    pd.DataFrame({"user_id": ["u1", "u2"], "movie_id": ["m1", "m2"], "text": ["A  fine film", "Dull"]}).to_csv(
        tmp_path / "reviews.csv", index=False)
    pd.DataFrame({"user_id": ["u1"], "friend_id": ["u2"], "text": ["see it"]}).to_csv(tmp_path / "social.csv",
                                                                                     index=False)
    cfg = load_config(None, [f"data.dir={tmp_path}"])
    reads = []
    real = ingest.read_input
    monkeypatch.setattr(ingest, "read_input", lambda path, *a, **k: reads.append(path.name) or real(path, *a, **k))
    # normalised as at ingest (blanks collapsed); the social file is not read once all are found
    assert ingest.load_texts(cfg, {key_of_text("A fine film")}) == {key_of_text("A fine film"): "A fine film"}
    assert reads == ["reviews.csv"]
    reads.clear()
    assert ingest.load_texts(cfg, set()) == {} and reads == []
    assert ingest.load_texts(cfg, {key_of_text("see it")}) == {key_of_text("see it"): "see it"}
    assert reads == ["reviews.csv", "social.csv"]
    with pytest.raises(DataError, match="1 texts to score are no longer in"):
        ingest.load_texts(cfg, {key_of_text("gone")})
