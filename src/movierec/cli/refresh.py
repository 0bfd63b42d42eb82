"""``movierec run`` (the nightly refresh), ``feedback`` and ``status``."""

from __future__ import annotations

import json

import click

from movierec.cli._app import CONFIG_OPT, OVERRIDES, load_cfg, cli, log


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

    cfg = load_cfg(config_path, overrides)
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
    """Record an interaction; the next `movierec run` folds it in.

    Texts must be valid UTF-8: bytes that are not exit 65, and nothing is recorded."""
    from movierec.cli._app import check_utf8

    for option, value in (("--user", user_id), ("--movie", movie_id), ("--comment", comment),
                          ("--share-with", share_with)):
        check_utf8(option, value)  # before anything is checked against or written to the log
    cfg = load_cfg(config_path, overrides)
    if rating is None and not comment and not share_with:
        raise click.UsageError("give at least one of --rating, --comment, --share-with")
    if not user_id.strip() or not movie_id.strip():
        raise click.UsageError("--user and --movie must not be empty")
    from movierec.feedback import record

    event = record(cfg, user_id, movie_id, rating, comment, share_with)  # as the service's POST /feedback
    log.info("feedback: recorded %s", ", ".join(k for k in ("rating", "comment", "share_with") if k in event))


@cli.command()
@CONFIG_OPT
@OVERRIDES
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status(config_path, overrides, fmt) -> None:
    """Which stages are fresh or stale, the current model and its metrics, the last run."""
    from movierec.pipeline import status_report

    cfg = load_cfg(config_path, overrides)
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
        if cur.get("status"):
            click.echo(f"  status: {cur['status']}")
        if cur.get("error"):  # a damaged or unreadable version: recommend will fail on it
            click.echo(f"  cannot serve: {cur['error']}")
    else:
        click.echo("current model: none (run `movierec train` or `movierec run`)")
    last = rep["last_run"]
    if last:
        reasons = "; ".join(last.get("reasons") or [])
        click.echo(f"last run: {last.get('outcome')} at {last.get('finished', '?')} in {last.get('seconds', 0):.1f}s"
                   + (f" ({reasons})" if reasons else ""))
    else:
        click.echo("last run: none recorded")
