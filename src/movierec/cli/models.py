"""``movierec models list|rollback``."""

from __future__ import annotations

import json

import click

from movierec.cli._app import CONFIG_OPT, OVERRIDES, load_cfg, cli


@cli.group()
def models() -> None:
    """List model versions or roll back to one."""


@models.command("list")
@CONFIG_OPT
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@OVERRIDES
def models_list(config_path, fmt, overrides) -> None:
    """Every kept model version, its status and holdout metrics; * marks current, and a version
    whose files are not the size they were written with is marked damaged."""
    from movierec.registry import FORMAT, Registry

    cfg = load_cfg(config_path, overrides)
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
        if r.get("damaged"):
            fmt_note += f"  (damaged: {r['damaged']}; cannot serve)"
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
    cfg = load_cfg(config_path, overrides)
    with workdir_lock(cfg.workdir):
        v = rollback(cfg, version)
    click.echo(v)
