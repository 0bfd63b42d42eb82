"""``movierec serve`` (the HTTP service) and ``movierec experiment report`` (its A/B tests)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import click

from movierec.cli._app import CONFIG_OPT, OVERRIDES, cli, load_cfg, log


def _need_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from movierec.errors import ConfigError

        raise ConfigError(f"movierec serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'movierec[serve]'") from None


@cli.command()
@CONFIG_OPT
@click.option("--host", default=None, help="Address to listen on (default: serve.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: serve.port).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Server processes (default: serve.workers).")
@OVERRIDES
def serve(config_path, host, port, workers, overrides) -> None:
    """The HTTP service: lists, new viewers, similar movies, feedback, health, metrics, a page.

    Serves the current model version and switches, without a restart, when `movierec run`
    promotes another or `movierec models rollback` switches back. Write endpoints need the
    token in $MOVIEREC_SERVE_TOKEN (serve.token_env). OpenAPI docs at /docs."""
    _need_serve_extra()
    import uvicorn

    cfg = load_cfg(config_path, overrides)
    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    workers = workers or cfg.serve.workers
    verbose = logging.getLogger().level <= logging.DEBUG
    opts = dict(host=host, port=port, log_config=None, access_log=verbose, timeout_graceful_shutdown=10)
    if workers == 1:
        from movierec.server import create_app

        app = create_app(cfg)
        log.info("serve: http://%s:%d/ (version %s)", host, port, app.state.service.served.name
                 if app.state.service.served else "none yet")
        uvicorn.run(app, **opts)
        return
    # several processes: uvicorn imports the app in each; they share the metrics through files
    metrics_dir = Path(cfg.workdir) / "serve" / f"prometheus-{os.getpid()}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ["MOVIEREC_SERVE_CONFIG"] = str(cfg.source or "")
    os.environ["MOVIEREC_SERVE_OVERRIDES"] = json.dumps(list(overrides))
    from movierec.service import Service

    Service(cfg)  # fail here, once, on a bad config or privacy key: not in every worker
    log.info("serve: http://%s:%d/ with %d workers", host, port, workers)
    try:
        uvicorn.run("movierec.server:app_from_env", factory=True, workers=workers, **opts)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


@cli.group()
def experiment() -> None:
    """Online A/B tests of the HTTP service (serve.experiment)."""


@experiment.command("report")
@CONFIG_OPT
@click.option("--name", default=None, help="The experiment (default: serve.experiment.name).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table",
              show_default=True)
@OVERRIDES
def experiment_report(config_path, name, fmt, overrides) -> None:
    """Per arm: hit rate, mean rating of rated exposures, coverage, with intervals; the
    verdict; the gaps between viewer groups (fairness)."""
    from movierec.experiment import format_report, report

    cfg = load_cfg(config_path, overrides)
    click.echo(format_report(report(cfg, name), fmt))
