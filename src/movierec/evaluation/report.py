"""Human-readable renderings of evaluate's result (a table for terminals, Markdown).

Why one module of this size: every rendering of one result dict (terminal table, Markdown,
HTML and its plots) reads the same keys; a change to the result is made here once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _cols(ks: list[int]) -> list[str]:
    cols = ["rmse", "mae"]
    for k in ks:
        cols += [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}"]
    return cols + ["coverage"]


def _rows(result: dict, groups: bool = True) -> list[tuple[str, dict]]:
    rows = [("movierec", result)]
    rows += [(f"baseline: {n}", m) for n, m in result.get("baselines", {}).items()]
    rows += [(f"ablation: {n}", m) for n, m in result.get("ablations", {}).items()]
    if groups:
        rows += [(f"group: {n}", m) for n, m in result.get("groups", {}).items()]
    return rows


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


# ----------------------------------------------------------------------------- honest wording
def _p_floor(result: dict) -> float | None:
    """The smallest p-value the paired bootstrap test can give, 2 / (R + 1) for R rounds
    (:func:`movierec.evaluation.stats.paired`); None when the result does not say R.

    Why: a p-value at this floor only says "no resample crossed 0"; the true p may be far
    smaller, so printing it as "p = 0.004" claims a precision the test does not have."""
    return _floor(result.get("bootstrap_rounds"))


def _floor(rounds) -> float | None:
    return 2.0 / (rounds + 1) if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 2 else None


def _p_value(p: float, floor: float | None) -> str:
    """A p-value for a table cell (:func:`movierec.evaluation.stats.p_bound`)."""
    from movierec.evaluation.stats import p_bound

    return p_bound(p, floor)


def _p_text(p: float, floor: float | None) -> str:
    """A p-value in a sentence: "p = 0.123", "p < 0.004"."""
    v = _p_value(p, floor)
    return f"p {v}" if v.startswith("<") else f"p = {v}"


def _verdict(text: str, tests: dict | None, floor: float | None) -> str:
    """A verdict of :func:`movierec.evaluation.stats.verdict` with each p-value at the test's
    floor said as a bound ("p < 0.004"), not as an exact value.

    Why here too: stats.verdict words the bound itself from each test's recorded rounds; a
    result written before tests recorded them (an older metrics.json read by --compare) only
    says the rounds at its top, so its renderings correct the one phrase (the same
    "LABEL +D.DDDD, p = X" that stats writes; a verdict already worded as a bound is left)."""
    for m, t in (tests or {}).items():
        if not isinstance(t, dict) or not isinstance(t.get("p_value"), (int, float)):
            continue
        p, f = float(t["p_value"]), _floor(t.get("rounds")) or floor  # a test's own count, if it says it
        if p < 0.001 or f is None or p > f * (1 + 1e-9):
            continue
        label = f"{m.upper() if m in ('rmse', 'mae') else m} {t['difference']:+.4f}, "
        text = text.replace(label + f"p = {p:.3f}", label + _p_text(p, f))
    return text


def word_p_values(result: dict) -> dict:
    """Reword, in place, the verdicts stored in ``result`` (baselines, ablations, the
    --compare version) so that a p-value at the test's floor reads as a bound.

    Why in place: the JSON output, metrics.json and the report then say the same sentence;
    rendering it differently in each would leave the JSON claiming "p = 0.004"."""
    floor = _p_floor(result)
    for t in (result.get("significance") or {}).values():
        if t.get("verdict"):
            t["verdict"] = _verdict(t["verdict"], t, floor)
    cv = result.get("compared_version") or {}
    if cv.get("verdict"):
        cv["verdict"] = _verdict(cv["verdict"], cv.get("paired"), floor)
    return result


def _verdicts(result: dict) -> list[str]:
    """Every paired-test verdict: baselines and ablations, then the --compare version (its
    verdict, or why there is none)."""
    floor = _p_floor(result)
    out = [_verdict(t["verdict"], t, floor) for t in (result.get("significance") or {}).values() if t.get("verdict")]
    cv = result.get("compared_version") or {}
    if cv.get("verdict"):
        out.append(_verdict(cv["verdict"], cv.get("paired"), floor) + " (paired over the same test users)")
    elif cv.get("note"):
        out.append(f"vs {cv.get('version', 'the other version')}: {cv['note']}")
    return out


def _model_text(result: dict) -> str:
    """Which model was scored. ``model_version`` None means evaluate fitted the model itself
    (no saved version has it); "model None" would read as if there were no model. With
    k-fold, a version's holdout model serves its configured fold only."""
    v = result.get("model_version")
    if v is None:
        return "model: fitted for this evaluation (no saved version)"
    if result.get("folds"):
        return f"model: holdout model of version {v} on the configured fold, fitted here on the other folds"
    return f"model: holdout model of version {v}"


def _per_fold(result: dict) -> str:
    """" (mean per fold)" for a k-fold result, whose counts and times are fold means."""
    return " (mean per fold)" if result.get("folds") else ""


def _count(v) -> int | str:
    """A count as a whole number. k-fold results hold fold means (123.4 users): rounded,
    since a fraction of a user is no size anyone can read; callers say "mean per fold"."""
    return int(round(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _notes(result: dict) -> list[str]:
    """The lines under the metrics table: what was scored and how, then the verdicts."""
    fold = _per_fold(result)
    lines = [f"fit seconds{fold}: {result.get('fit_seconds', 0):.2f}; {_model_text(result)}; "
             f"split {result.get('split')}"]
    if result.get("candidates"):
        lines.append(_cold_items_line(result))
    return lines


# ----------------------------------------------------------------------------- cold and known users
def _split_rows(result: dict) -> list[tuple[str, dict]]:
    """(name, users_split) of the model and each baseline and ablation that has one."""
    return [(n, m["users_split"]) for n, m in _rows(result, groups=False) if isinstance(m.get("users_split"), dict)]


def _split_intro(result: dict, nd: str) -> str | None:
    """One sentence on the cold users (no training rating): how many, and how they were ranked."""
    split = result.get("users_split") or {}
    if not split:
        return None
    cold, known = split.get("cold") or {}, split.get("known") or {}
    fold = _per_fold(result)
    if not cold.get("users_ranked"):
        return f"cold users (no training rating): none among the {_count(known.get('users_ranked', 0))} ranked " \
               f"test users{fold}"
    how = ("each ranker's own list" if result.get("unseen_users") == "own" else
           "the most rated movies from every ranker but random, except that movierec keeps its own list for "
           f"the {_count(cold.get('model_lists', 0))} whose reviews it learned from")
    return (f"cold users (no training rating): {_count(cold['users_ranked'])} of the "
            f"{_count(cold['users_ranked'] + known.get('users_ranked', 0))} ranked test users{fold}; their lists: "
            f"{how}. {nd} of the cold and the known users apart:")


def _split_lines(result: dict, ks: list[int]) -> list[str]:
    nd = f"ndcg@{max(ks)}"
    intro = _split_intro(result, nd)
    if intro is None:
        return []
    if not (result["users_split"].get("cold") or {}).get("users_ranked"):
        return [intro]
    rows = _split_rows(result)
    w = max(len(n) for n, _ in rows) + 2
    return [intro] + [f"  {n:<{w}}cold {_fmt(sp.get('cold', {}).get(nd))}   known {_fmt(sp.get('known', {}).get(nd))}"
                      for n, sp in rows]


def format_table(result: dict, ks: list[int]) -> str:
    cols = _cols(ks)
    rows = _rows(result)
    w = max(len(name) for name, _ in rows) + 2
    lines = [f"{'':<{w}}" + "".join(f"{c:>13}" for c in cols)]
    for name, m in rows:
        lines.append(f"{name:<{w}}" + "".join(f"{_fmt(m.get(c)):>13}" for c in cols))
    lines += _notes(result)
    k = max(ks)
    ci = result.get("ci") or {}
    level = int(round(100 * result.get("confidence", 0.95)))
    shown = [f"{c} {_with_ci(result, c)}" for c in ("rmse", f"ndcg@{k}") if c in ci]
    if shown:
        lines.append(f"{level}% intervals: " + "; ".join(shown))
    lines += _split_lines(result, ks)
    lines += _verdicts(result)
    return "\n".join(lines)


def _cold_items_line(result: dict) -> str:
    return (f"cold_items: {_count(result.get('users_ranked', 0))} viewers{_per_fold(result)} each ranked only the "
            f"{_count(result['candidates'])} new movies (reviews, no rating in training); coverage is of those new "
            "movies")


def format_markdown(result: dict, ks: list[int]) -> str:
    """The table output in Markdown: each value with its confidence interval where it has
    one (the table's intervals line would be lost in a wide Markdown table), then the same
    notes and verdicts as a list."""
    cols = _cols(ks)
    level = int(round(100 * result.get("confidence", 0.95)))
    lines = [f"Values: metric [{level}% confidence interval] where an interval was computed.", "",
             "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in _rows(result):
        lines.append(f"| {name} | " + " | ".join(_with_ci(m, c) for c in cols) + " |")
    lines.append("")
    lines += [f"- {line}" for line in _notes(result) + _verdicts(result)]
    split = _split_section(result, f"ndcg@{max(ks)}")
    if split:
        lines += ["", split["text"][0]]
        if split.get("table"):
            head, rows = split["table"]
            lines += ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _split_section(result: dict, nd: str) -> dict | None:
    """Cold (no training rating) and known users apart: the report's section."""
    intro = _split_intro(result, nd)
    if intro is None:
        return None
    sec: dict = {"title": "Cold and known users", "text": [intro]}
    if (result["users_split"].get("cold") or {}).get("users_ranked"):
        cols = [nd, f"recall@{nd.split('@')[1]}", "coverage"]
        sec["table"] = (["", *[f"{c} cold" for c in cols], *[f"{c} known" for c in cols]],
                        [[n, *[_fmt(sp.get("cold", {}).get(c)) for c in cols],
                          *[_fmt(sp.get("known", {}).get(c)) for c in cols]] for n, sp in _split_rows(result)])
    return sec


# ----------------------------------------------------------------------------- the report
SUMMARY_KEYS = ("rmse", "mae", "coverage", "novelty", "diversity", "popularity_lift", "user_coverage")


def _metric_keys(result: dict, ks: list[int]) -> list[str]:
    return [c for c in _cols(ks) + list(SUMMARY_KEYS[3:]) if isinstance(result.get(c), (int, float))]


def compare(current: dict, other: dict, ks: list[int]) -> list[tuple[str, float, float, float]]:
    """(metric, current, other, current - other) for the metrics both results hold."""
    rows = []
    for c in _metric_keys(current, ks):
        if isinstance(other.get(c), (int, float)):
            rows.append((c, float(current[c]), float(other[c]), float(current[c]) - float(other[c])))
    return rows


def format_compare(rows, other_name: str) -> str:
    lines = [f"{'metric':<16}{'this run':>12}{other_name[:24]:>26}{'delta':>11}"]
    for c, a, b, d in rows:
        lines.append(f"{c:<16}{a:>12.4f}{b:>26.4f}{d:>+11.4f}")
    return "\n".join(lines)


COLOURS = {"model": "#1f77b4", "baseline": "#7f7f7f", "ablation": "#ff7f0e"}
GROUP_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _err(value: float, ci) -> list[float]:
    """matplotlib's error bar lengths below and above ``value`` for an interval."""
    if not ci or None in ci:
        return [0.0, 0.0]
    return [max(0.0, value - ci[0]), max(0.0, ci[1] - value)]


def _plots(result: dict, out: Path, ks: list[int]) -> dict[str, str]:
    """Draw the report's PNGs into ``out``; returns {name: caption}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    made: dict[str, str] = {}
    k = max(ks)
    nd = f"ndcg@{k}"

    def save(fig, name, caption, rect=(0, 0, 1, 1)):
        fig.tight_layout(rect=rect)
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made[name] = caption

    hist = result.get("history") or {}
    if hist.get("train_rmse"):
        save(_learning_plot(plt, MaxNLocator, hist), "learning_curves.png",
             "Training and validation loss (RMSE) per epoch")
    save(_accuracy_plot(plt, result, nd), "accuracy.png",
         f"RMSE and {nd} of the model, baselines and ablations, with "
         f"{int(100 * result.get('confidence', 0.95))}% confidence intervals", rect=(0, 0.07, 1, 1))

    cur = result.get("curves")
    if cur:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(cur["k"], cur["precision"], marker="o", ms=3, label="precision@K")
        ax.plot(cur["k"], cur["recall"], marker="o", ms=3, label="recall@K")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, None)
        ax.set_xlabel("K (list length)")
        ax.set_ylabel("higher is better")
        ax.legend()
        ax.set_title("Precision and recall over K")
        save(fig, "precision_recall.png", f"Precision@K and recall@K for K = 1..{max(cur['k'])}")

    lt = result.get("long_tail")
    if lt:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        x = np.arange(len(lt["recommended"]))
        ax.bar(x - 0.2, lt["recommended"], 0.4, label="recommended", color=COLOURS["model"])
        ax.bar(x + 0.2, lt["watched"], 0.4, label="watched (test positives)", color="#2ca02c")
        ax.set_xticks(x, [f"{10 * i}-{10 * (i + 1)}%" for i in x], rotation=45, fontsize=7)
        ax.set_xlabel("movies by training popularity (head -> tail)")
        ax.set_ylabel("share")
        ax.legend()
        ax.set_title("Long tail: what is recommended vs what is watched")
        save(fig, "long_tail.png", "Share of recommendations and of watched movies per popularity decile")

    groups = {n: m for n, m in result.get("groups", {}).items() if m.get("rmse") is not None}
    if groups:
        save(_group_plot(plt, groups, result.get("fairness", {}), nd, " per fold" if result.get("folds") else ""),
             "groups.png",
             "Metrics per user group with confidence intervals and group sizes (dots; the largest significant gap "
             "is marked)")
    return made


def _learning_plot(plt, MaxNLocator, hist: dict):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ep = range(1, len(hist["train_rmse"]) + 1)
    ax.plot(ep, hist["train_rmse"], marker="o", ms=3, label="training RMSE")
    if hist.get("val_rmse"):
        ax.plot(range(1, len(hist["val_rmse"]) + 1), hist["val_rmse"], marker="o", ms=3, label="validation RMSE")
        ax.axvline(hist.get("best_epoch", 0) + 1, color="grey", ls=":", label="kept epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE (lower is better)")
    ax.legend()
    ax.set_title("Learning curves (holdout model)")
    return fig


def _accuracy_plot(plt, result: dict, nd: str):
    """RMSE and NDCG bars of the model, the baselines and the ablations, with intervals."""
    from matplotlib.patches import Patch

    rows = [("movierec", "model", result)] + [(n, "baseline", m) for n, m in result.get("baselines", {}).items()] + \
           [(f"without {n[3:]}" if n.startswith("no_") else n, "ablation", m)
            for n, m in result.get("ablations", {}).items()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.8))
    for ax, metric, better in zip(axes, ("rmse", nd), ("lower is better", "higher is better")):
        have = [(n, kind, m[metric], m.get("ci", {}).get(metric)) for n, kind, m in rows if m.get(metric) is not None]
        if not have:
            ax.set_visible(False)
            continue
        y = np.arange(len(have))
        ax.barh(y, [v for _, _, v, _ in have], color=[COLOURS[kind] for _, kind, _, _ in have],
                xerr=np.array([_err(v, ci) for _, _, v, ci in have]).T, capsize=3, ecolor="black")
        ax.set_yticks(y, [n for n, _, _, _ in have])
        ax.invert_yaxis()
        top = max((ci[1] if ci else v) for _, _, v, ci in have)
        ax.set_xlim(0, top * 1.22)  # bars start at 0: no gap looks bigger than it is
        for yy, (_, _, v, ci) in zip(y, have):  # the value beyond the interval's end
            ax.text((ci[1] if ci else v) + top * 0.02, yy, f"{v:.4f}", va="center", ha="left", fontsize=7)
        ax.set_title(f"{metric.upper() if metric == 'rmse' else metric} ({better})")
    fig.legend(handles=[Patch(color=c, label=lab) for lab, c in COLOURS.items()], loc="lower center", ncol=3,
               fontsize=8, frameon=False)
    return fig


def _group_plot(plt, groups: dict[str, dict], fair: dict, nd: str, per_fold: str = ""):
    """Dots with interval bars per group, one colour per group column, sizes in the labels
    (whole numbers; ``per_fold`` " per fold" where they are k-fold means); the column with
    the largest significant gap is marked."""
    names = list(groups)
    cols = list(dict.fromkeys(n.partition("=")[0] for n in names))
    colour = {c: GROUP_COLOURS[i % len(GROUP_COLOURS)] for i, c in enumerate(cols)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.38 * len(names) + 1.8))
    y = np.arange(len(names))
    labels = [f"{n.partition('=')[2]} ({n.partition('=')[0]}, "
              f"{_count(groups[n].get('users', groups[n].get('n_test', 0))):,} "
              f"{'users' if 'users' in groups[n] else 'ratings'}{per_fold})" for n in names]
    for ax, metric, better in zip(axes, ("rmse", nd), ("lower is better", "higher is better")):
        vals = np.array([groups[n].get(metric, np.nan) if groups[n].get(metric) is not None else np.nan
                         for n in names], dtype=float)
        errs = np.array([_err(v, groups[n].get("ci", {}).get(metric)) if np.isfinite(v) else [0, 0]
                         for n, v in zip(names, vals)]).T
        for c in cols:
            sel = np.array([n.partition("=")[0] == c for n in names]) & np.isfinite(vals)
            ax.errorbar(vals[sel], y[sel], xerr=errs[:, sel], fmt="o", color=colour[c], capsize=3, label=c)
        big = fair.get("largest")
        e = fair.get(big, {}).get(metric) if big else None
        if e and e.get("significant"):
            for which in ("best", "worst"):
                i = names.index(f"{big}={e[which]}")
                ax.annotate(which, (vals[i], y[i]), textcoords="offset points", xytext=(0, 7), fontsize=7,
                            color="crimson", ha="center")
            ax.set_title(f"{metric} ({better}); largest gap: {big}", fontsize=9)
        else:
            ax.set_title(f"{metric} ({better})", fontsize=9)
        ax.set_yticks(y, labels if ax is axes[0] else [""] * len(y), fontsize=7)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    return fig


def _with_ci(m: dict, key: str) -> str:
    v = m.get(key)
    if not isinstance(v, (int, float)):
        return "-"
    ci = (m.get("ci") or {}).get(key)
    return f"{v:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and None not in ci else "")


def _header(result: dict) -> list[str]:
    import platform
    import time
    from importlib.metadata import PackageNotFoundError, version

    def v(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "-"

    d = result.get("data") or {}
    hp = result.get("hyperparameters") or {}
    lines = [f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; movierec {v('movierec')}, Python "
             f"{platform.python_version()}, numpy {v('numpy')}, scikit-learn {v('scikit-learn')}, numba {v('numba')}."]
    if d:
        lines.append(f"Data: {d.get('ratings', 0):,} ratings, {d.get('users', 0):,} users, {d.get('movies', 0):,} "
                     f"movies; {d.get('test_ratings', 0):,} of the ratings are test ratings.")
    folds = f", {len(result['folds'])} folds (mean; intervals over folds)" if result.get("folds") else \
        " (intervals: bootstrap over test users)"
    model = _model_text(result)
    lines.append(f"Split: `{result.get('split')}`{folds}. {model[0].upper()}{model[1:]}.")
    if result.get("candidates"):
        lines.append(_cold_items_line(result))
    if hp:
        keys = ("factors", "epochs", "optimizer", "learning_rate", "reg", "social_reg", "use_features", "implicit",
                "ranking", "ensemble", "seed")
        lines.append("Hyperparameters: " + ", ".join(f"{k} {hp[k]}" for k in keys if k in hp) + ".")
    return lines


def _significance_section(result: dict, nd: str, level: int) -> dict | None:
    sig = result.get("significance") or {}
    if not sig:
        return None
    rows = []
    floor = _p_floor(result)
    for name, t in sig.items():
        for m in ("rmse", nd):
            if m in t:
                ci = t[m]["ci"]
                rows.append([f"{t['kind']}: {name}", m, f"{t[m]['difference']:+.4f}",
                             f"[{ci[0]:+.4f}, {ci[1]:+.4f}]", _p_value(t[m]["p_value"], floor)])
    return {"title": "Is the difference real? Model vs baselines and ablations",
            "text": ["Paired over the same test users (the model minus the other; bootstrap of the users, "
                     f"{level}% interval, two-sided p). RMSE: negative is better for the model; "
                     f"{nd}: positive is better."] + [f"**{_verdict(t['verdict'], t, floor)}**" for t in sig.values()],
            "table": (["compared with", "metric", "difference", f"{level}% CI", "p"], rows)}


def _fairness_section(result: dict, nd: str) -> dict | None:
    groups = result.get("groups", {})
    if not groups:
        return None
    gcols = ["users", "n_test", "rmse", nd, "coverage", "novelty"]
    fair = result.get("fairness", {})
    text = []
    for col, e in fair.items():
        if col == "largest" or not isinstance(e, dict):
            continue
        for metric in ("rmse", nd):
            if metric not in e:
                continue
            g = e[metric]
            ci = f" [{g['ci'][0]:.4f}, {g['ci'][1]:.4f}]" if g.get("ci") else ""
            real = "" if "significant" not in g else (" — a real gap" if g["significant"] else
                                                      " — within noise (the interval holds 0)")
            flag = " **(largest gap)**" if fair.get("largest") == col and metric == nd else ""
            text.append(f"{col}: {metric} best {g['best']}, worst {g['worst']}, gap {g['gap']:.4f}{ci} "
                        f"({100 * g['relative_gap']:.1f}% of the best){real}{flag}")
    if fair and fair.get("largest") is None:
        text.append("No group gap in NDCG is larger than the noise.")
    fold = _per_fold(result)
    if fold:
        text.append("Group sizes (users, n_test) are per fold: the mean over the folds, rounded.")
    head = [c + fold if c in ("users", "n_test") else c for c in gcols]
    return {"title": "Fairness: metrics per user group", "text": text,
            "table": (["group"] + head, [[n] + [str(_count(m.get(c))) if c in ("users", "n_test") else
                                                _with_ci(m, c) for c in gcols] for n, m in groups.items()])}


def _sections(result: dict, ks: list[int], images: dict[str, str], comparison) -> list[dict]:
    k = max(ks)
    nd = f"ndcg@{k}"
    level = int(round(100 * result.get("confidence", 0.95)))
    summ = [[c, _with_ci(result, c)] for c in ("rmse", "mae", f"precision@{k}", f"recall@{k}", nd, f"map@{k}",
                                                 "coverage") if c in result]
    secs = [{"title": "Summary", "text": _header(result), "table": (["metric", f"value [{level}% CI]"], summ)}]
    sig = _significance_section(result, nd, level)
    if sig:
        secs.append(sig)
    cols = _cols(ks)
    secs.append({"title": "Accuracy: model, baselines, ablations",
                 "text": [f"RMSE and MAE: lower is better; the others: higher is better. {level}% intervals "
                          "in the summary and the plots."],
                 "table": ([""] + cols, [[n] + [_fmt(m.get(c)) for c in cols] for n, m in _rows(result, groups=False)])})
    bcols = ["coverage", "user_coverage", "novelty", "diversity", "popularity_lift"]
    secs.append({"title": "Beyond accuracy", "text": [
        "coverage: share of the catalogue in some list; user_coverage: share of ranked users with a relevant movie "
        "in their list; novelty: mean self-information -log2(share of users who rated the movie); diversity: "
        "1 - mean genre cosine similarity within a list; popularity_lift: mean popularity of recommended movies "
        "over that of watched ones (> 1 leans to the head)."],
        "table": ([""] + bcols, [[n] + [_fmt(m.get(c)) for c in bcols] for n, m in _rows(result, groups=False)])})
    split = _split_section(result, nd)
    if split:
        secs.append(split)
    fair = _fairness_section(result, nd)
    if fair:
        secs.append(fair)
    if comparison:
        name, rows = comparison
        text = []
        cv = result.get("compared_version") or {}
        if cv.get("verdict"):
            text.append(f"**{_verdict(cv['verdict'], cv.get('paired'), _p_floor(result))}** "
                        "(paired over the same test users)")
        elif cv.get("note"):
            text.append(cv["note"])
        secs.append({"title": f"Compared with {name}", "text": text,
                     "table": (["metric", "this run", name, "delta"],
                               [[c, f"{a:.4f}", f"{b:.4f}", f"{d:+.4f}"] for c, a, b, d in rows])})
    for img, caption in images.items():
        secs.append({"title": caption, "text": [], "image": img})
    return secs


def _md(secs: list[dict]) -> str:
    out = ["# movierec evaluation report", ""]
    for s in secs:
        out += [f"## {s['title']}", ""]
        out += [t + "\n" for t in s["text"]]
        if s.get("table"):
            head, rows = s["table"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
            out.append("")
        if s.get("image"):
            out += [f"![{s['title']}]({s['image']})", ""]
    return "\n".join(out)


def _html(secs: list[dict], folder: Path) -> str:
    import base64
    import html
    import re

    def inline(t: str) -> str:
        t = html.escape(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>movierec evaluation report</title><style>",
             "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
             "img{max-width:100%;border:1px solid #eee}",
             "</style></head><body><h1>movierec evaluation report</h1>"]
    for s in secs:
        parts.append(f"<h2>{html.escape(s['title'])}</h2>")
        parts += [f"<p>{inline(t)}</p>" for t in s["text"]]
        if s.get("table"):
            head, rows = s["table"]
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows]
            parts.append("</table>")
        if s.get("image"):
            data = base64.b64encode((folder / s["image"]).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(s['title'])}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: dict, folder: str | Path, ks: list[int], comparison=None) -> dict[str, Path]:
    """metrics.json, the PNG plots, report.md and a self-contained report.html in ``folder``."""
    from movierec.catalog import write_json

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "metrics.json")
    images = _plots(result, out, ks)
    secs = _sections(result, ks, images, comparison)
    (out / "report.md").write_text(_md(secs), encoding="utf-8")
    (out / "report.html").write_text(_html(secs, out), encoding="utf-8")
    return {"metrics": out / "metrics.json", "markdown": out / "report.md", "html": out / "report.html",
            **{name: out / name for name in images}}


def load_other_metrics(ref: str, models_dir: Path) -> tuple[str, dict]:
    """A metrics.json file, or a model version (its metrics.json under models/)."""
    import json

    from movierec.errors import ConfigError

    from movierec.errors import ModelError
    from movierec.registry import METRICS, Registry

    p = Path(ref)
    if not p.is_file():
        try:
            p = Registry(models_dir).get(ref).path / METRICS
        except ModelError:
            p = models_dir / ref / METRICS
    if not p.is_file():
        raise ConfigError(f"--compare {ref}: neither a metrics.json file nor a model version with metrics "
                          f"(looked for {p})")
    try:
        data = json.loads(p.read_text())
    except ValueError as exc:
        raise ConfigError(f"--compare {ref}: {p} is not JSON ({exc})") from exc
    data = data.get("candidate", data) if isinstance(data, dict) else {}
    return (ref if not Path(ref).is_file() else p.name), data
