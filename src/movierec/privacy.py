"""Pseudonymous user ids: HMAC-SHA256 of the id under a secret key.

With ``privacy.pseudonymize_ids: true`` every user id (ratings, users, reviews, social
ties, feedback) is replaced at ingest by ``p`` + the first 32 hex digits of
HMAC-SHA256(key, id), the key read from the environment variable named by
``privacy.key_env``. Nothing downstream (artifacts, models, logs, reports) sees a raw id;
``recommend --user`` and ``feedback --user`` hash what they are given with the same key.
The same id under the same key always gives the same pseudonym, so nightly refreshes and
feedback line up; without the key the mapping cannot be recomputed or reversed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Sequence

import numpy as np
from movierec._lazy import pd

from movierec.config import PrivacyConfig
from movierec.errors import ConfigError

USER_COLUMNS = ("user_id", "friend_id", "share_with")


def key_of(cfg: PrivacyConfig) -> bytes | None:
    """The HMAC key, or None when pseudonymization is off."""
    if not cfg.pseudonymize_ids:
        return None
    key = os.environ.get(cfg.key_env, "")
    if len(key) < 16:
        raise ConfigError(
            f"privacy.pseudonymize_ids is on but the environment variable {cfg.key_env} "
            f"{'is not set' if not key else 'holds fewer than 16 characters'}: set it to a secret key"
        )
    return key.encode()


def pseudonym(user_id: str, key: bytes) -> str:
    return "p" + hmac.new(key, str(user_id).strip().encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def pseudonymize_column(values: pd.Series, key: bytes) -> pd.Series:
    """Hash each distinct value once; empty and missing values stay as they are."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = values.cat.categories
        return values.cat.rename_categories([pseudonym(c, key) for c in cats.astype(str)])
    s = values.astype(object)
    present = s.notna() & (s.astype(str).str.strip() != "")
    uniq = pd.unique(s[present].astype(str))
    mapping = dict(zip(uniq, (pseudonym(u, key) for u in uniq)))
    out = s.copy()
    out[present] = s[present].astype(str).map(mapping)
    return out


def pseudonymize_tables(tables: dict[str, pd.DataFrame], key: bytes) -> None:
    """In place: every user-id column of every table."""
    for df in tables.values():
        if df is None:
            continue
        for col in USER_COLUMNS:
            if col in df.columns and len(df):
                df[col] = pseudonymize_column(df[col], key)


def key_fingerprint(cfg: PrivacyConfig) -> str | None:
    """A fingerprint of the key (HMAC of a fixed label): stored with a model version, it tells
    whether the key at ``recommend`` is the one the version's ids were made with, and it
    reveals nothing about the key."""
    key = key_of(cfg)
    if key is None:
        return None
    return hmac.new(key, b"movierec key fingerprint v1", hashlib.sha256).hexdigest()[:16]


def check_key(version_fingerprint: str | None, cfg: PrivacyConfig, version: str) -> None:
    """The ids given to ``recommend`` must be hashed as the version's were.

    Raises:
        ConfigError: pseudonymization is on for one and off for the other, or the keys differ.
    """
    now = key_fingerprint(cfg)
    if now == version_fingerprint:
        return
    if version_fingerprint is None:
        why = "was trained on raw user ids, but privacy.pseudonymize_ids is now on"
    elif now is None:
        why = "was trained on pseudonymous ids, but privacy.pseudonymize_ids is now off"
    else:
        why = f"was trained with another key than the one in {cfg.key_env}"
    raise ConfigError(f"model version {version} {why}: every user would get the unknown-user fallback. "
                      "Use the key and setting the version was trained with, or train a new version")


def maybe_pseudonym(user_id: str | None, cfg: PrivacyConfig) -> str | None:
    key = key_of(cfg)
    if key is None or user_id is None:
        return user_id
    return pseudonym(user_id, key)


# ----------------------------------------------------------------------------- text hashes
def key_of_text(text: str) -> str:
    """The hash that stands for a text in artifacts (blake2b, 128 bits); "" for no text."""
    import hashlib

    if not text:
        return ""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def keyed_texts(df: pd.DataFrame) -> pd.DataFrame:
    """A table of texts as artifacts hold it: ``text`` replaced by its hash (``text_key``) and
    the score of a text without words (``text_rule``, :mod:`movierec.sentiment.signal`, known
    only while the text is here). Rows already keyed (by Ray's workers at ingest; ``text``
    missing) keep their key and rule; a row without a text has the key "" and the rule 0."""
    if "text" not in df.columns and "text_key" not in df.columns:
        return df
    if "text" not in df.columns and "text_rule" in df.columns and df["text_key"].notna().all():
        return df  # every row keyed already (Ray's workers at ingest): as it is, no copy of 100M keys
    from movierec.sentiment.signal import rule_scores

    texts = df["text"] if "text" in df.columns else pd.Series(np.nan, index=df.index, dtype=object)
    rules = rule_scores(texts.fillna("").astype(str).tolist())
    out = without_texts(df.drop(columns=["text_key", "text_rule"], errors="ignore").assign(text_rule=rules))
    if "text_key" in df.columns:  # keyed before: where no text came with the row
        old = texts.isna().to_numpy() & df["text_key"].notna().to_numpy()
        keys = out["text_key"].to_numpy(object, copy=True) if "text" in df.columns else np.full(len(df), "", object)
        keys[old] = df["text_key"].to_numpy(object)[old]
        out["text_key"] = keys
        if "text_rule" in df.columns:
            r = out["text_rule"].to_numpy(np.float32, copy=True)
            r[old] = df["text_rule"].to_numpy(np.float32)[old]
            out["text_rule"] = r
    return out


def without_texts(df: pd.DataFrame, columns: Sequence[str] = ("text",)) -> pd.DataFrame:
    """``df`` with each text column replaced by the hash of its texts (``text`` -> ``text_key``)."""
    out = df
    for c in columns:
        if c in out.columns:
            keys = [key_of_text(t) if isinstance(t, str) else "" for t in out[c]]
            out = out.drop(columns=c)
            out[f"{c}_key"] = np.array(keys, dtype=object)
    return out
