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
