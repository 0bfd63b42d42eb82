"""The documentation: the generated config reference, the README's size and commands, the site's build.

The configuration reference (docs/configuration.md) is generated at build time by docs/hooks.py
from the config dataclasses; these tests hold it to every field, so a new field without its
``doc`` fails here, not only in CI's ``mkdocs build --strict``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from movierec.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _hooks():
    """docs/hooks.py as a module (without leaving a __pycache__ in docs/)."""
    spec = importlib.util.spec_from_file_location("movierec_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = before
    return module


def _config_fields() -> dict[str, dataclasses.Field]:
    """Every key a config file may set (dotted), walked here independently of the hook."""
    out: dict[str, dataclasses.Field] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                out[prefix + f.name] = f

    walk(Config, "")
    return out


def test_every_config_field_is_documented():
    missing = [k for k, f in _config_fields().items() if not str(f.metadata.get("doc") or "").strip()]
    assert not missing, f"config fields without doc= in src/movierec/config.py: {missing}"


def test_the_reference_covers_every_config_field():
    hooks = _hooks()
    text = hooks.render()
    fields = _config_fields()
    assert sorted(hooks.keys()) == sorted(fields)
    for key, f in fields.items():
        # a field's row: five cells (so nothing in its text split a column); the overview's
        # rows (two cells) name the sections and workdir
        rows = [line for line in text.splitlines()
                if line.startswith(f"| `{key}` |") and line.replace("\\|", "").count("|") == 6]
        assert len(rows) == 1, f"{key}: {len(rows)} rows in the generated reference"
        assert hooks._escape(f.metadata["doc"]) in rows[0], key
    for name, _, cls in hooks.sections():
        if cls is not None:
            assert f"{{#{name.replace('.', '-')}}}" in text, f"no heading for section {name}"


def test_a_field_without_a_doc_fails_the_reference():
    hooks = _hooks()

    @dataclasses.dataclass
    class Section:
        documented: int = dataclasses.field(default=1, metadata={"doc": "has one"})
        undocumented: int = 2

    with pytest.raises(hooks.MissingDoc, match="section.undocumented"):
        for f, tp in hooks.fields(Section):
            hooks._row(f"section.{f.name}", f, tp)


def test_the_configuration_page_holds_the_marker():
    hooks = _hooks()
    assert hooks.MARKER in (DOCS / hooks.PAGE).read_text(encoding="utf-8")
    assert "docs/hooks.py" in yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["hooks"]


def test_every_page_is_in_the_nav():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from pages(value)
            else:
                yield value

    listed = set(pages(nav))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == listed


def test_the_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    install = re.search(r"^\.venv/bin/pip install -q -e '(\.\[[a-z,]+\])'$", ci, re.M)
    assert install, ".ci/run no longer installs the test extras the way the README says"
    assert re.search(r"^\.venv/bin/python -m pytest$", ci, re.M)
    test_command = (f"python3 -m venv .venv && .venv/bin/pip install -e '{install.group(1)}' "
                    "&& .venv/bin/python -m pytest")
    assert test_command in text
    assert ("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/movierec train --config "
            "configs/default.yaml && .venv/bin/movierec recommend --config configs/default.yaml "
            "--user u00001") in text
    # the README must say how to get the CPU build of torch
    assert "--index-url https://download.pytorch.org/whl/cpu" in text


def test_the_site_builds_strictly(tmp_path):
    missing = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(m.split(".")[0]) is None
               or (m.count(".") and importlib.util.find_spec(m) is None)]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)}): pip install -e '.[docs]' "
                    "(.ci/run builds the site after the tests)")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "model.factors" in page and "config-reference" not in page
    assert not (site / "hooks.py").exists()
