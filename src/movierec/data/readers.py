"""Reading the canonical CSV files with validation: bad rows are quarantined, not fatal.

A file is fatal (``DataError``, exit 65) when it is missing, empty, not in the configured
encoding, holds binary data, or lacks a required column. A *row* that fails a check is
set aside with the reason; the caller decides whether too many rows failed.
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.data.schemas import FileSchema
from movierec.errors import DataError


@dataclass
class ReadResult:
    """Valid rows (typed) and quarantined rows (raw strings plus ``row`` and ``reason``)."""

    path: Path
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    total_rows: int
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def bad_fraction(self) -> float:
        return len(self.quarantine) / self.total_rows if self.total_rows else 0.0


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty (a header row with column names is needed)")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw[:nul].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} holds a NUL byte: this is binary data, not a CSV text file"
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            f"{path}: line {line} is not valid {encoding} (byte 0x{bad}); "
            f"if the file is in another encoding set data.encoding (e.g. latin-1)"
        ) from exc
    return text.lstrip("\ufeff")


def normalize_id(s: pd.Series) -> pd.Series:
    """Ids are opaque strings: Unicode NFC, surrounding whitespace removed."""
    s = s.astype(str).str.strip()
    if not s.map(str.isascii).all():
        s = s.map(lambda v: unicodedata.normalize("NFC", v))
    return s


def parse_timestamp(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Unix seconds or ISO 8601 -> int64 seconds; returns (values, bad mask). Empty is NaN."""
    s = s.str.strip()
    empty = s == ""
    num = pd.to_numeric(s, errors="coerce")
    out = num.astype("float64")
    need = out.isna() & ~empty
    if need.any():
        parsed = pd.to_datetime(s[need], errors="coerce", utc=True, format="ISO8601")
        secs = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        out.loc[need] = secs.astype("float64")
    bad = out.isna() & ~empty
    return out, bad


def read_table(
    path: Path,
    schema: FileSchema,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    rating_range: tuple[float | None, float | None] = (None, None),
) -> ReadResult:
    """Read and validate one CSV file against its schema.

    Raises:
        DataError: missing/empty/binary file, wrong encoding, missing required column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (the {schema.name} file is required)")
    text = _decode(path, encoding)
    bad_lines: list[list[str]] = []

    def _on_bad(fields: list[str]) -> None:
        bad_lines.append(fields)
        return None

    try:
        df = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            sep=delimiter,
            engine="python",
            on_bad_lines=_on_bad,
            skipinitialspace=False,
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty (no header row)") from exc
    except (pd.errors.ParserError, csv_error()) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from exc

    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    missing = [c for c in schema.required if c not in df.columns]
    if missing:
        hint = ""
        header = text.splitlines()[0] if text else ""
        for d, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
            if d != delimiter and d in header:
                hint = f"; the header looks {name}-separated: set data.delimiter"
                break
        raise DataError(
            f"{path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(df.columns) or 'none'}){hint}"
        )
    total = len(df) + len(bad_lines)
    reason = pd.Series("", index=df.index, dtype=object)
    short = df[list(schema.required)].isna().any(axis=1)
    reason.loc[short] = "too few fields (truncated line?)"
    df = df.fillna("")

    def flag(mask: pd.Series, msg) -> None:
        mask = mask & (reason == "")
        if mask.any():
            if callable(msg):
                reason.loc[mask] = msg(mask)
            else:
                reason.loc[mask] = msg

    out = df.copy()
    for c in schema.id_columns:
        out[c] = normalize_id(df[c])
        flag(out[c] == "", f"empty {c}")
    for c in schema.numeric:
        if c not in df.columns:
            continue
        raw = df[c].str.strip()
        num = pd.to_numeric(raw, errors="coerce")
        required = c in schema.required
        empty = raw == ""
        if required:
            flag(empty, f"missing {c}")
        flag(
            num.isna() & ~empty,
            lambda m, c=c, raw=raw: f"{c} " + raw[m].str.slice(0, 30).map(repr) + " is not a number",
        )
        flag(~empty & num.notna() & ~np.isfinite(num.fillna(0)), f"{c} is not finite")
        if c == "rating":
            lo, hi = rating_range
            if lo is not None:
                flag(num < lo, lambda m, num=num, lo=lo: "rating " + num[m].astype(str) + f" below {lo}")
            if hi is not None:
                flag(num > hi, lambda m, num=num, hi=hi: "rating " + num[m].astype(str) + f" above {hi}")
        if c == "weight":
            flag(num < 0, "negative weight")
        out[c] = num.astype("float64")
    if "timestamp" in df.columns:
        ts, bad = parse_timestamp(df["timestamp"])
        flag(bad, "timestamp is neither unix seconds nor ISO 8601")
        out["timestamp"] = ts
    for c in schema.text:
        if c in df.columns:
            out[c] = df[c].map(normalize_text)
    if schema.name == "reviews":
        flag(out["text"] == "", "empty review text")
    if schema.name == "movies":
        flag(out["title"] == "", "empty title")
    if schema.name == "social":
        flag(out["user_id"] == out["friend_id"], "self-loop (user_id equals friend_id)")

    bad_mask = reason != ""
    q = df[bad_mask].copy()
    q.insert(0, "reason", reason[bad_mask])
    q.insert(0, "row", np.flatnonzero(bad_mask.to_numpy()) + 1)
    if bad_lines:
        extra = pd.DataFrame(
            {
                "row": [-1] * len(bad_lines),
                "reason": [
                    f"wrong number of fields ({len(f)}, expected {len(df.columns)})"
                    for f in bad_lines
                ],
                **{df.columns[0]: [delimiter.join(f)[:200] for f in bad_lines]},
            }
        )
        q = pd.concat([q, extra], ignore_index=True)
    valid = out[~bad_mask].reset_index(drop=True)
    return ReadResult(path=path, valid=valid, quarantine=q.reset_index(drop=True), total_rows=total)


def csv_error():
    import csv

    return csv.Error


_WS = str.maketrans({c: " " for c in "\t\r\n\x0b\x0c\x85\u2028\u2029"})


def normalize_text(v: str) -> str:
    """NFC, control characters removed, whitespace collapsed."""
    if not v:
        return ""
    v = unicodedata.normalize("NFC", v).translate(_WS)
    if not v.isprintable():
        v = "".join(ch for ch in v if ch.isprintable() or ch == " ")
    return " ".join(v.split())
