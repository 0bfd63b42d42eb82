"""Install LightFM 1.17 (a peer of the cold-start benchmark) into this Python.

LightFM's last release does not build with current setuptools (its setup.py sets
``__builtins__.__LIGHTFM_SETUP__``, and ``__builtins__`` is a dict there), so
``pip install lightfm`` fails. This fetches the sdist from PyPI, fixes that one line and
installs it without build isolation:

    python scripts/install_lightfm.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "1.17"


def main() -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "setuptools", "wheel", "cython", "numpy", "scipy"],
                   check=True)
    meta = json.load(urllib.request.urlopen("https://pypi.org/pypi/lightfm/json"))
    files = meta.get("releases", {}).get(VERSION) or meta["urls"]
    url = next(f["url"] for f in files if f["packagetype"] == "sdist" and VERSION in f["filename"])
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "lightfm.tar.gz"
        urllib.request.urlretrieve(url, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"lightfm-{VERSION}"
        setup = src / "setup.py"
        setup.write_text(setup.read_text().replace("__builtins__.__LIGHTFM_SETUP__ = True",
                                                   "import builtins; builtins.__LIGHTFM_SETUP__ = True"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", str(src)], check=True)
    print(f"lightfm {VERSION} installed")


if __name__ == "__main__":
    main()
