"""Uncertainty: per-user scores, bootstrap confidence intervals and paired tests.

Every metric of ``evaluate`` is an average over test users (RMSE a ratio of sums), so one
model's scores on one test part are kept per user (:class:`UserScores`); a metric, a user
group's metric, a bootstrap resample and a paired comparison are all weighted sums of the
same arrays. Resampling draws test users with replacement (the unit that varies between
samples of viewers); two models compared on the same users get the same draws, so the
difference's interval is paired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: metrics where a lower value is better; all others are higher-is-better
LOWER_IS_BETTER = ("rmse", "mae", "popularity_lift")


@dataclass
class UserScores:
    """One model on one test part, per test user.

    Rating part: ``n`` test ratings, ``sse``/``sae`` their squared/absolute errors. Ranking
    part: ``ranked`` (1 for users whose list was scored) and ``sums``: per-user values of the
    ranking metrics (0 where not ranked). ``topk`` holds the ranked users' lists, in the order
    of ``users[ranked > 0]``, for catalogue coverage. Pooled folds add these up per user.
    """

    users: np.ndarray
    n: np.ndarray
    sse: np.ndarray
    sae: np.ndarray
    ranked: np.ndarray
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    topk: np.ndarray | None = None
    n_items: int = 0
    lift_den: float = 0.0  # popularity_lift's denominator (mean popularity of watched movies)

    def metrics(self, w: np.ndarray | None = None) -> dict[str, float]:
        """The aggregate metrics under user weights ``w`` (None: each user once)."""
        resampled = w is not None
        w = np.ones(len(self.users)) if w is None else w
        out: dict[str, float] = {}
        n = float(w @ self.n)
        if n > 0:
            out["rmse"] = float(np.sqrt((w @ self.sse) / n))
            out["mae"] = float((w @ self.sae) / n)
        r = float(w @ self.ranked)
        if r > 0:
            for name, v in self.sums.items():
                out[name] = float((w @ v) / r)
            if "_lift" in out:
                lift = out.pop("_lift")
                if self.lift_den > 0:
                    out["popularity_lift"] = lift / self.lift_den
            if self.topk is not None and self.n_items and resampled is False:
                # catalogue coverage counts distinct movies, not a mean over users: a resample
                # (about 63% distinct users) would bias it down, so it gets no bootstrap interval
                chosen = self.topk[w[self.ranked > 0] > 0]
                out["coverage"] = float(len(np.unique(chosen[chosen >= 0])) / self.n_items)
        out.pop("_lift", None)
        return out

    def subset(self, members: np.ndarray) -> "UserScores":
        """The scores of the users in ``members`` (a user group)."""
        keep = np.isin(self.users, members)
        topk = None
        if self.topk is not None:
            topk = self.topk[keep[self.ranked > 0]]
        return UserScores(self.users[keep], self.n[keep], self.sse[keep], self.sae[keep], self.ranked[keep],
                          {k: v[keep] for k, v in self.sums.items()}, topk, self.n_items, self.lift_den)


def pool(folds: list[UserScores]) -> UserScores:
    """One UserScores over several folds: each user's sums added up (k-fold: every rating is
    in exactly one test fold, so the pooled RMSE is the RMSE over all ratings)."""
    users = np.unique(np.concatenate([f.users for f in folds]))

    def add(get) -> np.ndarray:
        out = np.zeros(len(users))
        for f in folds:
            np.add.at(out, np.searchsorted(users, f.users), get(f))
        return out

    names = set().union(*(f.sums for f in folds))
    return UserScores(users, add(lambda f: f.n), add(lambda f: f.sse), add(lambda f: f.sae), add(lambda f: f.ranked),
                      {k: add(lambda f, k=k: f.sums.get(k, np.zeros(len(f.users)))) for k in names},
                      None, 0, float(np.mean([f.lift_den for f in folds])))


def _weights(n_users: int, rounds: int, seed: int, chunk: int = 100):
    """Bootstrap weights: how often each user is drawn, ``chunk`` resamples at a time."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < rounds:
        m = min(chunk, rounds - done)
        # n draws with replacement per resample, counted per user: a multinomial(n, 1/n) row,
        # 20x faster than numpy's multinomial over many categories
        drawn = rng.integers(0, n_users, size=(m, n_users)) + (np.arange(m) * n_users)[:, None]
        yield np.bincount(drawn.ravel(), minlength=m * n_users).reshape(m, n_users).astype(np.float64)
        done += m


def bootstrap(scores: UserScores, rounds: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile confidence interval of every metric: [low, high]."""
    if not len(scores.users) or rounds < 2:
        return {}
    draws: dict[str, list[float]] = {}
    for W in _weights(len(scores.users), rounds, seed):
        for w in W:
            for k, v in scores.metrics(w).items():
                draws.setdefault(k, []).append(v)
    a = (1 - level) / 2
    return {k: [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))] for k, v in draws.items()}


def fold_interval(values: list[float], level: float = 0.95) -> list[float] | None:
    """Confidence interval of a mean over folds (Student's t)."""
    from scipy import stats

    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def paired(a: UserScores, b: UserScores, metrics: list[str], rounds: int = 1000, seed: int = 0,
           level: float = 0.95) -> dict[str, dict]:
    """Difference a - b of each metric over the same users: the difference, its bootstrap
    interval and a two-sided p-value (the share of resamples on the other side of 0,
    doubled). Users are matched by id; both must have scored the same test part."""
    if rounds < 2:  # no resampling asked for: no test
        return {}
    common = np.intersect1d(a.users, b.users)
    a, b = a.subset(common), b.subset(common)
    point_a, point_b = a.metrics(), b.metrics()
    diffs: dict[str, list[float]] = {m: [] for m in metrics if m in point_a and m in point_b}
    if not diffs or not len(common):
        return {}
    for W in _weights(len(common), rounds, seed):
        for w in W:
            ma, mb = a.metrics(w), b.metrics(w)
            for m in diffs:
                if m in ma and m in mb:
                    diffs[m].append(ma[m] - mb[m])
    out = {}
    lo_q = (1 - level) / 2
    for m, d in diffs.items():
        d = np.asarray(d)
        point = point_a[m] - point_b[m]
        if np.allclose(d, 0.0) and abs(point) < 1e-12:
            p = 1.0
        else:
            p = float(min(1.0, 2 * min((d <= 0).sum() + 1, (d >= 0).sum() + 1) / (len(d) + 1)))
        out[m] = {"difference": float(point), "ci": [float(np.quantile(d, lo_q)), float(np.quantile(d, 1 - lo_q))],
                  "p_value": p, "better": _better(m, point), "rounds": int(len(d))}
    return out


def _better(metric: str, diff: float) -> bool:
    return diff < 0 if metric in LOWER_IS_BETTER else diff > 0


def gap_interval(groups: dict[str, UserScores], best: str, worst: str, metric: str, rounds: int = 500,
                 seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Bootstrap interval of the gap metric(worst) - metric(best) between two user groups,
    each group resampled on its own (the groups are disjoint samples of users)."""
    g1, g2 = groups[best], groups[worst]
    if not len(g1.users) or not len(g2.users):
        return None
    d = []
    w1s, w2s = _weights(len(g1.users), rounds, seed), _weights(len(g2.users), rounds, seed + 1)
    for W1, W2 in zip(w1s, w2s):
        for w1, w2 in zip(W1, W2):
            m1, m2 = g1.metrics(w1), g2.metrics(w2)
            if metric in m1 and metric in m2:
                d.append(m2[metric] - m1[metric])
    if len(d) < 2:
        return None
    a = (1 - level) / 2
    return [float(np.quantile(d, a)), float(np.quantile(d, 1 - a))]


SIGNALS = {"no_sentiment": "review sentiment", "no_social": "the social signal", "no_features": "the features",
           "shuffled_social": "the trust signal", "no_review_content": "review content"}


def p_bound(p: float, floor: float | None = None) -> str:
    """A p-value as a table cell: "0.123", "< 0.001", or an upper bound at the test's floor
    ``floor`` ("< 0.004" for 500 rounds; "<= 0.004" where the floor is exactly a 3-decimal
    number): with R bootstrap rounds :func:`paired` gives no p-value below 2 / (R + 1)."""
    if floor is not None and p <= floor * (1 + 1e-9):
        bound = math.ceil(floor * 1000 - 1e-9) / 1000  # rounded up: the bound stays true
        return f"< {bound:.3f}" if bound > floor else f"<= {bound:.3f}"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_words(p: float, rounds: int | None = None) -> str:
    """:func:`p_bound` in a sentence: "p = 0.123", "p < 0.004" (500 rounds)."""
    v = p_bound(p, 2.0 / (rounds + 1) if rounds and rounds >= 2 else None)
    return f"p {v}" if v.startswith("<") else f"p = {v}"


def verdict(name: str, kind: str, tests: dict[str, dict], alpha: float = 0.05) -> str:
    """A plain sentence for one comparison of the model with a baseline, an ablation or
    another version, from :func:`paired`'s tests (RMSE and NDCG@K)."""
    parts = []
    for m, t in tests.items():
        sig = t["p_value"] < alpha
        p = p_words(t["p_value"], t.get("rounds"))
        parts.append((m, sig, t["better"], f"{m.upper() if m in ('rmse', 'mae') else m} {t['difference']:+.4f}, {p}"))
    if not parts:
        return f"{name}: not tested (no common users, or evaluate.bootstrap_rounds is 0)"
    if not any(sig for _, sig, _, _ in parts):
        return f"{name}: no significant difference ({'; '.join(s for *_, s in parts)})"
    helps = [s for _, sig, better, s in parts if sig and better]
    hurts = [s for _, sig, better, s in parts if sig and not better]
    if kind == "ablation":
        signal = SIGNALS.get(name, name)
        what = (f"{signal} helps" if helps and not hurts else f"{signal} hurts" if hurts and not helps
                else f"{signal} helps on one metric and hurts on the other")
    elif kind == "baseline":
        what = ("the model is better" if helps and not hurts else "the model is worse" if hurts and not helps
                else "the model is better on one metric and worse on the other")
    else:
        what = ("this model is better" if helps and not hurts else "this model is worse" if hurts and not helps
                else "better on one metric, worse on the other")
    return f"{name}: {what} ({'; '.join(helps + hurts)})"
