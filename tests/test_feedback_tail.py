"""FeedbackTail: what a running service knows of the feedback since its version was trained."""

from __future__ import annotations

import os
import time

from movierec.feedback import FeedbackTail, append_event, events_path, snapshot


def test_tail_reads_what_came_after_the_version_and_follows_appends_and_rotation(tmp_path):
    append_event(tmp_path, "u1", "m1", 5.0)  # trained on
    _, state = snapshot(tmp_path)  # what a version records
    append_event(tmp_path, "u1", "m2", 1.0)
    tail = FeedbackTail(tmp_path, state)
    assert [e["movie_id"] for e in tail.rows("u1")] == ["m2"] and tail.count == 1
    append_event(tmp_path, "u2", "m3", comment="great")
    with open(events_path(tmp_path), "ab") as fh:  # a writer killed mid-line: not an event yet
        fh.write(b'{"time": %.3f, "user_id": "u3"' % time.time())
    assert [e["movie_id"] for e in tail.rows("u2")] == ["m3"] and tail.rows("u3") == []
    with open(events_path(tmp_path), "ab") as fh:
        fh.write(b', "movie_id": "m4", "rating": 4}\n')
    assert [e["movie_id"] for e in tail.rows("u3")] == ["m4"] and tail.count == 3
    # the log rotated away (a new file): read again, events newer than the version's last kept
    p = events_path(tmp_path)
    lines = p.read_bytes().splitlines(keepends=True)
    os.replace(p, tmp_path / "old.jsonl")
    p.write_bytes(b"".join(lines[2:]))  # the trained-on event and m2 are gone
    append_event(tmp_path, "u1", "m5", 2.0)
    assert [e["movie_id"] for e in tail.rows("u1")] == ["m5"]
    assert sorted(e["movie_id"] for u in ("u1", "u2", "u3") for e in tail.rows(u)) == ["m3", "m4", "m5"]
