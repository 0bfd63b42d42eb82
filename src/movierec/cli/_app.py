"""The command group, its global options, and what every command shares (config loading,
logging). Commands live one module per command group beside this one; each is a few lines of
glue over library functions, and imports heavy libraries only inside itself."""

from __future__ import annotations

import json
import logging
import sys
import time

import click

log = logging.getLogger("movierec")

CONFIG_OPT = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), required=True,
    help="YAML config file (relative paths inside it resolve against its folder).",
)
OVERRIDES = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        })


def _setup_logging(verbose: int, quiet: int, fmt: str) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.DEBUG, min(logging.CRITICAL, level)))
    for noisy in ("numba", "tensorflow", "absl", "h5py", "urllib3", "httpx", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


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
