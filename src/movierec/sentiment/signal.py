"""Texts a language model should not be asked about: the score of a text without words.

The embedded encoder reads an empty text, a row of emoji (all one unknown token to its
vocabulary) or "10/10" as if they were sentences, and gives them confident polarities
(-0.24, +0.64 whatever the emoji, -0.69). What such a text says is read here instead:

- no letters or digits and no emoji below: no signal, a neutral 0;
- no letters or digits, some of the emoji below: the mean of their polarities;
- only a score such as "10/10", "4.5 / 5", "3/10!!" (out of 5, 10 or 100): its place on the
  scale, from -1 (0 of 10) to +1 (10 of 10).

Everything else is the model's. :func:`rule_scores` is NaN for those.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np

#: common emoji and their polarity (-1 .. 1): faces, hearts, hands, a few objects
EMOJI: dict[str, float] = {
    **dict.fromkeys("😍🥰😘😻💖💕💗💓💞❤♥💯🤩", 0.9),
    **dict.fromkeys("😀😃😄😁😆😊🙂☺😌😎👍👏🙌🎉✨⭐🌟🔥🏆😂🤣😹", 0.6),
    **dict.fromkeys("😐😑😶🤔🙄😬🤷", 0.0),
    **dict.fromkeys("😕🙁☹😟😔😞😒🥱😴💤", -0.5),
    **dict.fromkeys("😢😭😩😫😖😣👎💔😠😡🤬😤🤮🤢💩🗑❌🚫", -0.8),
}

_SCORE = re.compile(r"^\s*(\d+(?:[.,]\d+)?)\s*/\s*(5|10|100)\s*[!.]*\s*$")


def rule_score(text: str) -> float:
    """The score of a text without words (see the module), or NaN: the model's to read."""
    m = _SCORE.match(text)
    if m:
        value, scale = float(m.group(1).replace(",", ".")), float(m.group(2))
        return float(2.0 * value / scale - 1.0) if value <= scale else float("nan")
    if any(unicodedata.category(ch)[0] in "LN" for ch in text):
        return float("nan")
    found = [EMOJI[ch] for ch in text if ch in EMOJI]
    return float(np.mean(found)) if found else 0.0


def rule_scores(texts: Sequence[str]) -> np.ndarray:
    """:func:`rule_score` of each text (float32; NaN where the model reads it)."""
    return np.array([rule_score(t if isinstance(t, str) else "") for t in texts], dtype=np.float32)
