"""The texts to score, found on Ray (see :mod:`movierec.sentiment.ray_texts`): the parts of a
partitioned input read by Ray tasks, a single file and feedback comments by the driver."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from movierec.config import Config
from movierec.engine import session
from movierec.errors import DataError
from movierec.progress import Progress
from movierec.sentiment.cache import key_array
from movierec.sentiment.ray_texts import Chunk, RemoteTexts, piece_pairs, part_texts, text_pieces

log = logging.getLogger(__name__)


class TextGatherer:
    """The sentiment stage's source of texts on Ray: ``gather(keys)`` finds the texts behind
    the hashes (see the module) and gives them as :class:`RemoteTexts` (texts among those found
    before are taken from them by Ray tasks, without reading the inputs again: a model's
    share of the texts whose languages were detected); ``texts(keys)`` gives a window of the
    last gathered list (the next one, as a scorer asks for them)."""

    def __init__(self, cfg: Config, workdir: Path | None = None) -> None:
        self.cfg, self.workdir = cfg, workdir
        self.every = max(1, cfg.sentiment.checkpoint_every)
        self.last: RemoteTexts | None = None
        self._next = 0  # where the last window given ended
        # the texts last found in the inputs (later lists of texts among them are taken from
        # it: :meth:`RemoteTexts.select`), their hashes sorted and their places
        self._found: RemoteTexts | None = None
        self._wanted: tuple = ()

    def folders(self) -> dict:
        """The inputs of texts that are folders of parts (their parts are read by Ray tasks)."""
        from movierec.stages.ingest import input_files

        files = input_files(self.cfg)
        return {name: files[name] for name in ("reviews", "social") if files[name].is_dir()}

    def texts(self, keys: Sequence[str]) -> RemoteTexts:
        """The texts of ``keys``: a window of the last gathered list when they are one (on its
        chunks' borders), else gathered anew."""
        keys = key_array(keys)  # (an S array stays one: no object per key)
        last = self.last
        for start in (self._next, 0):
            if last is not None and len(keys) and np.array_equal(last.keys[start:start + len(keys)], keys):
                try:
                    out = last.window(start, start + len(keys))
                except ValueError:
                    break
                self._next = start + len(keys)
                return out
        out = self.gather(keys)
        self._next = len(keys)
        return out

    def gather(self, keys: Sequence[str]) -> RemoteTexts:
        """Find the texts behind ``keys`` (distinct hashes) in the inputs: the parts of a
        partitioned input by Ray tasks, the rest by the driver.

        Raises:
            DataError: some texts are no longer in the inputs (they changed since ingest)."""
        from movierec.data.parts import part_files
        from movierec.privacy import key_of_text
        from movierec.stages.ingest import input_texts, texts_gone

        keys = key_array(keys)
        if self.last is not None and np.array_equal(self.last.keys, keys):  # (languages, then scores)
            self._next = 0
            return self.last
        n, every, cap = len(keys), self.every, self.cfg.sentiment.max_chars
        t0 = time.perf_counter()
        engine = self.cfg.engine
        want = keys.astype("S")  # (hex digests: ASCII)
        if self._found is not None and len(self._found) and n:  # a model's texts among those found for the languages
            sorted_keys, order = self._wanted
            at = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
            if (sorted_keys[at] == want).all():
                with session(engine):
                    self.last = self._found.select(order[at], keys)
                log.info("sentiment: %d texts to score taken from the %d found before, by Ray tasks (no input read "
                         "again) in %.1fs", n, len(order), time.perf_counter() - t0)
                self._next = 0
                return self.last
        chunks = [Chunk(min(every, n - a)) for a in range(0, n, every)]
        covered = np.zeros(n, bool)
        folders = self.folders()
        cut = np.zeros(n, bool)  # (a text found in two parts: counted once)
        order = np.argsort(want, kind="stable")
        wanted = (want[order], order.astype(np.int64))
        with session(engine) as ray:
            def take(header, ref) -> None:
                c, places, long = header
                chunks[c].places.append(places)
                chunks[c].refs.append(ref)
                covered[c * every + places] = True
                cut[c * every + long] = True

            task = ray.remote(part_texts).options(num_cpus=engine.cpus_per_worker, num_returns="streaming")
            opts = {"encoding": self.cfg.data.encoding, "delimiter": self.cfg.data.delimiter,
                    "rating_range": (self.cfg.data.rating_min, self.cfg.data.rating_max)}
            shared = ray.put(wanted)
            runs = [task.remote(getattr(p, "url", None) or str(p), name, opts, shared, every, cap)
                    for name, folder in folders.items() for p in part_files(folder)]
            with Progress(len(runs), "texts on Ray", unit="part") as bar:
                for run in runs:
                    it = iter(run)
                    for h in it:
                        header = ray.get(h)
                        if isinstance(header, DataError):
                            raise header
                        take(header, next(it))
                    bar.update(1)
            # the rest (a single file, feedback comments): read here, as locally
            driver = 0
            for texts in input_texts(self.cfg, self.workdir, skip=tuple(folders), done=covered.all):
                texts = np.array([t for t in texts if isinstance(t, str) and t], dtype=object)
                hashes = np.array([key_of_text(t) for t in texts], dtype=object)
                for header, got in piece_pairs(text_pieces(texts, hashes, wanted, every, cap)):
                    take(header, ray.put(got))
                    driver += len(got)
        if cut.any():
            log.warning("sentiment: %d texts longer than sentiment.max_chars (%d characters) are scored on their "
                        "first %d", int(cut.sum()), cap, cap)
        if not covered.all():
            raise texts_gone(self.cfg, int((~covered).sum()))
        log.info("sentiment: %d texts to score found by %d Ray tasks in the inputs' parts (%d read by the driver "
                 "from single files and feedback) in %.1fs; they stay in Ray's object store", n, len(runs), driver,
                 time.perf_counter() - t0)
        self.last = self._found = RemoteTexts(keys, every, chunks)
        self._next, self._wanted = 0, wanted
        return self.last
