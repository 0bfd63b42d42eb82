"""``movierec run``: the nightly refresh that never loses the last good model.

Under the workdir lock: clear temporary files a killed run left, run the stale stages
(checking the new input against the last good run's), train a candidate version (a holdout
model on the training part, and the served model refit on everything), score its holdout
model and the current version's on the same holdout, and promote it (switch
``models/current``) only if the quality gate passes. A rejected version stays on disk for
inspection. Versions are owned by :mod:`movierec.registry`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from movierec.catalog import Catalog, write_json
from movierec.config import Config
from movierec.errors import DataError, GateError, ModelError
from movierec.evaluation.evaluate import bundle_recommender, measure_users
from movierec.pipeline import cleanup_temp, ensure, is_fresh, trained_model_dir
from movierec.stages.clean import split_identity, train_test

log = logging.getLogger("movierec")


def input_checks(now: dict, last: dict | None, cfg: Config) -> list[str]:
    """Reasons to distrust today's input, compared with the last good run's."""
    r = cfg.refresh
    problems = []
    if now.get("unknown_movie_share", 0.0) > r.max_unknown_movie_share:
        problems.append(f"{now['unknown_movie_share']:.1%} of ratings name movies missing from movies.csv "
                        f"(limit refresh.max_unknown_movie_share {r.max_unknown_movie_share:.0%})")
    if last:
        old, new = last.get("rating_scale"), now.get("rating_scale")
        if old and new:
            width = max(old[1] - old[0], 1e-9)
            if max(abs(new[0] - old[0]), abs(new[1] - old[1])) > r.max_scale_change * width:
                problems.append(f"the rating scale changed from {old[0]:g}..{old[1]:g} to {new[0]:g}..{new[1]:g} "
                                f"(limit refresh.max_scale_change {r.max_scale_change:.0%} of the last good run's "
                                "width; set data.rating_min/max if the new scale is right)")
        before, rows = last.get("ratings_rows", 0), now.get("ratings_rows", 0)
        if before and rows < r.min_rows_ratio * before:
            problems.append(f"ratings rows fell from {before} to {rows} "
                            f"(below refresh.min_rows_ratio {r.min_rows_ratio:.0%} of the last good run)")
        for col, share in now.get("null_share", {}).items():
            old = last.get("null_share", {}).get(col)
            if old is not None and share - old > r.max_null_increase:
                problems.append(f"empty values in {col} rose from {old:.0%} to {share:.0%} "
                                f"(limit refresh.max_null_increase {r.max_null_increase:.0%})")
    return problems


def score_on_holdout(cfg: Config, cat: Catalog, version: str) -> dict | None:
    """See :func:`holdout_metrics` (the metrics alone)."""
    got = holdout_metrics(cfg, cat, version)
    return None if got is None else got[0]


def holdout_metrics(cfg: Config, cat: Catalog, version: str):
    """Holdout metrics of a version's measured model (holdout.npz) on today's test part.

    Random and k-fold splits hash each (user, movie) pair, so a rating stays in its part as
    data grows: neither the candidate's nor the current version's holdout model trained on
    today's test ratings. None when the version has no holdout model (split none).
    """
    from movierec.registry import HOLDOUT, Registry

    reg = Registry(cat.models_dir)
    if not reg.get(version).has(HOLDOUT):
        return None
    ratings = cat.read("ratings_clean")
    train, test = train_test(ratings, cfg.split.fold)
    uids = cat.read("user_ids")["user_id"].astype(str).to_numpy()
    mids = cat.read("movie_ids")["movie_id"].astype(str).to_numpy()
    scorer = bundle_recommender(reg.load(version, HOLDOUT), uids, mids)
    return measure_users(scorer, train, test, len(uids), len(mids), cfg)


def gate(new: dict, cur: dict | None, cfg: Config, tests: dict | None = None) -> tuple[bool, list[str]]:
    """Promote unless RMSE or NDCG@K regress past the configured tolerances.

    With ``refresh.gate_test: paired`` (and ``tests``, the paired tests of the new holdout
    model against the current one over the same users), a regression past the tolerance
    rejects only when it is also significant (p below 1 - evaluate.confidence): noise alone
    never blocks a night's model."""
    if cur is None or "rmse" not in cur:
        return True, ["no current model to compare with"]
    r, k = cfg.refresh, max(cfg.evaluate.k)
    alpha = 1 - cfg.evaluate.confidence
    paired = r.gate_test == "paired" and tests is not None

    def noise(metric: str) -> str | None:
        t = (tests or {}).get(metric)
        if paired and t is not None and t["p_value"] >= alpha:
            return f" but within noise (p = {t['p_value']:.3f}), kept"
        return None

    reasons, ok = [], True
    if new["rmse"] > cur["rmse"] + r.max_rmse_increase:
        why = noise("rmse")
        ok = ok and why is not None
        reasons.append(f"RMSE {new['rmse']:.4f} > current {cur['rmse']:.4f} + {r.max_rmse_increase}{why or ''}")
    else:
        reasons.append(f"RMSE {new['rmse']:.4f} vs current {cur['rmse']:.4f}")
    key = f"ndcg@{k}"
    if key in new and key in cur:
        if new[key] < cur[key] * (1 - r.max_ndcg_drop):
            why = noise(key)
            ok = ok and why is not None
            reasons.append(f"{key} {new[key]:.4f} < current {cur[key]:.4f} - {r.max_ndcg_drop:.0%}{why or ''}")
        else:
            reasons.append(f"{key} {new[key]:.4f} vs current {cur[key]:.4f}")
    return ok, reasons


class _Run:
    """The run summary of :func:`refresh` and how it ends (recorded in runs/last.json and in
    the version's run.json)."""

    def __init__(self, cfg: Config, cat: Catalog, reg) -> None:
        self.cfg, self.reg, self.t0 = cfg, reg, time.perf_counter()
        self.runs = cat.workdir / "runs"
        self.last_good = self.runs / "last_good_input.json"
        self.summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stages": {}}

    def record(self, report: dict[str, str]) -> None:
        for stage, what in report.items():  # a stage that ran in this run stays "ran"
            if self.summary["stages"].get(stage) != "ran":
                self.summary["stages"][stage] = what

    def finish(self, outcome: str, version: str | None = None) -> dict:
        from movierec.registry import RUN

        s = self.summary
        s["outcome"] = outcome
        s["seconds"] = round(time.perf_counter() - self.t0, 3)
        s["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            s["current"] = self.reg.current_name()
        except ModelError:
            s["current"] = None
        if version is not None:
            self.reg.write_file(version, RUN, s)
        write_json(s, self.runs / "last.json")
        return s

    def promote(self, version: str, now: dict, note: str) -> dict:
        from movierec._faults import failpoint

        failpoint("promote")
        self.reg.promote(version)
        log.info("run: model %s promoted (%s)", version, note)
        write_json(now, self.last_good)
        self.summary["removed_versions"] = self.reg.apply_retention(self.cfg.refresh.keep)
        return self.finish("promoted", version)


def _compare(cfg: Config, cat: Catalog, reg, candidate: str, current: str | None,
             summary: dict) -> tuple[bool, list[str], dict, dict | None]:
    """Score the candidate's and the current version's holdout models on today's holdout
    and apply the gate: (passed, reasons, new metrics, current metrics)."""
    if cfg.split.method == "none":
        log.warning("run: split.method is none: no holdout, %s promoted without a quality gate", candidate)
        return True, ["no holdout (split.method none)"], {}, None
    got = holdout_metrics(cfg, cat, candidate)
    m_new, us_new = got if got is not None else ({}, None)
    m_cur, us_cur, cur_note = None, None, None
    current_for_gate = current
    if current is not None and reg.get(current).meta.get("split") not in (None, split_identity(cfg)):
        # its holdout model may have trained on today's test ratings: no fair comparison
        cur_note = (f"current model {current} was measured on another split "
                    f"({reg.get(current).meta.get('split')}); not compared")
        log.warning("run: %s", cur_note)
        current_for_gate = None
    if current_for_gate is not None:
        try:
            got = holdout_metrics(cfg, cat, current_for_gate)
            m_cur, us_cur = got if got is not None else (None, None)
        except ModelError as exc:  # gone, damaged or of an old format: it cannot serve either
            cur_note = f"current model {current} could not be scored ({exc})"
            log.warning("run: %s", cur_note)
    tests = None
    if cfg.refresh.gate_test == "paired" and us_new is not None and us_cur is not None:
        from movierec.evaluation.stats import paired

        tests = paired(us_new, us_cur, ["rmse", f"ndcg@{max(cfg.evaluate.k)}"], cfg.evaluate.bootstrap_rounds,
                       cfg.evaluate.bootstrap_seed, cfg.evaluate.confidence)
        summary["paired_test"] = tests
    ok, reasons = gate(m_new, m_cur, cfg, tests)
    if cur_note:
        reasons.append(cur_note)
    return ok, reasons, m_new, m_cur


def refresh(cfg: Config) -> dict:
    """The whole nightly run (the caller holds the workdir lock). Returns the run summary.

    The train stage writes a complete candidate version: the holdout model (training part)
    and the served model (refit on every rating). The gate scores the candidate's holdout
    model and the current version's on the same holdout; only a passing candidate is
    promoted. A candidate that passed but was not promoted (the run was killed in between)
    is promoted by the next run; one that was never gated is gated by it.

    Raises:
        DataError: the input is invalid or looks suspicious next to the last good run's.
        GateError: the new model did not pass the quality gate (current one kept).
    """
    import movierec.sentiment.scorers as scorers

    allowed = scorers.DOWNLOADS_ALLOWED
    scorers.DOWNLOADS_ALLOWED = cfg.sentiment.download_in_run  # cron: no surprise downloads
    try:
        return _refresh(cfg)
    finally:
        scorers.DOWNLOADS_ALLOWED = allowed


def _damage_of(reg, name: str | None) -> str | None:
    """What is wrong with version ``name``'s files (sizes against its records), or None."""
    if name is None:
        return None
    try:
        return reg.get(name).damage()
    except ModelError as exc:
        return str(exc)


def _check_serving_key(cfg: Config, reg) -> None:
    """The privacy key must be the serving version's: with a mistyped or rotated
    ``MOVIEREC_ID_KEY`` every id would be hashed anew, the gate would score the serving model
    on ids it never saw (and lose), and the new version, promoted, would answer nobody with
    the right key. Raises ConfigError (exit 78) before anything runs; rotating the key on
    purpose is a ``movierec train`` (a new version on the new ids, promoted without a gate:
    no gate can compare models over different ids)."""
    from movierec.privacy import check_key

    try:
        serving = reg.current()
    except ModelError:  # nothing serves yet (or it cannot be read: the gate will say so)
        return
    check_key(serving.meta.get("privacy_key_fingerprint"), cfg.privacy, serving.name)


def _refresh(cfg: Config) -> dict:
    """:func:`refresh`'s body (the download permission is set around it)."""
    from movierec.registry import METRICS, PASSED, REJECTED, ROLLED_BACK, Registry

    cat = Catalog(Path(cfg.workdir))
    reg = Registry(cat.models_dir)
    run = _Run(cfg, cat, reg)
    summary = run.summary
    cleanup_temp(cat)
    try:
        _check_serving_key(cfg, reg)
        run.record(ensure(cfg, "ingest", reported=(seen := set())))
        now = (cat.read_manifest("ingest") or {}).get("stats", {}).get("input_checks", {})
        last = json.loads(run.last_good.read_text()) if run.last_good.exists() else None
        problems = input_checks(now, last, cfg)
        if problems:
            raise DataError("suspicious input, run stopped before training: " + "; ".join(problems))
        run.record(ensure(cfg, "fuse", reported=seen))
        current = reg.current_name()
        candidate = None
        damaged = _damage_of(reg, current)
        if damaged:  # what serves cannot be read: a new version, even if nothing changed
            log.error("run: the serving version %s is damaged (%s); training a new one", current, damaged)
            summary["serving_damaged"] = damaged
        if cfg.refresh.retrain != "always" and current is not None and not damaged and is_fresh("train", cfg, cat):
            latest = trained_model_dir(cfg).name
            summary["stages"]["train"] = "skipped"
            if reg.pending(latest) is not None:
                summary["version"] = latest
                return run.promote(latest, now, "it passed the gate in a run that was interrupted before promoting it")
            if latest == current and reg.get(latest).status == PASSED:
                # a run killed just after the switch: serving, but never marked promoted, no
                # last good input, no retention; finish what it started
                summary["version"] = latest
                return run.promote(latest, now, "finishing the promotion of a run killed after the switch")
            status = reg.get(latest).status if latest != current else None
            if latest == current or status in (REJECTED, ROLLED_BACK):
                why = "was rejected" if status == REJECTED else "was rolled back from"
                note = "nothing changed" if latest == current else f"nothing changed since candidate {latest} {why}"
                log.info("run: %s; current model %s kept", note, current)
                return run.finish("unchanged")
            candidate = latest  # trained but never gated (a run killed before its gate)
            log.info("run: candidate %s was never gated; gating it now", latest)
        if candidate is None:
            run.record(ensure(cfg, "train", force=cfg.refresh.retrain == "always" or bool(damaged), reported=seen))
            candidate = trained_model_dir(cfg).name
        summary["version"] = candidate
        ok, reasons, m_new, m_cur = _compare(cfg, cat, reg, candidate, current, summary)
        summary["metrics"] = {"new": m_new, "current": m_cur}
        summary["gate"] = {"passed": ok, "reasons": reasons}
        reg.write_file(candidate, METRICS, m_new)
        reg.set_gate(candidate, PASSED if ok else REJECTED, reasons, current)
        if not ok:
            run.finish("rejected", candidate)
            raise GateError(f"model {candidate} rejected by the quality gate ({'; '.join(reasons)}); "
                            f"{current} keeps serving")
        return run.promote(candidate, now, "; ".join(reasons))
    except GateError:
        raise
    except Exception as exc:
        # every failure is recorded (disk full, a bug), not only bad data and models
        summary["error"] = f"{exc.__class__.__name__}: {exc}" if not isinstance(exc, (DataError, ModelError)) else str(exc)
        try:
            run.finish("failed")
        except OSError:
            pass
        raise


def rollback(cfg: Config, version: str | None = None) -> str:
    """Point ``current`` at ``version`` (default: the last good version before current)."""
    from movierec.registry import Registry

    return Registry.of(cfg).rollback(version)
