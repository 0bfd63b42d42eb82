"""The texts to score, on Ray, without the driver holding them (``engine.kind: ray``).

Artifacts hold a hash for each text; the sentiment stage reads the texts that miss the score
cache from the input files again. Locally that is the driver's job
(:func:`movierec.stages.ingest.load_texts`). On Ray, the parts of a partitioned input
(``data.reviews``/``data.social`` a folder, on storage every node sees or at a URL) are read
by Ray tasks, one per part: each reads its part as ingest did, hashes its texts, keeps those
asked for and hands them to Ray's object store a chunk at a time (``sentiment.checkpoint_every``
texts: the chunks a local run scores together). The driver gets a small header per piece
(which chunk, which places in it) and keeps object references; the language detection tasks
and the scoring actors fetch their chunk's pieces themselves. A single input file, and
feedback comments, are read by the driver as before and put in the object store the same
way (a single file is the driver's to read: it may sit where no worker sees it).

:class:`RemoteTexts` is such a list of texts, and the parts' tasks are here;
:class:`movierec.sentiment.ray_gather.TextGatherer` makes them. Ray is imported only inside
the functions here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from movierec.errors import DataError


@dataclass
class Chunk:
    """One chunk's texts: ``size`` texts, in pieces (their places in the chunk, and a
    reference to their texts in the object store, or the texts themselves)."""
    size: int
    places: list[np.ndarray] = field(default_factory=list)
    refs: list = field(default_factory=list)

    def args(self) -> tuple:
        """What :func:`assemble` takes (references are fetched by Ray before the call)."""
        return (self.size, self.places, *self.refs)


def assemble(size: int, places: Sequence[np.ndarray], *texts: Sequence[str]) -> list[str]:
    """A chunk's texts in order, from its pieces (a place two pieces fill gets the same text
    from each: a text found in two parts)."""
    out: list = [None] * size
    for where, got in zip(places, texts):
        if len(where) != len(got):
            raise RuntimeError(f"a piece of texts came with {len(got)} texts for {len(where)} places")
        for i, t in zip(where.tolist(), got):
            out[i] = t
    if any(t is None for t in out):
        raise RuntimeError("a chunk of texts was assembled with places left empty")
    return out


class RemoteTexts:
    """A list of texts held in Ray's object store, in chunks of ``every`` texts (the last may
    be shorter); ``keys`` are their hashes. Only the Ray session that made it can read it."""

    def __init__(self, keys: np.ndarray, every: int, chunks: list[Chunk]) -> None:
        self.keys, self.every, self.chunks = keys, every, chunks

    def __len__(self) -> int:
        return len(self.keys)

    def window(self, start: int, stop: int) -> RemoteTexts:
        """Texts ``start:stop``; ``start`` on a chunk's border, ``stop`` too or the end."""
        if start % self.every or (stop % self.every and stop != len(self)):
            raise ValueError(f"texts {start}:{stop} do not fall on chunks of {self.every}")
        return RemoteTexts(self.keys[start:stop], self.every, self.chunks[start // self.every:-(-stop // self.every)])

    def get(self) -> list[str]:
        """The texts in this process (for a chunk's worth or so: the driver holds them)."""
        import ray

        return [t for c in self.chunks for t in assemble(c.size, c.places, *ray.get(c.refs))]

    def select(self, places: np.ndarray, keys: np.ndarray) -> RemoteTexts:
        """The texts at ``places`` (their hashes ``keys``), in chunks of ``every`` made by Ray
        tasks from this list's pieces: no input is read again, no text passes through here."""
        import ray

        task = ray.remote(pick_texts).options(num_cpus=1)
        chunks = []
        for a in range(0, len(places), self.every):
            want = np.asarray(places[a:a + self.every])
            src = want // self.every
            olds, picks, refs = [], [], []
            for c in np.unique(src):
                sel = src == c
                old = self.chunks[c]
                olds.append((old.size, old.places, len(old.refs)))
                picks.append(((want[sel] - c * self.every).astype(np.int32), np.flatnonzero(sel).astype(np.int32)))
                refs.extend(old.refs)
            chunks.append(Chunk(len(want), [np.arange(len(want), dtype=np.int32)],
                                [task.remote(len(want), olds, picks, *refs)]))
        return RemoteTexts(keys, self.every, chunks)


def pick_texts(size: int, olds: list, picks: list, *texts: list[str]) -> list[str]:
    """Ray task: a chunk of ``size`` texts taken from chunks of another list: ``olds`` (each
    one's size, its pieces' places, how many pieces of ``texts`` are its), ``picks`` (for each,
    which of its texts, and where they go)."""
    taken, k = [], 0
    for (n, places, pieces), (offsets, _) in zip(olds, picks):
        old = assemble(n, places, *texts[k:k + pieces])
        k += pieces
        taken.append([old[o] for o in offsets.tolist()])
    return assemble(size, [to for _, to in picks], *taken)  # (every place filled, or an error)


def part_texts(where: str, schema_name: str, opts: dict, wanted: tuple, every: int, max_chars: int):
    """Ray task (a generator): the texts of one part whose hashes are in ``wanted`` (sorted
    hashes, their places in the list asked for), yielded a chunk at a time: a header
    ``(chunk, places, cut)`` (``cut``: the places of the texts longer than ``max_chars``, cut
    to it), then the texts. A part that cannot be read yields its DataError as the header."""
    from movierec.data.parts import read_part
    from movierec.data.schemas import SCHEMAS
    from movierec.locations import location
    from movierec.privacy import key_of_text

    try:
        res = read_part(location(where), SCHEMAS[schema_name], **opts)
    except DataError as exc:
        yield exc
        return
    if "text" not in res.valid.columns:
        return
    texts = np.array([t for t in res.valid["text"] if isinstance(t, str) and t], dtype=object)
    yield from text_pieces(texts, np.array([key_of_text(t) for t in texts], dtype=object), wanted, every, max_chars)


def text_pieces(texts: np.ndarray, keys: np.ndarray, wanted: tuple, every: int, max_chars: int):
    """(header, texts) of each chunk that some of ``texts`` belong to (see :func:`part_texts`)."""
    sorted_keys, order = wanted
    if not len(texts) or not len(sorted_keys):
        return
    keys = keys.astype(sorted_keys.dtype)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    hit = sorted_keys[at] == keys
    places, first = np.unique(order[at[hit]], return_index=True)  # a text twice in a part: once
    texts = texts[hit][first]
    chunk = places // every
    for c in np.unique(chunk):
        sel = chunk == c
        got = texts[sel].tolist()
        mine = (places[sel] - c * every).astype(np.int32)
        cut = mine[np.array([len(t) > max_chars for t in got], dtype=bool)]
        yield int(c), mine, cut
        yield [t[:max_chars] for t in got] if len(cut) else got


def piece_pairs(it):
    """(header, texts) pairs from :func:`text_pieces`' flat stream."""
    it = iter(it)
    for header in it:
        yield header, next(it)
