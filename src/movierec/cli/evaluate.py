"""``movierec evaluate``: metrics, intervals, paired tests, the report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from movierec.cli._app import CONFIG_OPT, OVERRIDES, load_cfg, cli, log


@cli.command("evaluate")
@CONFIG_OPT
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table", show_default=True)
@click.option("--output", type=click.Path(file_okay=False),
              help="Write metrics.json, report.md, report.html and the plots into this folder.")
@click.option("--compare", "compare_ref", default=None, metavar="VERSION|FILE",
              help="Show the deltas against a model version's metrics or a metrics.json file.")
@OVERRIDES
def evaluate_command(config_path, fmt, output, compare_ref, overrides) -> None:
    """Score the model on the test part, next to baselines and ablations."""
    from movierec.evaluation.evaluate import evaluate
    from movierec.evaluation.report import (compare, format_compare, format_markdown, format_table,
                                            load_other_metrics, word_p_values, write_report)
    from movierec.pipeline import workdir_lock

    cfg = load_cfg(config_path, overrides)
    comparison = None
    if compare_ref:  # fail before the (long) evaluation when the reference is missing
        other_name, other = load_other_metrics(compare_ref, Path(cfg.workdir) / "models")
    with workdir_lock(cfg.workdir):
        # a version: also a paired test against its holdout model on the same test users
        result = evaluate(cfg, compare_version=None if Path(compare_ref or "").is_file() else compare_ref)
    # the rounds behind every p-value: the renderings say a p-value at the test's floor,
    # 2 / (rounds + 1), as a bound ("p < 0.004"), not as an exact value
    result.setdefault("bootstrap_rounds", cfg.evaluate.bootstrap_rounds)
    word_p_values(result)  # every output, JSON included, says the same verdicts
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
