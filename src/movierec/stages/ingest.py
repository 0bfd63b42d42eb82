"""ingest: read the CSV files of a data directory, validate them, quarantine bad rows."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from movierec.config import Config
from movierec.data.parts import read_input
from movierec.data.readers import ReadResult, empty_counts
from movierec.data.scale import RatingScale
from movierec.data.schemas import SCHEMAS
from movierec.errors import DataError
from movierec.locations import Remote, location
from movierec.privacy import key_of, pseudonymize_column, pseudonymize_tables

log = logging.getLogger(__name__)

#: fewer valid ratings than this train no model worth promoting (a 1-row file, a typo'd export)
MIN_RATINGS = 10


@dataclass
class IngestResult:
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    quarantine: dict[str, pd.DataFrame] = field(default_factory=dict)
    stats: dict[str, dict] = field(default_factory=dict)


def input_files(cfg: Config) -> dict[str, Path | Remote]:
    """The files ingest reads (present or not), by table name: paths, or URLs
    (:class:`~movierec.locations.Remote`)."""
    files = {name: cfg.data_path(name) for name in ("users", "movies", "reviews", "social")}
    if cfg.split.method == "given":
        files["ratings"] = location(cfg.split.train)
        files["test"] = location(cfg.split.test)
    else:
        files["ratings"] = cfg.data_path("ratings")
    return files


def _check_fraction(res: ReadResult, limit: float) -> None:
    if res.bad_fraction > limit:
        examples = "; ".join(f"{_where(res.quarantine, i)}: {why}"
                             for i, why in enumerate(res.quarantine["reason"].head(3)))
        raise DataError(
            f"{res.path}: {len(res.quarantine)} of {res.total_rows} rows are invalid "
            f"({res.bad_fraction:.1%} > data.max_bad_fraction {limit:.1%}); e.g. {examples}"
        )


def _where(q: pd.DataFrame, i: int) -> str:
    """Where quarantined row ``i`` lies: ``row N``, or ``<part> row N`` for a partitioned table."""
    return (f"{q['file'].iloc[i]} " if "file" in q.columns else "") + f"row {q['row'].iloc[i]}"


def ingest(cfg: Config, events: pd.DataFrame | None = None, *, learnable: bool = False,
           parts_to: Path | None = None) -> IngestResult:
    """Read every present file of the data layout; ``ratings`` is required.

    ``events`` (feedback log, see :mod:`movierec.feedback`) are validated and folded in.
    ``learnable``: refuse ratings a model cannot learn from (:func:`check_learnable`; the
    training stage checks its training part the same way, so a data set is not refused by
    ingest alone: `ingest` of a 3-row import is fine, training on it is not).

    ``parts_to`` (an artifacts folder), with ``engine.kind: ray``: ratings (and test ratings)
    given as a folder of parts are read, validated and written there by Ray workers and
    never loaded here (their table is a :class:`~movierec.data.ray_tables.PartsTable`; see
    :mod:`movierec.data.ray_tables`).

    Raises:
        DataError: a required file or column is missing, a file is unreadable, the
            share of invalid rows in a file passes ``data.max_bad_fraction``, or (see
            ``learnable``) the ratings hold nothing to learn.
    """
    staged: list[Path] = []  # the folders Ray's workers write parts into: removed on failure
    try:
        return _ingest(cfg, events, learnable, parts_to, staged)
    except BaseException:
        for folder in staged:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _ingest(cfg: Config, events: pd.DataFrame | None, learnable: bool, parts_to: Path | None,
            staged: list[Path]) -> IngestResult:
    out = IngestResult()
    rng = (cfg.data.rating_min, cfg.data.rating_max)
    scales = []
    files = input_files(cfg)
    # Ray's parts: the viewers are gathered in the driver only for the check of social ties against them
    ties = all(files[k].exists() for k in ("social", "users"))
    for name, path in files.items():
        schema = SCHEMAS["ratings" if name == "test" else name]
        if name not in ("ratings", "test") and not path.exists():
            log.info("ingest: %s not found at %s; skipping that signal", name, path)
            continue
        opts = {"encoding": cfg.data.encoding, "delimiter": cfg.data.delimiter, "rating_range": rng,
                "redact": cfg.privacy.pseudonymize_ids}
        if parts_to is not None and cfg.engine.kind == "ray" and name in ("ratings", "test") and path.is_dir():
            from movierec.data.parts import part_files
            from movierec.data.ray_tables import ingest_parts, staging_folder

            staged.append(staging_folder(parts_to, f"{name}_raw"))
            res = ingest_parts(path, part_files(path), schema, cfg.engine, staged[-1], key_of(cfg.privacy),
                               users=ties, **opts)
        else:
            # (on Ray, the texts of a partitioned table are hashed by its workers)
            res = read_input(path, schema, engine=cfg.engine, keyed="text" in schema.text, **opts)
        _check_fraction(res, cfg.data.max_bad_fraction)
        if res.scale is not None:
            scales.append(res.scale)
        out.tables[name] = res.valid
        out.quarantine[name] = res.quarantine
        out.stats[name] = {"rows": res.total_rows, "valid": len(res.valid), "quarantined": len(res.quarantine)}
        if len(res.quarantine):
            log.warning(
                "ingest: %s: %d of %d rows quarantined (first: %s, %s)",
                path.name, len(res.quarantine), res.total_rows, _where(res.quarantine, 0),
                res.quarantine["reason"].iloc[0],
            )
    if out.tables["ratings"].empty:
        raise DataError(f"{input_files(cfg)['ratings']}: no valid ratings rows")
    scale = _rating_scale(out, scales)
    out.stats["rating_scale"] = scale.to_dict()
    _check_review_ratings(out, scale)
    key = key_of(cfg.privacy)
    if key is not None:  # from here on, no raw user id exists (Ray's parts: hashed by their workers)
        pseudonymize_tables({k: v for k, v in out.tables.items() if isinstance(v, pd.DataFrame)}, key)
        pseudonymize_tables(out.quarantine, key)
    if events is not None and len(events):
        _fold_feedback(out, events, cfg, scale)
    _cross_checks(out, input_files(cfg))
    if learnable:
        r = out.tables["ratings"]
        check_learnable(r["rating"] if isinstance(r, pd.DataFrame) else r, input_files(cfg)["ratings"])
    out.stats["input_checks"] = _input_stats(out)
    return out


def check_learnable(ratings, where, min_ratings: int = MIN_RATINGS) -> None:
    """Refuse ratings that train nothing: fewer than ``min_ratings``, or all alike (a model
    fitted on them predicts that one value and would still pass the quality gate).

    ``ratings``: the ratings, or a :class:`~movierec.data.ray_tables.PartsTable` (its range
    and count, as its workers found them).

    Raises:
        DataError: naming ``where`` and why (exit 65).
    """
    if hasattr(ratings, "rated"):
        n, lo, hi = ratings.rated, ratings.rating_min, ratings.rating_max
    else:
        r = np.asarray(ratings)
        if r.dtype.kind != "f":
            r = r.astype(np.float64)
        finite = np.isfinite(r)
        if not finite.all():  # (no copy of 20M ratings where all are numbers)
            r = r[finite]
        n = len(r)
        lo, hi = (float(r.min()), float(r.max())) if n else (np.inf, -np.inf)
    if n < min_ratings:
        raise DataError(f"{where}: {n} valid rating{'s' if n != 1 else ''}: at least {min_ratings} "
                        "needed to train a model")
    if lo == hi:
        raise DataError(f"{where}: every rating is {lo:g}: nothing to learn (a model needs ratings that differ)")


def _rating_scale(out: IngestResult, scales: list) -> RatingScale:
    """One scale for the ratings files (the training and test files of a given split)."""
    if not scales:  # every rating was bad: caught as "no valid ratings" before this
        raise DataError("no rating could be read, so the rating scale is unknown")
    s = RatingScale.union(scales)
    log.info("ingest: rating scale %s", s.describe())
    if s.lo < 0 and s.inferred:
        log.warning("ingest: ratings go down to %g: if that is not the scale, set data.rating_min", s.lo)
    return s


def _check_review_ratings(out: IngestResult, scale) -> None:
    """A review's rating outside the scale is dropped (the review stays, unrated)."""
    rv = out.tables.get("reviews")
    if rv is None or "rating" not in rv.columns or not len(rv):
        return
    r = rv["rating"].to_numpy(np.float64)
    bad = ~np.isnan(r) & ~scale.contains(r)
    if bad.any():
        rv = rv.copy()
        rv.loc[bad, "rating"] = np.nan
        out.tables["reviews"] = rv
        out.stats["reviews"]["ratings_dropped"] = int(bad.sum())
        log.warning("ingest: %d review ratings outside the rating scale %s dropped (the reviews are kept)",
                    int(bad.sum()), scale.describe())


def _fold_feedback(out: IngestResult, events: pd.DataFrame, cfg: Config, scale) -> None:
    from movierec.feedback import fold_events

    ev = events.copy()
    key = key_of(cfg.privacy)
    done = ev["pseudonymized"].fillna(False).astype(bool) if "pseudonymized" in ev.columns \
        else pd.Series(False, index=ev.index)
    ev = ev.drop(columns="pseudonymized", errors="ignore")
    if key is None and done.any():
        raise DataError("feedback log: events hold pseudonymous ids but privacy.pseudonymize_ids is off")
    if key is not None and (~done).any():  # events written before privacy was turned on
        for col in ("user_id", "share_with"):
            if col in ev.columns:
                ev.loc[~done, col] = pseudonymize_column(ev.loc[~done, col], key).to_numpy()
    ids_ok = (ev["user_id"].astype(str).str.strip() != "") & (ev["movie_id"].astype(str).str.strip() != "")
    r = pd.to_numeric(ev["rating"], errors="coerce")
    bad_r = ev["rating"].notna() & ~pd.Series(scale.contains(r.to_numpy(np.float64)), index=ev.index)
    # a movie no file knows is a typo, not a new title: it must not become recommendable
    ratings = out.tables["ratings"]
    parts = not isinstance(ratings, pd.DataFrame)  # Ray's parts: what their workers counted
    known = set(ratings.movie_counts.index.astype(str) if parts else ratings["movie_id"].astype(str))
    for name in ("movies", "test", "reviews"):
        if name in out.tables:
            known.update(out.tables[name]["movie_id"].astype(str))
    bad_m = ~ev["movie_id"].astype(str).str.strip().isin(known)
    bad = ~ids_ok | bad_r | bad_m
    if bad.any():
        q = ev[bad].copy()
        reason = np.where(~ids_ok[bad], "empty user or movie id",
                          np.where(bad_r[bad], f"rating outside the rating scale {scale.describe()}",
                                   "movie found in no input file"))
        q.insert(0, "reason", reason)
        q.insert(0, "row", (np.flatnonzero(bad) + 1))
        out.quarantine["feedback"] = q
        log.warning("ingest: %d feedback events quarantined", int(bad.sum()))
    share = cfg.refresh.share_rating if cfg.refresh.share_rating is not None else cfg.evaluate.relevance_threshold
    hooks = {}
    if parts:  # the ratings stay in their parts: shares looked up by Ray tasks, new ratings a part more
        from movierec.data.ray_tables import append_part, rated_pairs

        hooks = {"rated_pairs": lambda u, m: rated_pairs(ratings, cfg.engine, u, m),
                 "append_ratings": lambda frame: append_part(ratings, frame)}
    counts = fold_events(out.tables, ev[~bad], share, **hooks)
    out.stats["feedback"] = {**counts, "quarantined": int(bad.sum())}
    log.info("ingest: feedback folded in: %d ratings, %d comments, %d shares",
             counts["ratings"], counts["comments"], counts["shares"])


def _input_stats(out: IngestResult) -> dict:
    """Figures the nightly run compares with the last good run (see refresh.input_checks)."""
    stats: dict = {"ratings_rows": int(len(out.tables["ratings"]))}
    if "rating_scale" in out.stats:
        stats["rating_scale"] = [out.stats["rating_scale"]["min"], out.stats["rating_scale"]["max"]]
    movies = out.tables.get("movies")
    ratings = out.tables["ratings"]
    if movies is not None and len(movies):
        known = set(movies["movie_id"])
        if isinstance(ratings, pd.DataFrame):
            stats["unknown_movie_share"] = float((~ratings["movie_id"].isin(known)).mean())
        else:  # parts on Ray: from their per-movie counts
            c = ratings.movie_counts
            stats["unknown_movie_share"] = float(c[~c.index.isin(list(known))].sum() / max(len(ratings), 1))
    nulls = {}
    for name, df in out.tables.items():
        # (a table in parts on Ray: its workers counted them)
        counts = empty_counts(df) if isinstance(df, pd.DataFrame) else df.nulls
        nulls.update({f"{name}.{c}": n / len(df) if len(df) else 0.0 for c, n in counts.items()})
    stats["null_share"] = nulls
    return stats


def _cross_checks(out: IngestResult, files: dict[str, Path]) -> None:
    """Social ties must join known users where a users file defines them."""
    social = out.tables.get("social")
    users = out.tables.get("users")
    if social is None or users is None or social.empty:
        return
    known = set(users["user_id"])
    for name in ("ratings", "test", "reviews"):
        if name in out.tables:
            t = out.tables[name]
            known.update(t["user_id"] if isinstance(t, pd.DataFrame) else t.user_ids)
    unknown = ~social["user_id"].isin(known) | ~social["friend_id"].isin(known)
    if unknown.any():
        q = social[unknown].copy()
        q.insert(0, "reason", "tie to a user found in no other file")
        q.insert(0, "row", -1)
        out.quarantine["social"] = pd.concat([out.quarantine.get("social"), q], ignore_index=True)
        out.tables["social"] = social[~unknown].reset_index(drop=True)
        out.stats["social"]["quarantined"] += int(unknown.sum())
        out.stats["social"]["valid"] -= int(unknown.sum())
        log.warning("ingest: %s: %d ties to unknown users quarantined", files["social"].name, int(unknown.sum()))


def input_texts(cfg: Config, workdir: str | Path | None = None, skip: tuple[str, ...] = (),
                done: Callable[[], bool] = lambda: False):
    """The texts in the inputs, normalised as at ingest, a source at a time (a Series or a
    list): review texts, social message texts, then feedback comments; a source is read only
    while ``done()`` is false. ``skip``: inputs not to read (``reviews``, ``social``: their
    parts are read by Ray tasks)."""
    from movierec.data.readers import normalize_text
    from movierec.feedback import read_events

    files = input_files(cfg)
    for name in ("reviews", "social"):
        path = files[name]
        if name not in skip and not done() and path.exists():
            res = read_input(path, SCHEMAS[name], engine=cfg.engine, encoding=cfg.data.encoding,
                             delimiter=cfg.data.delimiter, rating_range=(cfg.data.rating_min, cfg.data.rating_max))
            if "text" in res.valid.columns:
                yield res.valid["text"]
    if workdir is not None and not done():
        events = read_events(workdir)
        if events is not None and "comment" in events.columns:
            yield events["comment"].dropna().astype(str).map(normalize_text)


def load_texts(cfg: Config, keys: set[str], workdir: str | Path | None = None) -> dict[str, str]:
    """The texts behind ``keys`` (hashes held by artifacts), read again from the input files:
    review texts, social message texts and feedback comments, normalised as at ingest (on
    Ray, with inputs in parts: :class:`movierec.sentiment.ray_gather.TextGatherer`).

    Raises:
        DataError: some texts are no longer in the inputs (they changed since ingest).
    """
    from movierec.privacy import key_of_text

    want = set(keys)
    found: dict[str, str] = {}
    for texts in input_texts(cfg, workdir, done=lambda: len(found) >= len(want)):
        for t in texts:
            if isinstance(t, str) and t:
                k = key_of_text(t)
                if k in want:
                    found[k] = t
    if len(found) < len(want):
        raise texts_gone(cfg, len(want) - len(found))
    return found


def texts_gone(cfg: Config, n: int) -> DataError:
    """The error for ``n`` texts to score that the inputs no longer have."""
    files = input_files(cfg)
    return DataError(f"{n} texts to score are no longer in {files['reviews']} or {files['social']}: the inputs "
                     "changed since ingest; run the pipeline again")
