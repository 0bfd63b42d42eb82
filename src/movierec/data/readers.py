"""Reading the canonical CSV files with validation: bad rows are quarantined, not fatal.

A file is fatal (``DataError``, exit 65) when it is missing, empty, not in the configured
encoding, holds binary data, or lacks a required column. A *row* that fails a check is
set aside with the reason; the caller decides whether too many rows failed.

Why one module of this size: every input file goes through the same validating reader
(encoding, header, fields, numbers, quarantine); the schemas are in ``schemas``, the rating
scale in ``scale``.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.data.scale import RatingScale
from movierec.data.schemas import FileSchema
from movierec.errors import DataError


@dataclass
class ReadResult:
    """Valid rows (typed) and quarantined rows (raw strings plus ``row`` and ``reason``)."""

    path: Path
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    total_rows: int
    scale: RatingScale | None = None  # the ratings file's rating scale (configured or learned)

    @property
    def bad_fraction(self) -> float:
        return len(self.quarantine) / self.total_rows if self.total_rows else 0.0


NL = b"\n"


def check_text_file(path: Path, encoding: str, chunk: int = 1 << 24) -> bool:
    """Stream through the file: it must be non-empty text in ``encoding`` with no NUL byte.

    Raises a DataError naming the line of the first problem. Memory stays at one chunk. A
    chunk of plain ASCII in an encoding that reads ASCII as itself (UTF-8, Latin-1, the
    Windows code pages) needs no decoding; lines are counted only to name a problem.

    Returns whether the file holds a quote character at all: without one no value can hold
    a line break, and the CSV parser splits the file freely among its threads.
    """
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)()
    name = codecs.lookup(encoding).name
    ascii_as_is = name in ("utf-8", "utf-8-sig", "ascii") or name.startswith(("iso8859-", "latin", "cp125"))
    offset, seen_text, quoted = 0, False, False
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            quoted = quoted or b'"' in block
            nul = block.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{path}: line {_line_at(path, offset + nul)} holds a NUL byte: "
                                "this is binary data, not a CSV text file")
            if not (ascii_as_is and block.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    bad = block[exc.start : exc.start + 1].hex()
                    raise DataError(
                        f"{path}: line {_line_at(path, offset + exc.start)} is not valid {encoding} "
                        f"(byte 0x{bad}); if the file is in another encoding set data.encoding (e.g. latin-1)"
                    ) from exc
            seen_text = seen_text or bool(block.strip())
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: line {_line_at(path, offset)}: the file ends inside a {encoding} character") \
                from exc
    if not seen_text:
        raise DataError(f"{path}: the file is empty (a header row with column names is needed)")
    return quoted


def _line_at(path: Path, pos: int, chunk: int = 1 << 24) -> int:
    """The line (from 1) holding byte ``pos`` of the file."""
    line = 1
    with open(path, "rb") as fh:
        while pos > 0 and (block := fh.read(min(chunk, pos))):
            line += block.count(NL)
            pos -= len(block)
    return line


def _read_arrow(path: Path, encoding: str, delimiter: str, id_columns: tuple[str, ...] = (),
                numeric_columns: tuple[str, ...] = (), quoted: bool = True,
                ) -> tuple[pd.DataFrame, list[tuple[int, str, int]], str]:
    """Parse with pyarrow (multi-threaded): ids dictionary-encoded, other columns strings.

    First ``numeric_columns`` are parsed straight to float64 (20M ratings never exist as
    strings); if any value does not parse, the file is read again with them as strings so
    that each bad value gets its row and reason. Rows with the wrong number of fields are
    skipped and returned as (line, text, fields); the header line comes back too. ``quoted``:
    the file may hold quoted values (and so line breaks inside values).
    """
    try:
        return _read_arrow_typed(path, encoding, delimiter, id_columns, numeric_columns, quoted)
    except Exception as exc:  # noqa: BLE001 - ArrowInvalid: a value that is not a number
        if not numeric_columns or "conversion error" not in str(exc).lower():
            raise
        return _read_arrow_typed(path, encoding, delimiter, id_columns, (), quoted)


def _read_arrow_typed(path, encoding, delimiter, id_columns, numeric_columns, quoted=True):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    bad: list[tuple[int, str, int]] = []

    def on_invalid(row) -> str:
        bad.append((int(row.number) if row.number is not None else -1, str(row.text)[:10_000], int(row.actual_columns)))
        return "skip"

    enc = "utf8" if encoding.lower().replace("-", "").replace("_", "") == "utf8" else encoding
    with open(path, "rb") as fh:
        head = fh.readline()
    names = next(csv.reader([head.decode(encoding, errors="replace").rstrip("\r\n")], delimiter=delimiter), [])
    names = [n.strip().lstrip("\ufeff") for n in names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{path}: line 1: the header names column {twice[0]!r} {names.count(twice[0])} times; "
                        "every column needs its own name")
    header = pd.read_csv(io.BytesIO(head), sep=delimiter, encoding=encoding, dtype=str, nrows=0, engine="python")
    columns = [str(c) for c in header.columns]
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=enc, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=quoted,
                                         invalid_row_handler=on_invalid),
        # ids are dictionary-encoded (categorical): 20M ratings hold 2 x 20M int32 codes, not strings
        convert_options=pacsv.ConvertOptions(column_types={
            c: (pa.dictionary(pa.int32(), pa.string()) if c.strip().lstrip("\ufeff") in id_columns
                else pa.float64() if c.strip().lstrip("\ufeff") in numeric_columns else pa.string())
            for c in columns},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    df = table.to_pandas(types_mapper=lambda t: pd.StringDtype("pyarrow") if t == pa.string() else None)
    if any(line < 0 for line, _, _ in bad):  # quoted newlines allowed: pyarrow knows no line numbers
        lines = _line_numbers(path, encoding, [text for _, text, _ in bad])
        bad = [(line if line >= 0 else (found or -1), text, n) for (line, text, n), found in zip(bad, lines)]
    return df, [(line, text[:200], n) for line, text, n in bad], head.decode(encoding, errors="replace").rstrip("\r\n")


def _line_numbers(path: Path, encoding: str, texts: list[str], chunk: int = 1 << 24) -> list[int | None]:
    """The line on which each of ``texts`` (rows, in file order) starts; None where not found.

    One streaming pass over the file, only when a file has ragged rows (pyarrow reports no
    line numbers once values may hold newlines)."""
    targets = [t.encode(encoding, errors="replace") for t in texts]
    out: list[int | None] = [None] * len(targets)
    k, base, buf = 0, 1, b""
    with open(path, "rb") as fh:
        while k < len(targets):
            block = fh.read(chunk)
            buf += block
            while k < len(targets):
                pos = buf.find(targets[k])
                while pos > 0 and buf[pos - 1:pos] != b"\n":  # a row starts a line
                    pos = buf.find(targets[k], pos + 1)
                if pos < 0:
                    break
                out[k] = base + buf.count(b"\n", 0, pos)
                end = pos + len(targets[k])
                base += buf.count(b"\n", 0, end)
                buf = buf[end:]
                k += 1
            if not block:
                break
            keep = max((len(t) for t in targets[k:]), default=0)
            if len(buf) > keep:
                base += buf.count(b"\n", 0, len(buf) - keep)
                buf = buf[len(buf) - keep:]
    return out


def normalize_id(s: pd.Series) -> pd.Series:
    """Ids are opaque strings: Unicode NFC, surrounding whitespace removed.

    A categorical series is normalised through its categories (cheap for 20M rows).
    """
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = normalize_id(pd.Series(s.cat.categories.astype(str), dtype=object))
        codes, uniq = pd.factorize(cats)
        new_codes = np.where(s.cat.codes.to_numpy() >= 0, codes[np.maximum(s.cat.codes.to_numpy(), 0)], -1)
        return pd.Series(pd.Categorical.from_codes(new_codes, categories=pd.Index(uniq, dtype=object)), index=s.index)
    s = s.astype(str).str.strip()
    if not bool(s.str.isascii().all()):
        s = s.map(lambda v: unicodedata.normalize("NFC", v))
    return s


def parse_timestamp(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Unix seconds or ISO 8601 -> int64 seconds; returns (values, bad mask). Empty is NaN."""
    if pd.api.types.is_float_dtype(s.dtype):  # already parsed as numbers by pyarrow
        return s.astype("float64"), pd.Series(False, index=s.index)
    s = s.str.strip()
    empty = s == ""
    num = pd.to_numeric(s, errors="coerce").astype("float64")
    out = num.astype("float64")
    need = out.isna() & ~empty
    if need.any():
        parsed = pd.to_datetime(s[need], errors="coerce", utc=True, format="ISO8601")
        secs = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        out.loc[need] = secs.astype("float64")
    bad = out.isna() & ~empty
    return out, bad


def _other_delimiter(header: str, delimiter: str) -> tuple[str | None, str | None]:
    """(delimiter, its name) that a header holds instead of ``delimiter``, else (None, None)."""
    for d, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if d != delimiter and d in header:
            return d, name
    return None, None


class _Flags:
    """Bad rows of one table: a flag per row, the reason per bad row (the first one found)."""

    def __init__(self, index: pd.Index) -> None:
        self.index = index
        self.is_bad = np.zeros(len(index), dtype=bool)
        self.messages: dict[int, str] = {}

    def __call__(self, mask, msg) -> None:
        """Flag ``mask``'s rows not flagged yet; ``msg``: a reason, or a function of the mask
        giving one reason per flagged row."""
        mask = np.asarray(mask, dtype=bool) & ~self.is_bad
        if not mask.any():
            return
        rows = np.flatnonzero(mask)
        texts = msg(pd.Series(mask, index=self.index)) if callable(msg) else None
        for k, r in enumerate(rows):
            self.messages[int(r)] = msg if texts is None else str(texts.iloc[k])
        self.is_bad[rows] = True


def _open_csv(path: Path, schema: FileSchema, encoding: str, delimiter: str, redact: bool):
    """(rows, malformed lines, header line) of a CSV file with the schema's required columns."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file (the {schema.name} file)")
    if not path.is_file():
        raise DataError(f"{path}: file not found (the {schema.name} file is required)")
    quoted = check_text_file(path, encoding)
    try:
        df, bad_rows, header = _read_arrow(path, encoding, delimiter, schema.id_columns,
                                           tuple(schema.numeric) + ("timestamp",), quoted)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty (no header row)") from exc
    except (pd.errors.ParserError, csv.Error, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {str(exc).splitlines()[0][:300]}") from exc
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    missing = [c for c in schema.required if c not in df.columns]
    if missing:
        d, name = _other_delimiter(header, delimiter)
        raise missing_columns(path, missing, df.columns, redact,
                              f"; the header looks {name}-separated: set data.delimiter" if d else "")
    return df, bad_rows, header


def missing_columns(path: Path, missing: list[str], columns, redact: bool, hint: str = "") -> DataError:
    """The error for a file without some required columns (names withheld under ``redact``)."""
    found = (f"found {len(columns)} columns; names not shown as privacy.pseudonymize_ids is on"
             if redact else f"found: {', '.join(columns) or 'none'}")
    return DataError(f"{path}: missing required column(s) {', '.join(missing)} ({found}){hint}")


def _numeric(df: pd.DataFrame, c: str, schema: FileSchema, rating_range: tuple[float | None, float | None],
             flag: _Flags):
    """Column ``c`` as numbers, its bad values flagged; (numbers, the learned rating scale or None)."""
    scale = None
    if pd.api.types.is_float_dtype(df[c].dtype):  # parsed by pyarrow: empty fields are NaN
        num = df[c].astype("float64")
        nan = num.isna().to_numpy(bool)
        empty = nan
        raw = None
    else:
        raw = df[c].str.strip()
        num = pd.to_numeric(raw, errors="coerce").astype("float64")
        empty = (raw == "").to_numpy(bool)
        nan = num.isna().to_numpy(bool)
    if c in schema.required:
        flag(empty, f"missing {c}")
    flag(nan & ~empty, lambda m: f"{c} " + raw[m].str.slice(0, 30).map(repr) + " is not a number")
    flag(~empty & ~nan & ~np.isfinite(num.fillna(0).to_numpy()), f"{c} is not finite")
    if c == "rating":
        lo, hi = rating_range
        if schema.name == "ratings":
            from movierec.data.scale import learn_scale

            usable = num.to_numpy(np.float64)[~flag.is_bad]
            scale = learn_scale(usable, lo, hi) if np.isfinite(usable).any() or lo is not None else None
            if scale is not None and scale.inferred:  # one absurd value must not become the scale
                values = num.to_numpy(np.float64)
                d = scale.describe_grid()
                out_of = ~scale.contains(values) & ~nan & ~empty
                flag(out_of, lambda m: "rating " + num[m].map(_exact)
                     + f" is outside the scale of the other ratings ({d}); set data.rating_min/max if it is valid")
                # a 5.5 among whole stars, a 5.0000001: not a mark of this scale
                off = ~scale.on_grid(values) & ~nan & ~empty
                flag(off, lambda m: "rating " + num[m].map(_exact)
                     + f" is off the grid of the other ratings ({d}); set data.rating_min/max if it is valid")
        if lo is not None:
            flag((num < lo).to_numpy(bool), lambda m: "rating " + num[m].astype(str) + f" below {lo}")
        if hi is not None:
            flag((num > hi).to_numpy(bool), lambda m: "rating " + num[m].astype(str) + f" above {hi}")
    if c == "weight":
        flag((num <= 0).to_numpy(bool), "weight must be positive (0 or less is no trust)")
    return num.astype("float32" if c == "rating" else "float64"), scale


def _exact(v: float) -> str:
    """A number as written, to the last digit that tells it apart (5.0000001 is not "5")."""
    return f"{v:.15g}"


def _quarantine(df: pd.DataFrame, flag: _Flags, bad_rows: list, redact: bool) -> pd.DataFrame:
    """The bad rows with their 1-based row number and reason, and the malformed lines."""
    bad_mask = pd.Series(flag.is_bad, index=df.index)
    reason = pd.Series([flag.messages[int(r)] for r in np.flatnonzero(flag.is_bad)], index=df.index[flag.is_bad],
                       dtype=object)
    q = df[bad_mask].copy()
    q.insert(0, "reason", reason[bad_mask])
    q.insert(0, "row", np.flatnonzero(bad_mask.to_numpy()) + 1)
    if bad_rows:
        extra = pd.DataFrame(
            {
                "row": [-1] * len(bad_rows),
                "reason": [
                    f"{'line ' + str(line) if line > 0 else 'line unknown'}: "
                    + (f"too few fields ({n} of {len(df.columns)}; truncated line?)" if n < len(df.columns)
                       else f"wrong number of fields ({n}, expected {len(df.columns)})")
                    for line, _, n in bad_rows
                ],
                "line": ["" if redact else t for _, t, _ in bad_rows],
            }
        )
        q = pd.concat([q, extra], ignore_index=True)
    return q.reset_index(drop=True)


def read_table(
    path: Path,
    schema: FileSchema,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    rating_range: tuple[float | None, float | None] = (None, None),
    redact: bool = False,
) -> ReadResult:
    """Read and validate one CSV file against its schema.

    ``redact`` (privacy.pseudonymize_ids): no message echoes what the file holds (a file
    without a header would show its first row, raw ids included, as the columns found), and
    a row with the wrong number of fields is quarantined without its text.

    Raises:
        DataError: missing/empty/binary file, wrong encoding, missing required column.
    """
    path = Path(path)
    df, bad_rows, _ = _open_csv(path, schema, encoding, delimiter, redact)
    return validate_rows(path, df, bad_rows, schema, rating_range=rating_range, redact=redact)


def validate_rows(path: Path, df: pd.DataFrame, bad_rows: list, schema: FileSchema, *,
                  rating_range: tuple[float | None, float | None] = (None, None), redact: bool = False) -> ReadResult:
    """Type and check the rows of one file (ids and texts as strings, numbers parsed or as
    numbers already): the valid rows, and the bad ones with their row number and reason."""
    total = len(df) + len(bad_rows)
    flag = _Flags(df.index)
    scale = None
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        if c not in schema.id_columns and c not in schema.numeric and c != "timestamp" and c not in schema.text:
            out[c] = df[c]  # extra columns are kept as they are
    for c in schema.id_columns:
        out[c] = normalize_id(df[c])
        flag(out[c] == "", f"empty {c}")
    for c in schema.numeric:
        if c in df.columns:
            out[c], learned = _numeric(df, c, schema, rating_range, flag)
            scale = learned or scale
    if "timestamp" in df.columns:
        ts, bad = parse_timestamp(df["timestamp"])
        flag(bad.to_numpy(bool), "timestamp is neither unix seconds nor ISO 8601")
        out["timestamp"] = ts
    for c in schema.text:
        if c in df.columns:
            out[c] = df[c].map(normalize_text).astype(object)
    if schema.name == "reviews":
        flag(out["text"] == "", "empty review text")
    if schema.name == "movies":
        flag(out["title"] == "", "empty title")
    if schema.name == "social":
        flag((out["user_id"].astype(str) == out["friend_id"].astype(str)).to_numpy(bool),
             "self-loop (user_id equals friend_id)")
    valid = out[~flag.is_bad].reset_index(drop=True) if flag.is_bad.any() else out
    valid = valid[[c for c in df.columns if c in valid.columns]]
    return ReadResult(path=path, valid=valid, quarantine=_quarantine(df, flag, bad_rows, redact), total_rows=total,
                      scale=scale)


def empty_counts(df: pd.DataFrame) -> dict[str, int]:
    """Empty values of each column but the ids (missing, or text that is only blanks), as the
    input checks of a nightly run count them."""
    def empty(v: pd.Series) -> pd.Series:
        return v.isna() | (v.astype(str).str.strip() == "") if v.dtype == object else v.isna()

    out = {}
    for col in df.columns:
        if col in ("user_id", "movie_id", "friend_id", "text_rule", "text_key"):
            continue
        out[col] = int(empty(df[col]).sum())
    if "text_key" in df.columns:  # texts hashed by Ray's workers (the key "": no text), maybe
        # beside rows that came with their text (feedback comments)
        none = empty(df["text_key"]) & (empty(df["text"]) if "text" in df.columns else True)
        out["text"] = int(none.sum())
    return out


_WS = str.maketrans({c: " " for c in "\t\r\n\x0b\x0c\x85\u2028\u2029"})


def normalize_text(v: str) -> str:
    """NFC, control characters removed, whitespace collapsed."""
    if not v:
        return ""
    v = unicodedata.normalize("NFC", v).translate(_WS)
    if not v.isprintable():
        v = "".join(ch for ch in v if ch.isprintable() or ch == " ")
    return " ".join(v.split())


def read_user_ratings(source: str, *, delimiter: str = ",", encoding: str = "utf-8", stdin=None) -> pd.DataFrame:
    """The ``recommend --ratings`` input: a CSV file with ``movie_id`` and ``rating`` columns (in
    ``data.delimiter``), or ``-`` for a JSON list of ``{"movie_id", "rating"}`` objects on stdin.

    Returns ``movie_id`` (str) and ``rating`` (float) in input order.

    Raises:
        DataError: unreadable or empty input, missing columns, a rating that is not a number.
    """
    import json
    import sys

    if source == "-":
        where = "stdin"
        try:
            rows = pd.DataFrame(json.load(stdin or sys.stdin), dtype=object)
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            raise DataError(f"stdin: not a JSON list of {{movie_id, rating}} objects ({exc})") from exc
    else:
        where = source
        p = Path(source)
        if p.is_dir():
            raise DataError(f"{p}: is a folder, not a CSV file of ratings")
        try:
            rows = pd.read_csv(p, dtype=str, sep=delimiter, encoding=encoding, keep_default_na=False)
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"{p}: the file is empty; it needs a header (movie_id{delimiter}rating) and a row "
                            "per rating") from exc
        except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DataError(f"{p}: cannot read ratings ({str(exc).splitlines()[0][:200]})") from exc
    rows.columns = [str(c).strip().lstrip("\ufeff") for c in rows.columns]
    missing = [c for c in ("movie_id", "rating") if c not in rows.columns]
    if missing:
        d, name = _other_delimiter(" ".join(rows.columns), delimiter)
        hint = f"; the header looks {name}-separated: set data.delimiter (e.g. 'data.delimiter={d}')" if d else ""
        raise DataError(f"{where}: missing column(s) {', '.join(missing)} (found: "
                        f"{', '.join(rows.columns) or 'none'}); the ratings need movie_id and rating{hint}")
    if rows.empty:
        raise DataError(f"{where}: no ratings (a header only); give one row per rated movie")
    r = pd.to_numeric(rows["rating"].astype(str).str.strip(), errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(r)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: row {k + 1}: rating {rows['rating'].iloc[k]!r} is not a finite number")
    return pd.DataFrame({"movie_id": rows["movie_id"].astype(str).str.strip().to_numpy(), "rating": r})
