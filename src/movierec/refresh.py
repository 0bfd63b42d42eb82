"""``movierec run``: the nightly refresh that never loses the last good model.

Under the workdir lock: clear temporary files a killed run left, run the stale stages
(checking the new input against the last good run's), train a candidate model into a new
version directory, score it and the current model on the same holdout, and switch
``models/current`` to it only if the quality gate passes. A rejected model stays on disk
for inspection. Old versions beyond ``refresh.keep`` are removed (never the current one).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from movierec.catalog import Catalog, write_json
from movierec.config import Config
from movierec.errors import DataError, GateError, ModelError

log = logging.getLogger("movierec")


def cleanup_temp(cat: Catalog) -> int:
    """Remove temporary files and folders left by a killed run (call under the lock)."""
    n = 0
    for folder, patterns in ((cat.models_dir, (".tmp-*", ".current.*")),
                             (cat.artifacts_dir, (".*.tmp",)), (cat.manifests_dir, (".*.tmp",)),
                             (cat.workdir / "cache", (".*.tmp",)), (cat.workdir / "runs", (".*.tmp",))):
        if not folder.exists():
            continue
        for pat in patterns:
            for p in folder.glob(pat):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                n += 1
    if n:
        log.info("run: removed %d temporary files left by an interrupted run", n)
    return n


def input_checks(now: dict, last: dict | None, cfg: Config) -> list[str]:
    """Reasons to distrust today's input, compared with the last good run's."""
    r = cfg.refresh
    problems = []
    if now.get("unknown_movie_share", 0.0) > r.max_unknown_movie_share:
        problems.append(f"{now['unknown_movie_share']:.1%} of ratings name movies missing from movies.csv "
                        f"(limit refresh.max_unknown_movie_share {r.max_unknown_movie_share:.0%})")
    if last:
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


def bundle_scorer(bundle, user_ids, movie_ids):
    """A scorer for a saved model over *today's* id space (unknown ids fall back to biases)."""
    from movierec.evaluation.evaluate import Scorer

    um = bundle.user_ids.get_indexer(user_ids)
    mm = bundle.movie_ids.get_indexer(movie_ids)
    ku, km = um >= 0, mm >= 0

    def remap(vectors):
        mu, bu, bi, U, Q = vectors
        return (mu, np.where(ku, bu[np.maximum(um, 0)], 0).astype(np.float32),
                np.where(km, bi[np.maximum(mm, 0)], 0).astype(np.float32),
                np.where(ku[:, None], U[np.maximum(um, 0)], 0).astype(np.float32),
                np.where(km[:, None], Q[np.maximum(mm, 0)], 0).astype(np.float32))

    mu, bu_n, bi_n, U_n, Q_n = remap(bundle.rating_vectors)
    lo, hi = bundle.model.rating_min_, bundle.model.rating_max_

    def predict(us, its):
        return np.clip(mu + bu_n[us] + bi_n[its] + np.einsum("ij,ij->i", U_n[us], Q_n[its]), lo, hi)

    return Scorer(predict, vectors=remap(bundle.vectors))


def score_on_holdout(cfg: Config, cat: Catalog, model_dir: Path) -> dict:
    from movierec.evaluation.evaluate import score
    from movierec.ranking import ModelBundle
    from movierec.stages.clean import train_test

    ratings = cat.read("ratings_clean")
    train, test = train_test(ratings, cfg.split.fold)
    uids = cat.read("user_ids")["user_id"].astype(str).to_numpy()
    mids = cat.read("movie_ids")["movie_id"].astype(str).to_numpy()
    scorer = bundle_scorer(ModelBundle.load(model_dir), uids, mids)
    return score(scorer, train, test, len(uids), len(mids), cfg)


def gate(new: dict, cur: dict | None, cfg: Config) -> tuple[bool, list[str]]:
    """Promote unless RMSE or NDCG@K regress past the configured tolerances."""
    if cur is None or "rmse" not in cur:
        return True, ["no current model to compare with"]
    r, k = cfg.refresh, max(cfg.evaluate.k)
    reasons, ok = [], True
    if new["rmse"] > cur["rmse"] + r.max_rmse_increase:
        ok = False
        reasons.append(f"RMSE {new['rmse']:.4f} > current {cur['rmse']:.4f} + {r.max_rmse_increase}")
    else:
        reasons.append(f"RMSE {new['rmse']:.4f} vs current {cur['rmse']:.4f}")
    key = f"ndcg@{k}"
    if key in new and key in cur:
        if new[key] < cur[key] * (1 - r.max_ndcg_drop):
            ok = False
            reasons.append(f"{key} {new[key]:.4f} < current {cur[key]:.4f} - {r.max_ndcg_drop:.0%}")
        else:
            reasons.append(f"{key} {new[key]:.4f} vs current {cur[key]:.4f}")
    return ok, reasons


def versions(cat: Catalog) -> list[str]:
    if not cat.models_dir.exists():
        return []
    return sorted(p.name for p in cat.models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def version_status(cat: Catalog, version: str) -> dict:
    d = cat.models_dir / version
    out = {"version": version}
    for name in ("meta.json", "gate.json", "metrics.json"):
        p = d / name
        if p.exists():
            try:
                out[name.split(".")[0]] = json.loads(p.read_text())
            except json.JSONDecodeError:
                pass
    return out


def apply_retention(cat: Catalog, keep: int, current: str | None) -> list[str]:
    removed = []
    vs = versions(cat)
    keep_set = set(vs[-keep:]) if keep > 0 else set()
    if current:
        keep_set.add(current)
    for v in vs:
        if v not in keep_set:
            shutil.rmtree(cat.models_dir / v, ignore_errors=True)
            removed.append(v)
    if removed:
        log.info("run: removed %d old model versions (refresh.keep=%d)", len(removed), keep)
    return removed


def refresh(cfg: Config) -> dict:
    """The whole nightly run (the caller holds the workdir lock). Returns the run summary.

    Raises:
        DataError: the input is invalid or looks suspicious next to the last good run's.
        GateError: the new model did not pass the quality gate (current one kept).
    """
    from movierec._faults import failpoint
    from movierec.pipeline import current_version, ensure, is_fresh, set_current, trained_model_dir

    t0 = time.perf_counter()
    cat = Catalog(Path(cfg.workdir))
    runs = cat.workdir / "runs"
    summary: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stages": {}}

    def finish(outcome: str, version_dir: Path | None = None) -> dict:
        summary["outcome"] = outcome
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        summary["current"] = current_version(cfg)
        if version_dir is not None:
            write_json(summary, version_dir / "run.json")
        write_json(summary, runs / "last.json")
        return summary

    cleanup_temp(cat)
    seen: set = set()
    try:
        summary["stages"].update(ensure(cfg, "ingest", reported=seen))
        now = (cat.read_manifest("ingest") or {}).get("stats", {}).get("input_checks", {})
        last_good = runs / "last_good_input.json"
        last = json.loads(last_good.read_text()) if last_good.exists() else None
        problems = input_checks(now, last, cfg)
        if problems:
            raise DataError("suspicious input, run stopped before training: " + "; ".join(problems))
        summary["stages"].update(ensure(cfg, "fuse", reported=seen))
        current = current_version(cfg)
        if cfg.refresh.retrain != "always" and current is not None and is_fresh("train", cfg, cat):
            latest = trained_model_dir(cfg).name
            summary["stages"]["train"] = "skipped"
            note = "nothing changed" if latest == current else f"nothing changed since candidate {latest} was rejected"
            log.info("run: %s; current model %s kept", note, current)
            return finish("unchanged")
        summary["stages"].update(ensure(cfg, "train", force=cfg.refresh.retrain == "always", reported=seen))
    except (DataError, ModelError) as exc:
        summary["error"] = str(exc)
        finish("failed")
        raise
    new_dir = trained_model_dir(cfg)
    summary["version"] = new_dir.name
    if cfg.split.method == "none":
        log.warning("run: split.method is none: no holdout, %s promoted without a quality gate", new_dir.name)
        ok, reasons, m_new, m_cur = True, ["no holdout (split.method none)"], {}, None
    else:
        m_new = score_on_holdout(cfg, cat, new_dir)
        cur_dir = cat.models_dir / current if current else None
        m_cur = score_on_holdout(cfg, cat, cur_dir) if cur_dir is not None and cur_dir.exists() else None
        ok, reasons = gate(m_new, m_cur, cfg)
    summary["metrics"] = {"new": m_new, "current": m_cur}
    summary["gate"] = {"passed": ok, "reasons": reasons}
    write_json(m_new, new_dir / "metrics.json")
    write_json({"status": "promoted" if ok else "rejected", "reasons": reasons, "compared_with": current},
               new_dir / "gate.json")
    if not ok:
        finish("rejected", new_dir)
        raise GateError(f"model {new_dir.name} rejected by the quality gate ({'; '.join(reasons)}); "
                        f"{current} keeps serving")
    failpoint("promote")
    set_current(cat, new_dir.name)
    log.info("run: model %s promoted (%s)", new_dir.name, "; ".join(reasons))
    write_json(now, last_good)
    summary["removed_versions"] = apply_retention(cat, cfg.refresh.keep, new_dir.name)
    return finish("promoted", new_dir)


def rollback(cfg: Config, version: str | None = None) -> str:
    """Point ``current`` at ``version`` (default: the last good version before current)."""
    from movierec.pipeline import current_version, set_current
    from movierec.ranking import ModelBundle

    cat = Catalog(Path(cfg.workdir))
    cur = current_version(cfg)
    vs = versions(cat)
    if version is None:
        older = [v for v in vs if cur is None or v < cur]
        good = [v for v in older if version_status(cat, v).get("gate", {}).get("status", "promoted") == "promoted"]
        if not good:
            raise ModelError(f"no earlier good model version to roll back to (current: {cur})")
        version = good[-1]
    if version not in vs:
        raise ModelError(f"no model version {version!r} in {cat.models_dir} (have: {', '.join(vs) or 'none'})")
    ModelBundle.load(cat.models_dir / version)  # must load before it serves
    set_current(cat, version)
    log.info("models: current is now %s (was %s)", version, cur)
    return version
