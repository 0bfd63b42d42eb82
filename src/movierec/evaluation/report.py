"""Human-readable renderings of evaluate's result (a table for terminals, Markdown)."""

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


def format_table(result: dict, ks: list[int]) -> str:
    cols = _cols(ks)
    rows = _rows(result)
    w = max(len(name) for name, _ in rows) + 2
    lines = [f"{'':<{w}}" + "".join(f"{c:>13}" for c in cols)]
    for name, m in rows:
        lines.append(f"{name:<{w}}" + "".join(f"{_fmt(m.get(c)):>13}" for c in cols))
    lines.append(f"fit seconds: {result.get('fit_seconds', 0):.2f}; model {result.get('model_version')}; "
                 f"split {result.get('split')}")
    return "\n".join(lines)


def format_markdown(result: dict, ks: list[int]) -> str:
    cols = _cols(ks)
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in _rows(result):
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(c)) for c in cols) + " |")
    return "\n".join(lines)


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


def _plots(result: dict, out: Path, ks: list[int]) -> dict[str, str]:
    """Draw the report's PNGs into ``out``; returns {name: caption}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, str] = {}
    k = max(ks)
    nd = f"ndcg@{k}"

    def save(fig, name, caption):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made[name] = caption

    hist = result.get("history") or {}
    if hist.get("train_rmse"):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ep = range(1, len(hist["train_rmse"]) + 1)
        ax.plot(ep, hist["train_rmse"], marker="o", ms=3, label="training RMSE")
        if hist.get("val_rmse"):
            ax.plot(range(1, len(hist["val_rmse"]) + 1), hist["val_rmse"], marker="o", ms=3, label="validation RMSE")
            ax.axvline(hist.get("best_epoch", 0) + 1, color="grey", ls=":", label="kept epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("RMSE")
        ax.legend()
        ax.set_title("Learning curves")
        save(fig, "learning_curves.png", "Training and validation loss (RMSE) per epoch")

    rows = [("movierec", result)] + [(f"{n}", m) for n, m in result.get("baselines", {}).items()] + \
           [(f"ablation:\n{n}", m) for n, m in result.get("ablations", {}).items()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, metric in zip(axes, ("rmse", nd)):
        have = [(n, m[metric]) for n, m in rows if m.get(metric) is not None]
        colors = ["tab:blue" if n == "movierec" else "tab:orange" if n.startswith("ablation") else "tab:grey"
                  for n, _ in have]
        ax.bar([n for n, _ in have], [v for _, v in have], color=colors)
        ax.set_title(metric.upper() if metric == "rmse" else metric + " (higher is better)")
        ax.tick_params(axis="x", rotation=30)
        if have:
            lo = min(v for _, v in have)
            ax.set_ylim(lo * 0.9 if metric == "rmse" else 0, max(v for _, v in have) * 1.05)
    save(fig, "accuracy.png", f"RMSE and {nd}: model (blue), baselines (grey), ablations (orange)")

    cur = result.get("curves")
    if cur:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(cur["k"], cur["precision"], marker="o", ms=3, label="precision@K")
        ax.plot(cur["k"], cur["recall"], marker="o", ms=3, label="recall@K")
        ax.set_xlabel("K (list length)")
        ax.legend()
        ax.set_title("Precision and recall over K")
        save(fig, "precision_recall.png", "Precision@K and recall@K for K = 1..20")

    lt = result.get("long_tail")
    if lt:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        x = np.arange(len(lt["recommended"]))
        ax.bar(x - 0.2, lt["recommended"], 0.4, label="recommended")
        ax.bar(x + 0.2, lt["watched"], 0.4, label="watched (test positives)")
        ax.set_xticks(x, [f"{10 * i}-{10 * (i + 1)}%" for i in x], rotation=45, fontsize=7)
        ax.set_xlabel("movies by training popularity (head -> tail)")
        ax.set_ylabel("share")
        ax.legend()
        ax.set_title("Long tail: what is recommended vs what is watched")
        save(fig, "long_tail.png", "Share of recommendations and of watched movies per popularity decile")

    groups = result.get("groups", {})
    if groups:
        names = list(groups)
        fig, axes = plt.subplots(1, 2, figsize=(9, 0.4 * len(names) + 2))
        for ax, metric in zip(axes, ("rmse", nd)):
            vals = [groups[n].get(metric) or 0.0 for n in names]
            ax.barh(names, vals, color="tab:green")
            ax.set_title(metric)
            ax.invert_yaxis()
        save(fig, "groups.png", "Metrics per user group (fairness)")
    return made


def _sections(result: dict, ks: list[int], images: dict[str, str], comparison) -> list[dict]:
    k = max(ks)
    nd = f"ndcg@{k}"
    std = result.get("std", {})
    summ = []
    for c in ("rmse", "mae", nd):
        if c in result:
            summ.append([c, f"{result[c]:.4f}" + (f" ± {std[c]:.4f}" if c in std else "")])
    intro = [f"Model version `{result.get('model_version')}`, split `{result.get('split')}`"
             + (f", mean ± std over {len(result['folds'])} folds" if result.get("folds") else "") + "."]
    secs = [{"title": "Summary", "text": intro, "table": (["metric", "value"], summ)}]
    cols = _cols(ks)
    secs.append({"title": "Accuracy: model, baselines, ablations", "text": [],
                 "table": ([""] + cols, [[n] + [_fmt(m.get(c)) for c in cols] for n, m in _rows(result, groups=False)])})
    bcols = ["coverage", "user_coverage", "novelty", "diversity", "popularity_lift"]
    secs.append({"title": "Beyond accuracy", "text": [
        "coverage: share of the catalogue in some list; user_coverage: share of ranked users with a relevant movie "
        "in their list; novelty: mean self-information -log2(share of users who rated the movie); diversity: "
        "1 - mean genre cosine similarity within a list; popularity_lift: mean popularity of recommended movies "
        "over that of watched ones (> 1 leans to the head)."],
        "table": ([""] + bcols, [[n] + [_fmt(m.get(c)) for c in bcols] for n, m in _rows(result, groups=False)])})
    groups = result.get("groups", {})
    if groups:
        gcols = ["n_test", "rmse", "mae", nd, "coverage", "novelty"]
        fair = result.get("fairness", {})
        text = []
        for col, e in fair.items():
            if col == "largest" or nd not in e:
                continue
            g = e[nd]
            flag = " **(largest gap)**" if fair.get("largest") == col else ""
            text.append(f"{col}: {nd} best {g['best']}, worst {g['worst']}, gap {g['gap']:.4f} "
                        f"({100 * g['relative_gap']:.1f}% of the best){flag}"
                        + (f"; RMSE gap {e['rmse']['gap']:.4f} (worst {e['rmse']['worst']})" if "rmse" in e else ""))
        secs.append({"title": "Fairness: metrics per user group", "text": text,
                     "table": (["group"] + gcols, [[n] + [str(m.get(c)) if c == "n_test" else _fmt(m.get(c))
                                                         for c in gcols] for n, m in groups.items()])})
    if comparison:
        name, rows = comparison
        secs.append({"title": f"Compared with {name}", "text": [],
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
