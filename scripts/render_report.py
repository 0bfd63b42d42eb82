"""Render an evaluation report (report.html) to a PNG with headless Chromium, to look at it.

    python scripts/render_report.py REPORT_DIR [--out report.png] [--chromium /usr/bin/chromium]

The report is self-contained (plots embedded), so the page renders offline.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def render(report_dir: Path, out: Path, chromium: str, width: int = 1200, height: int = 9000) -> Path:
    html = (report_dir / "report.html").resolve()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}", "--hide-scrollbars",
                        f"--screenshot={out.resolve()}", html.as_uri()],
                       check=True, capture_output=True, timeout=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    a = ap.parse_args()
    if not a.chromium:
        sys.exit("no chromium found (Debian: apt install chromium)")
    print(render(a.report_dir, a.out or a.report_dir / "report.png", a.chromium))


if __name__ == "__main__":
    main()
