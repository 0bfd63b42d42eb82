"""``movierec data download|import`` and ``movierec score-text``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from movierec.cli._app import CONFIG_OPT, CSV_SAFETY_NOTE, OVERRIDES, load_cfg, cli, log, write_csv


@cli.group()
def data() -> None:
    """Download or import public data sets into the canonical CSV layout."""


@data.command("download")
@click.argument("name")
@click.option("--to", "dst", required=True, type=click.Path(file_okay=False))
@click.option("--url", default=None, help="Fetch from this https address (a mirror) instead of the public one.")
@click.option("--sha256", default=None, help="The archive's expected sha256 (a pin; checked before importing).")
def data_download(name, dst, url, sha256) -> None:
    """Download NAME (movielens-100k, movielens-latest-small, filmtrust) to DIR."""
    from movierec.data.datasets import download_dataset, next_step

    counts = download_dataset(name, dst, url, sha256=sha256)
    click.echo(json.dumps(counts))
    log.info("data: %s", next_step(name, dst))


@data.command("import")
@click.argument("name")
@click.option("--from", "src", required=True, type=click.Path())
@click.option("--to", "dst", required=True, type=click.Path(file_okay=False))
@click.option("--table", default="ratings", show_default=True, help="csv: the canonical table the file becomes.")
@click.option("--map", "mapping", multiple=True, metavar="COLUMN=SOURCE",
              help="csv: the source column of a canonical column, e.g. --map user_id=uid (repeatable).")
@click.option("--delimiter", default=",", show_default=True, help="csv: the source file's field delimiter.")
@click.option("--encoding", default="utf-8", show_default=True,
              help="csv: the source file's text encoding (e.g. latin-1); the canonical CSV is written in UTF-8.")
def data_import(name, src, dst, table, mapping, delimiter, encoding) -> None:
    """Convert a local copy (folder or zip) of NAME to the canonical CSVs in DIR.

    NAME: movielens-100k, movielens-latest-small, filmtrust, rt-critics, ciaodvd, epinions,
    or csv (any CSV file, with --table and --map).

    A file that is empty, not text in its encoding, or not readable CSV (a row with more
    or fewer fields than the header, an unclosed quote) exits 65 naming the file and line.
    """
    from movierec.data.datasets import import_csv, import_dataset, next_step

    if name == "csv":
        if len(delimiter) != 1:
            raise click.UsageError(f"--delimiter {delimiter!r}: give one character (e.g. ';', or $'\\t' for a tab)")
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise click.UsageError(f"--encoding {encoding!r}: unknown encoding (e.g. utf-8, latin-1, cp1252)") from None
        pairs = {}
        for m in mapping:
            canon, sep, col = m.partition("=")
            if not sep or not canon or not col:
                raise click.UsageError(f"--map {m!r}: give COLUMN=SOURCE, e.g. --map user_id=uid")
            pairs[canon.strip()] = col.strip()
        counts = import_csv(Path(src), Path(dst), table, pairs, delimiter, encoding)
    else:
        counts = import_dataset(name, src, dst)
    click.echo(json.dumps(counts))
    log.info("data: %s", next_step(name, dst))


@cli.command("score-text")
@CONFIG_OPT
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--text-column", required=True)
@click.option("--output", type=click.Path(dir_okay=False), required=True,
              help=f"The CSV file to write: the input's columns plus the scores. {CSV_SAFETY_NOTE}.")
@OVERRIDES
def score_text(config_path, input_path, text_column, output, overrides) -> None:
    """Add sentiment and sentiment_label columns for a text column of any CSV."""
    import numpy as np
    import pandas as pd

    from movierec.catalog import atomic_path
    from movierec.errors import DataError
    from movierec.sentiment.routing import Router, describe_routing, log_routing
    from movierec.sentiment.scorers import label_scores
    from movierec.stages.sentiment import cap_texts

    cfg = load_cfg(config_path, overrides)
    try:
        df = pd.read_csv(input_path, dtype=str, keep_default_na=False, encoding=cfg.data.encoding)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{input_path}: cannot read as CSV ({exc})") from exc
    if text_column not in df.columns:
        raise DataError(f"{input_path}: no column {text_column!r} (found: {', '.join(df.columns)})")
    codes, uniques = pd.factorize(df[text_column].astype(str))
    got = Router(cfg.sentiment).score_texts(cap_texts(list(uniques), cfg.sentiment.max_chars))
    info = describe_routing(got.languages, got.routes)
    log_routing(info)
    scores = got.scores[codes] if len(uniques) else np.zeros(0, np.float32)
    labels = label_scores(np.nan_to_num(scores), cfg.sentiment.neutral_band)
    labels[np.isnan(scores)] = "unsupported"  # no configured scorer reads the language: no score
    df["sentiment"] = pd.Series(scores, index=df.index).round(4)
    df["sentiment_label"] = labels
    if cfg.sentiment.detect_language:
        df["language"] = got.languages[codes] if len(uniques) else []
    with atomic_path(output) as tmp:
        write_csv(df, tmp)
    log.info("score-text: %d texts scored into %s (%d unsupported)", len(df), output, int(np.isnan(scores).sum()))
