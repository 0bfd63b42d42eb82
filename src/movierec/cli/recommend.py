"""``movierec recommend``: one user, a new user (--ratings), or every user (--all)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from movierec.cli._app import (CONFIG_OPT, CSV_SAFETY_NOTE, OVERRIDES, check_utf8, cli, load_cfg, log, write_csv,
                               write_csv_rows)


@cli.command()
@CONFIG_OPT
@click.option("--user", "user_id", help="User id to recommend for.")
@click.option("--all", "all_users", is_flag=True, help="Recommend for every user (needs --output).")
@click.option("--output", help="Output of --all: a .csv or .parquet file, or - for CSV on stdout (engine.kind: ray: "
                                f"a folder of Parquet part files). {CSV_SAFETY_NOTE}; Parquet holds the ids as "
                                "they are.")
@click.option("--ratings", "ratings_file", type=click.Path(dir_okay=True, allow_dash=True),
              help="Ratings (movie_id,rating CSV in data.delimiter, or - for a JSON list on stdin): fold in a "
                   "new user, or add to a known user's ratings.")
@click.option("-n", type=click.IntRange(min=1), default=None, help="List length (default: recommend.n).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help=f"How one user's list is printed (csv: {CSV_SAFETY_NOTE}; json as it is).")
@click.option("--explain", "with_reasons", is_flag=True, help="Give each movie the reasons the model had for it (--user only).")
@click.option("--strict", is_flag=True,
              help="--user only: a user the model does not know (and no --ratings or feedback to fold in) is an "
                   "error, exit 65, instead of the popularity list with a note on stderr.")
@OVERRIDES
def recommend(config_path, user_id, all_users, output, ratings_file, n, fmt, with_reasons, strict, overrides) -> None:
    """Top-N movies for one user, a new user (--ratings), or every user (--all).

    A user id the model does not know gets the popularity list, with a note on stderr
    naming the user (--strict: exit 65 instead)."""

    cfg = load_cfg(config_path, overrides)
    n = n or cfg.recommend.n
    if all_users == bool(user_id):
        raise click.UsageError("give exactly one of --user ID or --all")
    if all_users:
        if with_reasons or ratings_file or strict:
            raise click.UsageError("--explain, --ratings and --strict work with --user, not with --all")
        if not output:
            raise click.UsageError("--all needs --output PATH (.csv or .parquet, or - for CSV on stdout)")
        special = output == "-" or (Path(output).exists() and not Path(output).is_file())  # -, /dev/stdout
        if cfg.engine.kind == "ray":
            if output == "-" or Path(output).suffix.lower() in (".csv", ".parquet") or Path(output).is_file():
                raise click.UsageError(f"--output {output}: with engine.kind: ray, --all writes a folder of "
                                       "Parquet part files; give a folder path")
        elif not special and Path(output).suffix.lower() not in (".csv", ".parquet"):
            raise click.UsageError(f"--output {output}: give a .csv or .parquet file (or - for CSV on stdout)")
    elif output:
        raise click.UsageError("--output is for --all; one user's list goes to stdout (--format table|json|csv)")
    if user_id:
        check_utf8("--user", user_id)
    rows = None
    if ratings_file:
        from movierec.data.readers import read_user_ratings

        rows = read_user_ratings(ratings_file, delimiter=cfg.data.delimiter, encoding=cfg.data.encoding)
    from movierec.service import Service

    svc = Service(cfg, require_model=True)  # the same lists, fold-in and reasons as the HTTP service
    if all_users:
        from movierec.feedback import read_events_since

        bundle = svc.require().bundle
        # feedback recorded since the version was trained: folded in at once, not at the next run
        _recommend_all(bundle, cfg, n, read_events_since(cfg.workdir, bundle.meta.get("feedback")), output)
        return
    result = svc.recommend(user_id, n, explain=with_reasons, ratings=rows, strict=strict,
                           where="stdin" if ratings_file == "-" else (ratings_file or "--ratings"))
    if result.get("fallback") == "popularity" and rows is None:
        _unknown_user(user_id, result["user_id"], cfg)
    _print_recs(result, fmt)


def _unknown_user(given: str, user_id: str, cfg) -> None:
    """The model does not know the user: a one-line warning on stderr (the list is the popularity
    fallback; --strict made it an error before this). Under privacy.pseudonymize_ids the note
    names the pseudonym, not the id given."""
    shown = repr(given) if not cfg.privacy.pseudonymize_ids else f"{user_id} (pseudonym of the id given)"
    log.warning("recommend: user %s is unknown to the model: the list is the popularity fallback "
                "(check the id; --strict makes this an error)", shown)


def _recommend_all(bundle, cfg, n: int, events, output: str) -> None:
    from movierec.catalog import atomic_path

    t0 = time.perf_counter()
    if cfg.engine.kind == "ray":
        from movierec.ranking_ray import recommend_all_ray

        # the seen movies stay in the version's file: each task reads its block's rows
        plan = bundle.all_lists_plan(cfg.recommend.exclude_seen, events, cfg.recommend.feedback_weight, lazy_seen=True)
        rows = recommend_all_ray(plan, n, output, cfg.engine)
        log.info("recommend: %d users x %d movies (%d rows) written on Ray to %s/ in %.2fs", plan.n_users, n,
                 rows, output, time.perf_counter() - t0)
        return
    df = bundle.recommend_all(n, cfg.recommend.exclude_seen, events=events,
                              feedback_weight=cfg.recommend.feedback_weight)
    if output == "-":
        write_csv(df, sys.stdout)
    else:
        with atomic_path(output) as tmp:
            if output.lower().endswith(".parquet"):
                df.to_parquet(tmp, index=False)
            else:
                write_csv(df, tmp)
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
        write_csv_rows(["rank", "movie_id", "title", "year", "genres", "predicted_rating", "rank_score"],
                       [[k, it["movie_id"], it["title"], it["year"] or None, it["genres"],
                         None if it["predicted_rating"] is None else float(it["predicted_rating"]),
                         float(it["rank_score"])] for k, it in enumerate(items, 1)], sys.stdout)
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
