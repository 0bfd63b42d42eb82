"""What every benchmark module shares: paths, the machine line, Markdown tables, versions,
an older checkout to measure beside this one."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
K = 10

#: hand-written notes below this marker survive a rerun of the benchmark that wrote the file
KEEP = "<!-- notes: kept when the benchmark rewrites the tables above -->"


def write_results(out: Path, lines: list[str]) -> None:
    """``lines`` as the results file ``out``, the notes below its :data:`KEEP` marker kept."""
    text = out.read_text() if out.exists() else ""
    keep = text.split(KEEP, 1)[1] if KEEP in text else "\n"
    out.write_text("\n".join(lines) + "\n\n" + KEEP + keep)


def machine() -> str:
    import numba
    import sklearn

    try:
        import surprise

        sv = surprise.__version__
    except ImportError:
        sv = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__}, scikit-learn {sklearn.__version__}, surprise {sv}")


def table(rows: list[tuple[str, dict]], cols: list[str]) -> str:
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join("-" if m.get(c) is None else f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def mean_of(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"



@contextlib.contextmanager
def checkouts(before: str | None, tmp: Path, this: Path | None = None):
    """{label: its src folder}: this checkout (``this``) and, with ``before``, that commit in a
    git worktree under ``tmp`` (its src goes first on PYTHONPATH); the worktree and ``tmp``
    are removed afterwards."""
    sites: dict[str, Path | None] = {"this checkout": this}
    wt = None
    if before:
        wt = tmp / "before-tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), before], check=True,
                       capture_output=True)
        sites = {f"before, {before[:7]}": wt / "src", **sites}
    try:
        yield sites
    finally:
        if wt is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
