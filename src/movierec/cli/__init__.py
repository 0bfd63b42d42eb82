"""The ``movierec`` command line: thin click commands over the pipeline functions.

Heavy libraries are imported inside the commands that need them: ``movierec --help``
and ``movierec recommend`` import neither TensorFlow nor torch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import click

from movierec.errors import EXIT_FAILURE, MovieRecError

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


def _load(config_path: str, overrides: tuple[str, ...]):
    from movierec.config import load_config

    return load_config(config_path, overrides)


def _stage_command(stage: str, doc: str):
    @cli.command(stage, help=doc)
    @CONFIG_OPT
    @click.option("--force", is_flag=True, help="Re-run the stage even when it is fresh.")
    @OVERRIDES
    def _cmd(config_path: str, force: bool, overrides: tuple[str, ...]) -> None:
        from movierec.pipeline import ensure, workdir_lock

        cfg = _load(config_path, overrides)
        with workdir_lock(cfg.workdir):
            ensure(cfg, stage, force=force)

    return _cmd


_stage_command("ingest", "Read and validate the CSV files; bad rows go to quarantine/.")
_stage_command("clean", "Dedupe, normalise, map ids to dense integers, assign the split.")
_stage_command("sentiment", "Score review texts and social message texts with the language model.")
_stage_command("social", "Build the social graph, per-user graph features and neighbourhoods.")
_stage_command("fuse", "Build user and item feature matrices (transformers fitted on training data).")


@cli.command()
@CONFIG_OPT
@OVERRIDES
def train(config_path: str, overrides: tuple[str, ...]) -> None:
    """Run stale stages above, then train and save the model (it becomes current)."""
    from movierec.pipeline import train_and_promote, workdir_lock

    cfg = _load(config_path, overrides)
    with workdir_lock(cfg.workdir):
        train_and_promote(cfg, force=True)


@cli.command()
@CONFIG_OPT
@click.option("--user", "user_id", help="User id to recommend for.")
@click.option("--all", "all_users", is_flag=True, help="Recommend for every user (needs --output).")
@click.option("--output", help="Output of --all: a .csv or .parquet file, or - for CSV on stdout.")
@click.option("--ratings", "ratings_file", type=click.Path(dir_okay=True, allow_dash=True),
              help="Ratings (movie_id,rating CSV in data.delimiter, or - for a JSON list on stdin): fold in a "
                   "new user, or add to a known user's ratings.")
@click.option("-n", type=click.IntRange(min=1), default=None, help="List length (default: recommend.n).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--explain", is_flag=True, help="Give each movie the reasons the model had for it (--user only).")
@OVERRIDES
def recommend(config_path, user_id, all_users, output, ratings_file, n, fmt, explain, overrides) -> None:
    """Top-N movies for one user, a new user (--ratings), or every user (--all)."""
    import pandas as pd

    cfg = _load(config_path, overrides)
    n = n or cfg.recommend.n
    if all_users == bool(user_id):
        raise click.UsageError("give exactly one of --user ID or --all")
    if all_users:
        if explain or ratings_file:
            raise click.UsageError("--explain and --ratings work with --user, not with --all")
        if not output:
            raise click.UsageError("--all needs --output PATH (.csv or .parquet, or - for CSV on stdout)")
        special = output == "-" or (Path(output).exists() and not Path(output).is_file())  # -, /dev/stdout
        if not special and Path(output).suffix.lower() not in (".csv", ".parquet"):
            raise click.UsageError(f"--output {output}: give a .csv or .parquet file (or - for CSV on stdout)")
    elif output:
        raise click.UsageError("--output is for --all; one user's list goes to stdout (--format table|json|csv)")
    if user_id:
        from movierec.privacy import maybe_pseudonym

        user_id = maybe_pseudonym(user_id, cfg.privacy)  # ids in the model are pseudonyms too
    rows = None
    if ratings_file:
        from movierec.data.readers import read_user_ratings

        rows = read_user_ratings(ratings_file, delimiter=cfg.data.delimiter, encoding=cfg.data.encoding)
    from movierec.feedback import read_events_since
    from movierec.privacy import check_key
    from movierec.registry import Registry

    bundle = Registry.of(cfg).load()
    check_key(bundle.meta.get("privacy_key_fingerprint"), cfg.privacy, bundle.path.name)
    # feedback recorded since the version was trained: folded in at once, not at the next run
    events = read_events_since(cfg.workdir, bundle.meta.get("feedback"))
    if all_users:
        _recommend_all(bundle, cfg, n, events, output)
        return
    if events is not None:
        events = events[events["user_id"].astype(str).str.strip() == user_id]
    new_user = bundle.user_index(user_id) < 0
    if rows is not None:
        rows = bundle.check_ratings(rows, "stdin" if ratings_file == "-" else ratings_file)
        given = rows.assign(user_id=user_id)
        # a known user's --ratings join their own (and feedback since training), never replace them
        events = given if events is None else pd.concat([events, given], ignore_index=True)
    if rows is not None and new_user:
        result = bundle.recommend_ratings(user_id, events[events["rating"].notna()].drop_duplicates(
            "movie_id", keep="last")[["movie_id", "rating"]], n,
            exclude=bundle.movie_ids.get_indexer(events["movie_id"].astype(str)))
    else:
        result = bundle.recommend_user(user_id, n, cfg.recommend.exclude_seen, events=events,
                                       feedback_weight=cfg.recommend.feedback_weight)
    if rows is not None:
        result["ratings_given"] = int(len(rows))
    if explain:
        from movierec.explain import explain as add_reasons

        new_ratings = {}  # feedback and --ratings since training: the user's ratings too (latest wins)
        if events is not None and len(events):
            rated = events[pd.to_numeric(events["rating"], errors="coerce").notna()]
            idx = bundle.movie_ids.get_indexer(rated["movie_id"].astype(str).str.strip())
            new_ratings = {int(i): float(r) for i, r in zip(idx, pd.to_numeric(rated["rating"])) if i >= 0}
        add_reasons(bundle, user_id, result["items"], threshold=cfg.evaluate.relevance_threshold,
                    new_ratings=new_ratings)
    _print_recs(result, fmt)


def _recommend_all(bundle, cfg, n: int, events, output: str) -> None:
    from movierec.catalog import atomic_path

    t0 = time.perf_counter()
    df = bundle.recommend_all(n, cfg.recommend.exclude_seen, events=events,
                              feedback_weight=cfg.recommend.feedback_weight)
    if output == "-":
        df.to_csv(sys.stdout, index=False)
    else:
        with atomic_path(output) as tmp:
            if output.lower().endswith(".parquet"):
                df.to_parquet(tmp, index=False)
            else:
                df.to_csv(tmp, index=False)
    log.info("recommend: %d users x %d movies written to %s in %.2fs", df["user_id"].nunique(), n,
             "stdout" if output == "-" else output, time.perf_counter() - t0)


def _print_recs(result: dict, fmt: str) -> None:
    items = result["items"]
    for it in items:
        it.setdefault("explanation", None)
    if fmt == "json":
        click.echo(json.dumps(result))
        return
    if fmt == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["rank", "movie_id", "title", "year", "genres", "predicted_rating", "rank_score"])
        for k, it in enumerate(items, 1):
            w.writerow([k, it["movie_id"], it["title"], it["year"] or "", it["genres"],
                        "" if it["predicted_rating"] is None else it["predicted_rating"], it["rank_score"]])
        return
    fallback = result.get("fallback")
    note = f"  (fallback: {fallback})" if fallback else ""
    if result.get("feedback_events"):
        note += f"  ({result['feedback_events']} feedback events since the model was trained folded in)"
    click.echo(f"Top {len(items)} for user {result['user_id']}{note}")
    # the year is part of most titles already; show it only where the title lacks it
    titles = [it["title"] if not it["year"] or f"({it['year']})" in it["title"] else f"{it['title']} ({it['year']})"
              for it in items]
    width = max([len(t) for t in titles] + [5])
    rank_head = "ratings" if fallback == "popularity" else "rank score"
    click.echo(f"{'#':>3}  {'title':<{width}}  {'genres':<30}  {'predicted':>9}  {rank_head:>10}")
    for k, (it, title) in enumerate(zip(items, titles), 1):
        pred = "" if it["predicted_rating"] is None else f"{it['predicted_rating']:.2f}"
        rank = f"{it['rank_score']:.0f}" if fallback == "popularity" else f"{it['rank_score']:.3f}"
        click.echo(f"{k:>3}  {title:<{width}}  {it['genres'][:30]:<30}  {pred:>9}  {rank:>10}")
        if it.get("explanation"):
            click.echo(f"{'':>5}{it['explanation']}")


@cli.command()
@CONFIG_OPT
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@click.option("--output", type=click.Path(file_okay=False),
              help="Write metrics.json, report.md, report.html and the plots into this folder.")
@click.option("--compare", "compare_ref", default=None, metavar="VERSION|FILE",
              help="Show the deltas against a model version's metrics or a metrics.json file.")
@OVERRIDES
def evaluate(config_path, fmt, output, compare_ref, overrides) -> None:
    """Score the model on the test part, next to baselines and ablations."""
    from movierec.evaluation.evaluate import evaluate as run_eval
    from movierec.evaluation.report import (compare, format_compare, format_markdown, format_table,
                                            load_other_metrics, write_report)
    from movierec.pipeline import workdir_lock

    cfg = _load(config_path, overrides)
    comparison = None
    if compare_ref:  # fail before the (long) evaluation when the reference is missing
        other_name, other = load_other_metrics(compare_ref, Path(cfg.workdir) / "models")
    with workdir_lock(cfg.workdir):
        # a version: also a paired test against its holdout model on the same test users
        result = run_eval(cfg, compare_version=None if Path(compare_ref or "").is_file() else compare_ref)
    if compare_ref:
        comparison = (other_name, compare(result, other, cfg.evaluate.k))
        result["compared_with"] = {"name": other_name,
                                   "deltas": {c: d for c, _, _, d in comparison[1]}}
    if output:
        files = write_report(result, output, cfg.evaluate.k, comparison)
        log.info("evaluate: report written to %s", files["html"])
    from movierec.tracking import log_evaluation

    run_id = log_evaluation(cfg, result, output)
    if run_id:
        log.info("evaluate: logged to MLflow run %s", run_id)
    if fmt == "json":
        click.echo(json.dumps(result))
    elif fmt == "markdown":
        click.echo(format_markdown(result, cfg.evaluate.k))
    else:
        click.echo(format_table(result, cfg.evaluate.k))
        if comparison:
            click.echo("")
            click.echo(format_compare(comparison[1], comparison[0]))


@cli.command()
@CONFIG_OPT
@OVERRIDES
def run(config_path, overrides) -> None:
    """The cron entry point: lock, stale stages, train, evaluate, gate, promote.

    Exit codes: 0 promoted or nothing changed; 3 the new model failed the quality gate
    (the current one keeps serving); 65 invalid or suspicious input; 75 another run holds
    the lock.
    """
    from movierec.pipeline import workdir_lock
    from movierec.refresh import refresh

    cfg = _load(config_path, overrides)
    with workdir_lock(cfg.workdir):
        summary = refresh(cfg)
    log.info("run: %s in %.1fs; current model %s", summary["outcome"], summary["seconds"], summary["current"])


@cli.command()
@CONFIG_OPT
@click.option("--user", "user_id", required=True)
@click.option("--movie", "movie_id", required=True)
@click.option("--rating", type=float, default=None)
@click.option("--comment", default=None, help="A review text; scored by the sentiment stage.")
@click.option("--share-with", default=None, help="A friend the movie was shared with.")
@OVERRIDES
def feedback(config_path, user_id, movie_id, rating, comment, share_with, overrides) -> None:
    """Record an interaction; the next `movierec run` folds it in."""
    from movierec.feedback import append_event

    cfg = _load(config_path, overrides)
    if rating is None and not comment and not share_with:
        raise click.UsageError("give at least one of --rating, --comment, --share-with")
    if not user_id.strip() or not movie_id.strip():
        raise click.UsageError("--user and --movie must not be empty")
    from movierec.feedback import check_event, known_catalogue
    from movierec.privacy import maybe_pseudonym

    check_event(movie_id, rating, *known_catalogue(cfg))
    hashed = cfg.privacy.pseudonymize_ids
    event = append_event(cfg.workdir, maybe_pseudonym(user_id, cfg.privacy), movie_id, rating, comment,
                         maybe_pseudonym(share_with, cfg.privacy) if share_with else None, pseudonymized=hashed)
    log.info("feedback: recorded %s", ", ".join(k for k in ("rating", "comment", "share_with") if k in event))


@cli.group()
def models() -> None:
    """List model versions or roll back to one."""


@models.command("list")
@CONFIG_OPT
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@OVERRIDES
def models_list(config_path, fmt, overrides) -> None:
    """Every kept model version, its status and holdout metrics; * marks current."""
    from movierec.registry import FORMAT, Registry

    cfg = _load(config_path, overrides)
    reg = Registry.of(cfg)
    cur = reg.current_name()
    k = max(cfg.evaluate.k)
    rows = [dict(reg.summary(v.name, k), current=v.name == cur) for v in reg.versions()]
    if fmt == "json":
        click.echo(json.dumps(rows))
        return
    for r in rows:
        vals = "  ".join(f"{key} {r[key]:.4f}" for key in ("rmse", f"ndcg@{k}") if r.get(key) is not None)
        fmt_note = "" if r["format"] == FORMAT else f"  (format {r['format']}: cannot serve)"
        click.echo(f"{'*' if r['current'] else ' '} {r['version']:<28} {r['status']:<9} {r['created'] or '':<28} "
                   f"{vals}{fmt_note}")


@models.command("rollback")
@click.argument("version", required=False)
@CONFIG_OPT
@OVERRIDES
def models_rollback(version, config_path, overrides) -> None:
    """Make VERSION current (default: the last good version before the current one)."""
    from movierec.pipeline import workdir_lock
    from movierec.refresh import rollback

    if version and "=" in version:  # `models rollback --config C workdir=...`: an override, not a version
        version, overrides = None, (version, *overrides)
    cfg = _load(config_path, overrides)
    with workdir_lock(cfg.workdir):
        v = rollback(cfg, version)
    click.echo(v)


@cli.command()
@CONFIG_OPT
@OVERRIDES
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(config_path, overrides, fmt) -> None:
    """Which stages are fresh or stale, the current model and its metrics, the last run."""
    from movierec.pipeline import status_report

    cfg = _load(config_path, overrides)
    rep = status_report(cfg)
    if fmt == "json":
        click.echo(json.dumps(rep))
        return
    click.echo("stages:")
    for stage, info in rep["stages"].items():
        when = f"  (last run {info['finished']}, {info['seconds']:.1f}s)" if info.get("finished") else ""
        click.echo(f"  {stage:<10} {info['state']}{when}")
    cur = rep["current_model"]
    if cur:
        click.echo(f"current model: {cur['version']} (created {cur.get('created', '?')}, "
                   f"{cur.get('train_ratings', '?')} training ratings)")
        if cur.get("metrics"):
            click.echo("  metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in cur["metrics"].items()))
    else:
        click.echo("current model: none (run `movierec train` or `movierec run`)")
    last = rep["last_run"]
    if last:
        reasons = "; ".join(last.get("reasons") or [])
        click.echo(f"last run: {last.get('outcome')} at {last.get('finished', '?')} in {last.get('seconds', 0):.1f}s"
                   + (f" ({reasons})" if reasons else ""))
    else:
        click.echo("last run: none recorded")


@cli.command("score-text")
@CONFIG_OPT
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--text-column", required=True)
@click.option("--output", type=click.Path(dir_okay=False), required=True)
@OVERRIDES
def score_text(config_path, input_path, text_column, output, overrides) -> None:
    """Add sentiment and sentiment_label columns for a text column of any CSV."""
    import pandas as pd

    from movierec.catalog import atomic_path
    from movierec.errors import DataError
    from movierec.stages.sentiment import label_scores, load_scorer, score_unique

    cfg = _load(config_path, overrides)
    try:
        df = pd.read_csv(input_path, dtype=str, keep_default_na=False, encoding=cfg.data.encoding)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{input_path}: cannot read as CSV ({exc})") from exc
    if text_column not in df.columns:
        raise DataError(f"{input_path}: no column {text_column!r} (found: {', '.join(df.columns)})")
    scores = score_unique(df[text_column], load_scorer(cfg.sentiment), cfg.sentiment.max_chars)
    df["sentiment"] = scores.round(4)
    df["sentiment_label"] = label_scores(scores, cfg.sentiment.neutral_band)
    with atomic_path(output) as tmp:
        df.to_csv(tmp, index=False)
    log.info("score-text: %d texts scored into %s", len(df), output)


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
def data_import(name, src, dst) -> None:
    """Convert a local copy (folder or zip) of NAME to the canonical CSVs in DIR."""
    from movierec.data.datasets import import_dataset, next_step

    counts = import_dataset(name, src, dst)
    click.echo(json.dumps(counts))
    log.info("data: %s", next_step(name, dst))


_NATIVE_CAPTURED = False


def _capture_native_stderr() -> None:
    """Route what native libraries write straight to file descriptor 2 (TensorFlow's and
    absl's C++ lines, CUDA probes) into the log at debug level, so that stderr holds only
    movierec's log lines (one JSON document each with --log-format json). Python's own
    sys.stderr keeps the real stream. Once per process, for the console command only."""
    global _NATIVE_CAPTURED
    if _NATIVE_CAPTURED:
        return
    import threading

    try:
        real = os.dup(2)
        sys.stderr.flush()
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler):
                h.setStream(sys.stderr)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
    except (OSError, ValueError):  # no usable stderr: leave it as it is
        return
    _NATIVE_CAPTURED = True
    native = logging.getLogger("movierec.native")

    def pump() -> None:
        with os.fdopen(r, "rb") as fh:
            for raw in fh:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line:
                    native.debug("%s", line)

    threading.Thread(target=pump, name="native-stderr", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and maps movierec errors to the documented exit codes."""
    if argv is None:
        _capture_native_stderr()
    try:
        cli.main(args=argv, prog_name="movierec", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
    except SystemExit:
        from click.utils import PacifyFlushWrapper

        if isinstance(sys.stdout, PacifyFlushWrapper):  # click met a closed stdout (EPIPE) and exits 1
            sys.exit(0)
        raise
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except MovieRecError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # the reader of stdout went away (`movierec ... | head`): that is not a failure
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except OSError as exc:  # a file that cannot be read or written, named
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except Exception as exc:  # noqa: BLE001 - last resort: a message, not a bare traceback
        if logging.getLogger().level <= logging.DEBUG:
            traceback.print_exc()
        click.echo(f"error: unexpected {exc.__class__.__name__}: {exc} (run with -v for the traceback)", err=True)
        sys.exit(EXIT_FAILURE)
    sys.exit(0)
