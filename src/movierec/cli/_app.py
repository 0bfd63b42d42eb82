"""The command group, its global options, and what every command shares (config loading,
logging). Commands live one module per command group beside this one; each is a few lines of
glue over library functions, and imports heavy libraries only inside itself."""

from __future__ import annotations

import datetime
import json
import logging
import sys

import click

log = logging.getLogger("movierec")

CONFIG_OPT = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), required=True,
    help="YAML config file (relative paths inside it resolve against its folder).",
)
OVERRIDES = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


#: attributes every LogRecord has: anything else on a record came from ``extra=``
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
#: libraries that log a lot: WARNING and up unless -vv
NOISY = ("numba", "tensorflow", "absl", "h5py", "urllib3", "httpx", "huggingface_hub", "transformers")
#: lines of native libraries (cli._capture_native_stderr): third-party, at debug level
NATIVE = "movierec.native"


def _json_value(v):
    """``v`` as JSON can hold it (numpy numbers as numbers, the rest as text)."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_json_value(x) for x in v]
    item = getattr(v, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _json_value(item())
        except (TypeError, ValueError):
            pass
    return str(v)


class _JsonFormatter(logging.Formatter):
    """One JSON document per line: time (ISO 8601, UTC, "Z"), level, logger, message, then the
    fields a call passed with ``extra=`` (one that clashes with these four gets a trailing _),
    and the traceback as "exception" when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        t = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        doc = {
            "time": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RECORD_FIELDS and not k.startswith("_"):
                doc[k + "_" if k in doc else k] = _json_value(v)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc)


class _VerbosityFilter(logging.Filter):
    """-v: debug lines of movierec only (its own loggers, not the native libraries' output)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        name = record.name
        return (name == "movierec" or name.startswith("movierec.")) and not (
            name == NATIVE or name.startswith(NATIVE + "."))


def _setup_logging(verbose: int, quiet: int, fmt: str) -> None:
    """Log records to stderr (above any progress bar). Default INFO; each -q one level less;
    -v adds movierec's DEBUG lines (per-epoch lines, stage details), -vv everyone's, the noisy
    libraries' and the native libraries' output included."""
    from movierec import progress
    from movierec.progress import TqdmLoggingHandler

    progress.BARS = fmt != "json"  # JSON on stderr: progress as JSON lines, not a bar

    net = verbose - quiet
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO - 10 * net))
    handler = TqdmLoggingHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    elif net >= 1:  # debugging: say which logger wrote each line
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    if net == 1:
        handler.addFilter(_VerbosityFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.DEBUG if net >= 2 else max(logging.WARNING, level))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less logging (repeatable).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log line format on stderr.")
@click.version_option(package_name="movierec")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int, log_format: str) -> None:
    """movierec: batch movie recommendations from ratings, review sentiment and social ties."""
    _setup_logging(verbose, quiet, log_format)
    ctx.obj = {"verbose": verbose}
    if ctx.invoked_subcommand != "serve":  # a long-lived service gives back what it frees
        from movierec._memory import reuse_freed_memory

        reuse_freed_memory()


def load_cfg(config_path: str, overrides: tuple[str, ...]):
    from movierec.config import load_config

    return load_config(config_path, overrides)


def _stage_command(stage: str, doc: str):
    @cli.command(stage, help=doc)
    @CONFIG_OPT
    @click.option("--force", is_flag=True, help="Re-run the stage even when it is fresh.")
    @OVERRIDES
    def _cmd(config_path: str, force: bool, overrides: tuple[str, ...]) -> None:
        from movierec.pipeline import ensure, workdir_lock

        cfg = load_cfg(config_path, overrides)
        with workdir_lock(cfg.workdir):
            ensure(cfg, stage, force=force)

    return _cmd


_stage_command("ingest", "Read and validate the CSV files; bad rows go to quarantine/.")
_stage_command("clean", "Dedupe, normalise, map ids to dense integers, assign the split.")
_stage_command("sentiment", "Score review texts and social message texts with the language model.")
_stage_command("social", "Build the social graph, per-user graph features and neighbourhoods.")
_stage_command("fuse", "Build user and item feature matrices (transformers fitted on training data).")


def check_utf8(option: str, value: str | None) -> None:
    """An option's text must be valid UTF-8: bytes that are not (passed through argv as lone
    surrogates) would fail later, half-way through a command. Raises DataError (exit 65)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        from movierec.errors import DataError

        code = ord(value[exc.start])
        byte = f" (byte 0x{code - 0xDC00:02x})" if 0xDC80 <= code <= 0xDCFF else ""
        raise DataError(f"{option}: not valid UTF-8 text at character {exc.start + 1}{byte}; "
                        "give the text in UTF-8") from None


#: a CSV cell starting with one of these is a formula to a spreadsheet (OWASP, CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: a plain number ("-1.5", "+2e3") is no formula: left as it is
_PLAIN_NUMBER = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
CSV_SAFETY_NOTE = ("CSV cells that begin with = + - @, a tab or a carriage return (other than plain numbers) "
                   "get a leading ' so that spreadsheets do not run them as formulas")


def csv_safe_cell(v):
    """A text cell as a spreadsheet must see it in a CSV file: a leading ``'`` before a formula."""
    if isinstance(v, str) and v.startswith(FORMULA_START):
        import re

        if not re.match(_PLAIN_NUMBER, v):
            return "'" + v
    return v


def write_csv_rows(columns: list[str], rows: list[list], target) -> None:
    """:func:`write_csv` for a few rows of plain Python values (None: an empty cell), without
    pandas (one viewer's list: pandas is a third of the command's time): the same bytes."""
    import csv

    rows = [[csv_safe_cell(v) for v in row] for row in rows]
    cr = any("\r" in c for c in columns) or any(isinstance(v, str) and "\r" in v for row in rows for v in row)
    w = csv.writer(target, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC if cr else csv.QUOTE_MINIMAL)
    w.writerow([csv_safe_cell(c) for c in columns])
    w.writerows(rows)


def _csv_safe_column(s):
    """The column with its formula cells neutralised (numbers and dates are never formulas)."""
    import numpy as np
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    if not (pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)):
        return s
    try:
        starts = s.str.startswith(FORMULA_START)
    except AttributeError:  # an object column without any text
        return s
    hit = np.flatnonzero(starts.fillna(False).to_numpy(dtype=bool))
    if len(hit):
        text = s.iloc[hit].astype(str)
        formula = ~text.str.match(_PLAIN_NUMBER).fillna(False).to_numpy(dtype=bool)
        if formula.any():
            s = s.astype(object).copy()
            s.iloc[hit[formula]] = ["'" + v for v in text[formula]]
    return s


def write_csv(df, target) -> None:
    """Write ``df`` as a CSV file (or to an open text stream) for people and spreadsheets:
    every text cell (and column name) that begins a formula gets a leading ``'``
    (:data:`FORMULA_START`, OWASP's advice against CSV injection), and every cell holding a
    line break, a lone carriage return included, is quoted (:func:`csv_quoting`), so the file
    reads back with the same rows. JSON and Parquet outputs are written as they are."""
    from movierec.data.datasets import csv_quoting

    out = df.copy(deep=False)
    for k in range(df.shape[1]):
        out.isetitem(k, _csv_safe_column(df.iloc[:, k]))
    out.columns = [csv_safe_cell(str(c)) for c in df.columns]
    out.to_csv(target, index=False, lineterminator="\n", quoting=csv_quoting(out))
