"""``movierec train`` (the stage commands are declared in _app)."""

from __future__ import annotations



from movierec.cli._app import CONFIG_OPT, OVERRIDES, load_cfg, cli


@cli.command()
@CONFIG_OPT
@OVERRIDES
def train(config_path: str, overrides: tuple[str, ...]) -> None:
    """Run stale stages above, then train and save the model (it becomes current)."""
    from movierec.pipeline import train_and_promote, workdir_lock

    cfg = load_cfg(config_path, overrides)
    with workdir_lock(cfg.workdir):
        train_and_promote(cfg, force=True)
