"""Human-readable renderings of evaluate's result (a table for terminals, Markdown)."""

from __future__ import annotations


def _cols(ks: list[int]) -> list[str]:
    cols = ["rmse", "mae"]
    for k in ks:
        cols += [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"map@{k}"]
    return cols + ["coverage"]


def _rows(result: dict) -> list[tuple[str, dict]]:
    rows = [("movierec", result)]
    rows += [(f"baseline: {n}", m) for n, m in result.get("baselines", {}).items()]
    rows += [(f"ablation: {n}", m) for n, m in result.get("ablations", {}).items()]
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
