"""Online A/B tests: two versions, viewers split by a stable hash, exposures, attribution.

``serve.experiment`` names two model versions (control first) and the share of viewers
the second one serves. A viewer's arm is a threshold on the SHA-256 of the experiment's
name and their model id (a pseudonym where ids are), so it never changes while the test
runs and a viewer gets the same arm from every worker, the CLI and the Python API.

Every list made for a viewer while a test runs is logged as an **exposure**, one JSON line
in ``workdir/serve/exposures.jsonl``: time, experiment, arm, version, viewer, movies (in
order). Feedback (``movierec feedback``, ``POST /feedback``) on a listed movie within
``attribution_hours`` of the list counts for the arm that listed it (the latest such list).

:func:`report` (``movierec experiment report``) gives per arm: lists, viewers, the **hit
rate** (share of lists with a positive interaction with a listed movie: a rating at or
above ``evaluate.relevance_threshold``, or a share), the mean of the ratings given to
listed movies, and coverage (share of the catalogue listed at least once), each with a
bootstrap interval over viewers (the unit that was randomised); the difference in hit rate
with a permutation test over viewers and its verdict; and per viewer group (the
``features.group_columns`` of the users table, and activity) the hit rate of each arm and
the gap between the best and worst group (fairness).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from movierec.errors import DataError
from movierec.feedback import append_line

if TYPE_CHECKING:  # pragma: no cover
    from movierec.config import Config
    from movierec.service import Served, Service

ARMS = ("a", "b")


def exposures_path(workdir: str | Path) -> Path:
    return Path(workdir) / "serve" / "exposures.jsonl"


def assign(name: str, user: str, split: float) -> str:
    """The arm of ``user``: "b" for a ``split`` share of viewers, "a" for the rest; stable."""
    h = hashlib.sha256(f"{name}\x00{str(user).strip()}".encode("utf-8")).digest()
    return "b" if int.from_bytes(h[:8], "big") / 2.0 ** 64 < split else "a"


class Experiment:
    """The running test of a :class:`~movierec.service.Service` (its arms' versions are
    loaded once, at start: a version that cannot load stops the service from starting)."""

    def __init__(self, cfg: "Config", service: "Service") -> None:
        ex = cfg.serve.experiment
        self.name, self.versions, self.split = ex.name, list(ex.versions), ex.split
        self.service = service
        self.path = exposures_path(cfg.workdir)
        for v in self.versions:
            if v != "current":
                service.version(v)

    def served_for(self, user: str) -> tuple["Served", str]:
        arm = assign(self.name, user, self.split)
        return self.service.version(self.versions[ARMS.index(arm)]), arm

    def expose(self, user: str, arm: str | None, version: str, result: dict) -> None:
        """Log the list as an exposure (not fsynced: a crash may lose the last lines, never
        tear one)."""
        append_line(self.path, {"time": time.time(), "experiment": self.name, "arm": arm, "version": version,
                                "user_id": str(user), "movies": [it["movie_id"] for it in result["items"]]},
                    "serve: the exposure log", "the exposure was not logged", durable=False)

    def describe(self) -> dict:
        arms = {}
        for arm, v, share in zip(ARMS, self.versions, (1 - self.split, self.split)):
            resolved = self.service.served.name if v == "current" and self.service.served else v
            arms[arm] = {"version": resolved, "share": round(share, 4)}
        return {"name": self.name, "arms": arms, "exposure_log": str(self.path)}


# ---------------------------------------------------------------------------- the report
def read_exposures(workdir: str | Path, name: str) -> pd.DataFrame:
    """The exposures of experiment ``name``, one row per listed movie (list, time, arm,
    version, user_id, movie_id, position)."""
    from movierec.feedback import _parse

    p = exposures_path(workdir)
    blob = p.read_bytes() if p.is_file() else b""
    rows = [r for r in _parse(blob[: blob.rfind(b"\n") + 1], p) if r.get("experiment") == name]
    cols = ["list", "time", "arm", "version", "user_id", "movie_id", "position"]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = []
    for k, r in enumerate(rows):
        for pos, m in enumerate(r.get("movies") or []):
            out.append((k, float(r.get("time", 0)), r.get("arm"), r.get("version"), str(r.get("user_id")), str(m), pos))
    lists = pd.DataFrame([(k, float(r.get("time", 0)), r.get("arm"), r.get("version"), str(r.get("user_id")), None, -1)
                          for k, r in enumerate(rows) if not r.get("movies")], columns=cols)
    df = pd.DataFrame(out, columns=cols)
    return pd.concat([df, lists], ignore_index=True) if len(lists) else df


def attribute(exposures: pd.DataFrame, events: pd.DataFrame | None, hours: float, threshold: float) -> pd.DataFrame:
    """Each feedback event on a listed movie, matched to the latest list that showed that
    movie to that viewer at most ``hours`` before it: (list, arm, user_id, movie_id, rating,
    positive)."""
    cols = ["list", "arm", "user_id", "movie_id", "rating", "positive"]
    if events is None or not len(events) or not len(exposures):
        return pd.DataFrame(columns=cols)
    ev = pd.DataFrame({"user_id": events["user_id"].astype(str).str.strip(),
                       "movie_id": events["movie_id"].astype(str).str.strip(),
                       "time": pd.to_numeric(events["time"], errors="coerce"),
                       "rating": pd.to_numeric(events.get("rating"), errors="coerce"),
                       "shared": events.get("share_with", pd.Series(np.nan, index=events.index)).notna()})
    ev = ev[ev["time"].notna()].sort_values("time", kind="stable")
    ex = exposures[exposures["movie_id"].notna()][["list", "time", "arm", "user_id", "movie_id"]]
    ex = ex.sort_values("time", kind="stable")
    m = pd.merge_asof(ev, ex.rename(columns={"time": "shown"}), left_on="time", right_on="shown",
                      by=["user_id", "movie_id"], direction="backward", tolerance=hours * 3600.0)
    m = m[m["list"].notna()]
    m["positive"] = (m["rating"] >= threshold) | m["shared"]
    return m[cols].reset_index(drop=True)


def _per_viewer(exposures: pd.DataFrame, hits: pd.DataFrame) -> pd.DataFrame:
    """Per (arm, viewer): lists, lists with a hit, sum and count of attributed ratings."""
    lists = exposures.drop_duplicates("list")[["list", "arm", "user_id"]]
    hit_lists = set(hits.loc[hits["positive"].astype(bool), "list"].astype(int))
    lists = lists.assign(hit=lists["list"].astype(int).isin(hit_lists).astype(float))
    per = lists.groupby(["arm", "user_id"]).agg(lists=("list", "size"), hits=("hit", "sum")).reset_index()
    rated = hits[hits["rating"].notna()].groupby(["arm", "user_id"])["rating"].agg(["sum", "count"]).reset_index()
    per = per.merge(rated, on=["arm", "user_id"], how="left").fillna({"sum": 0.0, "count": 0})
    return per.rename(columns={"sum": "rating_sum", "count": "rated"})


def _boot(num: np.ndarray, den: np.ndarray, rounds: int, rng: np.random.Generator, level: float) -> list | None:
    """Interval of sum(num)/sum(den) resampling viewers."""
    if len(num) < 2 or rounds < 2 or den.sum() <= 0:
        return None
    idx = rng.integers(0, len(num), size=(rounds, len(num)))
    d = den[idx].sum(1)
    vals = np.where(d > 0, num[idx].sum(1) / np.maximum(d, 1e-12), np.nan)
    vals = vals[np.isfinite(vals)]
    a = (1 - level) / 2
    return [float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))] if len(vals) else None


def _permutation_p(per: pd.DataFrame, observed: float, rounds: int, rng: np.random.Generator) -> float:
    """Two-sided p of the hit-rate difference (b - a), viewers' arms shuffled."""
    lists, hits = per["lists"].to_numpy(float), per["hits"].to_numpy(float)
    is_b = (per["arm"] == "b").to_numpy()
    more = 0
    for _ in range(rounds):
        s = rng.permutation(is_b)
        d = hits[s].sum() / max(lists[s].sum(), 1) - hits[~s].sum() / max(lists[~s].sum(), 1)
        more += abs(d) >= abs(observed) - 1e-12
    return (more + 1) / (rounds + 1)


def report(cfg: "Config", name: str | None = None, rounds: int | None = None) -> dict:
    """The experiment's numbers per arm, the verdict and the group gaps (see the module).

    Raises:
        DataError: no experiment named, or no exposure of it logged.
    """
    from movierec.evaluation.stats import p_words
    from movierec.feedback import read_events

    name = name or cfg.serve.experiment.name
    if not name:
        raise DataError("experiment report: no experiment named (set serve.experiment.name or give --name)")
    ex = read_exposures(cfg.workdir, name)
    if not len(ex):
        raise DataError(f"experiment report: no exposure of experiment {name!r} in {exposures_path(cfg.workdir)} "
                        "(is `movierec serve` running with serve.experiment set?)")
    rounds = cfg.evaluate.bootstrap_rounds if rounds is None else rounds
    level = cfg.evaluate.confidence
    rng = np.random.default_rng(cfg.evaluate.bootstrap_seed)
    hits = attribute(ex, read_events(cfg.workdir), cfg.serve.experiment.attribution_hours,
                     cfg.evaluate.relevance_threshold)
    per = _per_viewer(ex, hits)
    catalogue = _catalogue_sizes(cfg, ex)
    arms = {}
    for arm in ARMS:
        pa = per[per["arm"] == arm]
        ea = ex[ex["arm"] == arm]
        if not len(pa):
            continue
        listed = ea["movie_id"].dropna().unique()
        versions = sorted(ea["version"].dropna().unique())
        size = max([catalogue.get(v, 0) for v in versions] or [0])
        rated = float(pa["rated"].sum())
        arms[arm] = {
            "versions": versions,
            "lists": int(pa["lists"].sum()), "viewers": int(len(pa)),
            "hit_rate": float(pa["hits"].sum() / pa["lists"].sum()),
            "hit_rate_ci": _boot(pa["hits"].to_numpy(float), pa["lists"].to_numpy(float), rounds, rng, level),
            "rated_exposures": int(rated),
            "mean_rating": float(pa["rating_sum"].sum() / rated) if rated else None,
            "mean_rating_ci": _boot(pa["rating_sum"].to_numpy(float), pa["rated"].to_numpy(float), rounds, rng, level)
            if rated else None,
            "coverage": float(len(listed) / size) if size else None,
            "movies_listed": int(len(listed)),
        }
    out = {"experiment": name, "attribution_hours": cfg.serve.experiment.attribution_hours,
           "relevance_threshold": cfg.evaluate.relevance_threshold, "confidence": level, "arms": arms,
           "feedback_attributed": int(len(hits))}
    if len(arms) == 2:
        diff = arms["b"]["hit_rate"] - arms["a"]["hit_rate"]
        p = _permutation_p(per, diff, max(rounds, 1), rng) if rounds else float("nan")
        sig = rounds and p < 1 - level
        words = p_words(p, rounds) if rounds else "not tested"
        what = ("b is better" if diff > 0 else "b is worse") if sig else "no significant difference"
        out["comparison"] = {"metric": "hit_rate", "difference": diff, "p_value": p,
                             "verdict": f"{what} (hit rate {diff:+.4f}, {words})"}
    out["groups"] = _group_rates(cfg, per, rounds, rng, level)
    return out


def _catalogue_sizes(cfg: "Config", ex: pd.DataFrame) -> dict[str, int]:
    from movierec.errors import ModelError
    from movierec.registry import MOVIES, Registry

    reg, out = Registry.of(cfg), {}
    for v in ex["version"].dropna().unique():
        try:
            out[v] = len(pd.read_parquet(reg.get(v).path / MOVIES, columns=["movie_id"]))
        except (ModelError, OSError):
            pass
    return out


def _group_rates(cfg: "Config", per: pd.DataFrame, rounds: int, rng: np.random.Generator, level: float) -> dict:
    """Per group column: each group's hit rate in each arm and, per arm, the gap between the
    best and the worst group with its interval (groups of fewer than 5 viewers are left out)."""
    from movierec.catalog import Catalog

    cat = Catalog(Path(cfg.workdir))
    member: dict[str, pd.Series] = {}  # group column -> (viewer id -> group)
    if cat.exists("users_clean") and cat.exists("user_ids"):
        from movierec.evaluation.evaluate import _groups  # the bands and groups evaluate reports

        ids = cat.read("user_ids").set_index("user_idx")["user_id"].astype(str)
        for label, members in _groups(cat.read("users_clean"), cfg).items():
            col, _, val = label.partition("=")
            s_ = pd.Series(val, index=ids.reindex(members).dropna().to_numpy())
            member[col] = s_ if col not in member else pd.concat([member[col], s_])
    out = {}
    for col, m in member.items():
        g = per.assign(group=per["user_id"].map(m))
        g = g[g["group"].notna() & ~g["group"].isin(["nan", ""])]
        col_out = {}
        for arm in ARMS:
            ga = g[g["arm"] == arm]
            rates = {}
            for val, gv in ga.groupby("group"):
                if len(gv) >= 5:
                    rates[str(val)] = {"viewers": int(len(gv)), "hit_rate": float(gv["hits"].sum() / gv["lists"].sum())}
            if len(rates) >= 2:
                best = max(rates, key=lambda k: rates[k]["hit_rate"])
                worst = min(rates, key=lambda k: rates[k]["hit_rate"])
                gap = rates[best]["hit_rate"] - rates[worst]["hit_rate"]
                ci = _gap_ci(ga, best, worst, rounds, rng, level)
                col_out[arm] = {"groups": rates, "best": best, "worst": worst, "gap": gap, "gap_ci": ci,
                                "significant": bool(ci and ci[0] > 0)}
        if col_out:
            out[col] = col_out
    return out


def _gap_ci(ga: pd.DataFrame, best: str, worst: str, rounds: int, rng: np.random.Generator,
            level: float) -> list | None:
    if rounds < 2:
        return None
    sides = []
    for val in (best, worst):
        gv = ga[ga["group"] == val]
        h, n = gv["hits"].to_numpy(float), gv["lists"].to_numpy(float)
        idx = rng.integers(0, len(h), size=(rounds, len(h)))
        sides.append(h[idx].sum(1) / np.maximum(n[idx].sum(1), 1))
    d = sides[0] - sides[1]
    a = (1 - level) / 2
    return [float(np.quantile(d, a)), float(np.quantile(d, 1 - a))]


def format_report(rep: dict, fmt: str = "table") -> str:
    """The report as a text table, markdown, or JSON."""
    if fmt == "json":
        return json.dumps(rep, default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else o)

    def ci(v: list | None, digits: int = 3) -> str:
        return f"[{v[0]:.{digits}f}, {v[1]:.{digits}f}]" if v else ""

    def num(v: float | None, digits: int = 4) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    head = ["arm", "versions", "viewers", "lists", "hit rate", f"{rep['confidence']:.0%} interval", "rated",
            "mean rating", "interval", "coverage"]
    rows = [[arm, ", ".join(a["versions"]), str(a["viewers"]), str(a["lists"]), num(a["hit_rate"]),
             ci(a["hit_rate_ci"]), str(a["rated_exposures"]), num(a["mean_rating"], 3), ci(a["mean_rating_ci"], 2),
             num(a["coverage"])] for arm, a in rep["arms"].items()]
    lines = [f"experiment {rep['experiment']}: {rep['feedback_attributed']} feedback events attributed "
             f"(within {rep['attribution_hours']:g} h of a list; positive: rating >= {rep['relevance_threshold']:g} "
             "or a share)"]
    if fmt == "markdown":
        lines = [f"# Experiment {rep['experiment']}", "", lines[0], "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        lines += ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    if "comparison" in rep:
        lines += ["", f"verdict: {rep['comparison']['verdict']}"]
    for col, arms in rep.get("groups", {}).items():
        for arm, g in arms.items():
            rates = ", ".join(f"{k} {v['hit_rate']:.3f} (n={v['viewers']})" for k, v in g["groups"].items())
            flag = "significant" if g["significant"] else "not significant"
            lines.append(f"fairness, {col}, arm {arm}: {rates}; gap {g['best']} - {g['worst']} {g['gap']:+.3f} "
                         f"{ci(g['gap_ci'])} ({flag})")
    return "\n".join(lines)
