"""Language of each text, offline: py3langid (a maintained fork of langid.py; its naive
Bayes model over byte n-grams ships inside the package, ~30k texts/s on one core), over the
~100 languages it knows that have an ISO 639-1 code (see ``CONFUSERS``).

A text whose best language scores below ``min_confidence`` (normalised probability; short
texts such as "Meh." or "10/10" carry little evidence) is ``und`` (undetermined), as is
one without letters. Routing (:mod:`movierec.sentiment.routing`) sends ``und`` texts to
``sentiment.model``: short texts are most likely in the platform's own language.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

UND = "und"

#: characters of a text that detection reads: the first paragraphs decide, and a 5000-character
#: review costs no more (what is sent to another process or a Ray task is cut to this too)
DETECT_CHARS = 2000

#: The languages of XLM-R's training data (CC-100), which multilingual-e5-small inherits, in
#: py3langid's labels (its Cantonese and Wu Chinese count as Chinese script, its nn as Norwegian).
XLMR_LANGUAGES = frozenset("""
af am ar as az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu ha he hi hr hu hy id
is it ja jv ka kk km kn ko ku ky la lo lt lv mg mk ml mn mr ms my ne nl no nn om or pa pl ps pt ro ru sa sd si
sk sl so sq sr su sv sw ta te th tl tr ug uk ur uz vi xh yi zh yue wuu
""".split())

#: py3langid labels left out of detection: its labels without an ISO 639-1 code (regional
#: and historical varieties such as Extremaduran, Wu or Biblical Hebrew, which split the
#: probability of the major language next to them: a Spanish review read as 40% Spanish, 30%
#: Extremaduran) and three small languages that mostly catch their neighbours' texts.
CONFUSERS = frozenset({"an", "wa", "vo"})

_IDENTIFIER = None


def detector_id() -> str:
    """Identity of the detector (part of the cache key of a text's language)."""
    from importlib.metadata import version

    return f"py3langid-{version('py3langid')}:iso639-1"


def _identifier():
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        ident.set_languages([c for c in ident.labels if len(c) == 2 and c not in CONFUSERS])
        _IDENTIFIER = ident
    return _IDENTIFIER


def detect(texts: Sequence[str], min_confidence: float = 0.2, covered: frozenset[str] | None = None,
           sure: float = 0.5, excluded: frozenset[str] = frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """(language code per text, its probability); ``und`` below ``min_confidence``, for
    texts without a letter, and for py3langid's ``zxx`` (no linguistic content).

    ``covered``: the languages some scorer reads. A text whose best language is not among
    them, with a probability below ``sure``, takes the most likely covered language instead
    when that one is plausible itself (probability at least ``min_confidence``): a Spanish
    review read as 42% Galician, 41% Spanish is not left unscored for that. A language in
    ``excluded`` (set to ``none``) is never swapped away: its texts stay unscored."""
    ident = _identifier()
    langs = np.empty(len(texts), dtype=object)
    conf = np.zeros(len(texts), np.float32)
    for k, t in enumerate(texts):
        t = t[:DETECT_CHARS]
        if not any(c.isalpha() for c in t):
            langs[k] = UND
            continue
        lang, p = ident.classify(t)
        if covered is not None and lang not in covered and lang not in excluded and p < sure:
            alt = next(((lg, q) for lg, q in ident.rank(t) if lg in covered), None)
            if alt is not None and alt[1] >= min_confidence:
                lang, p = alt
        conf[k] = p
        langs[k] = lang if p >= min_confidence and lang != "zxx" else UND
    return langs, conf


def detect_codes(texts: Sequence[str], min_confidence: float, covered: frozenset[str] | None,
                 excluded: frozenset[str]) -> np.ndarray:
    """:func:`detect`'s language codes alone (what a worker process or Ray task sends back)."""
    return detect(texts, min_confidence, covered, excluded=excluded)[0]


def detect_stdio() -> None:
    """The process :func:`movierec.sentiment.routing.detect_beside` starts: pickled (texts,
    min_confidence, covered, excluded) on stdin, the list of codes pickled on stdout."""
    import pickle
    import sys

    texts, min_confidence, covered, excluded = pickle.load(sys.stdin.buffer)
    pickle.dump(detect_codes(texts, min_confidence, covered, excluded).tolist(), sys.stdout.buffer)


def shares(langs: Sequence[str]) -> dict[str, int]:
    """Texts per language, most frequent first."""
    if not len(langs):
        return {}
    vals, counts = np.unique(np.asarray(langs, dtype=str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(vals[i]): int(counts[i]) for i in order}
