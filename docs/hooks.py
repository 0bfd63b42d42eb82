"""MkDocs hook: the configuration reference, generated from ``movierec.config`` at build time.

``docs/configuration.md`` holds the marker below; every build replaces it with one table per
config section, read from the dataclasses themselves (type, default, allowed values, bounds
and the ``doc=`` text each field is declared with), so the page cannot drift from the code.
A field declared without a ``doc`` fails the build (and ``tests/test_docs.py``).

Listed in ``mkdocs.yml`` under ``hooks:``; ``exclude_docs`` keeps this file out of the site.
"""

from __future__ import annotations

import dataclasses
import typing

import yaml

MARKER = "<!-- config-reference -->"
PAGE = "configuration.md"


class MissingDoc(ValueError):
    """A config field has no ``doc`` text."""


def _escape(text: str) -> str:
    """Plain text safe in a Markdown table cell (no HTML, emphasis or column breaks)."""
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("*", "\\*"),
                 ("_", "\\_"), ("`", "\\`"), ("[", "\\["), ("]", "\\]")):
        text = text.replace(a, b)
    return " ".join(text.split())


def _code(text: str) -> str:
    """Inline code in a table cell (``|`` escaped: tables split on it even inside code)."""
    text = text.replace("|", "\\|")
    return f"``{text}``" if "`" in text else f"`{text}`"


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    if value is None:
        return "unset (`null`)"
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return _code(text.removesuffix("...").strip())  # a scalar document ends with "..."


def _rules(meta: typing.Mapping) -> str:
    parts = []
    if meta.get("choices"):
        parts.append("one of " + ", ".join(_code(str(c)) for c in meta["choices"]))
    for key, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if meta.get(key) is not None:
            parts.append(f"{sign} {meta[key]:g}")
    if meta.get("nonempty"):
        parts.append("not empty")
    if meta.get("path"):
        parts.append("a path; relative to the config file's folder")
    return "; ".join(parts)


def fields(cls: type) -> list[tuple[dataclasses.Field, typing.Any]]:
    """The user-facing fields of one dataclass, with their resolved annotations."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def sections() -> list[tuple[str, str, type | None]]:
    """``(dotted key, doc, dataclass or None)`` for every section, nested ones after their parent.

    A top-level key that is a plain value (``workdir``) is listed with ``None``."""
    from movierec.config import Config

    out: list[tuple[str, str, type | None]] = []

    def walk(cls: type, prefix: str) -> None:
        for f, tp in fields(cls):
            if dataclasses.is_dataclass(tp):
                out.append((prefix + f.name, f.metadata.get("doc", ""), tp))
                walk(tp, prefix + f.name + ".")
            elif not prefix:
                out.append((f.name, f.metadata.get("doc", ""), None))

    walk(Config, "")
    return out


def keys() -> list[str]:
    """Every dotted key a config file may set (the leaves: no section keys)."""
    out = []
    for name, _, cls in sections():
        if cls is None:
            out.append(name)
        else:
            out += [f"{name}.{f.name}" for f, tp in fields(cls) if not dataclasses.is_dataclass(tp)]
    return out


def _row(key: str, f: dataclasses.Field, tp: typing.Any) -> str:
    from movierec.config import _type_name

    doc = f.metadata.get("doc")
    if not doc or not str(doc).strip():
        raise MissingDoc(f"config field '{key}' has no doc= text in src/movierec/config.py")
    return (f"| {_code(key)} | {_escape(_type_name(tp))} | {_default(f)} | {_rules(f.metadata)} "
            f"| {_escape(str(doc))} |")


HEADER = "| key | type | default | allowed | what it sets |\n| --- | --- | --- | --- | --- |"


def _anchor(name: str) -> str:
    return name.replace(".", "-")


def render() -> str:
    """The reference as Markdown, to sit under a level-2 heading: an overview, then a table a section."""
    from movierec.config import Config

    top = {f.name: (f, tp) for f, tp in fields(Config)}
    out = ["| key | what it holds |", "| --- | --- |"]
    for name, doc, cls in sections():
        if not doc.strip():
            raise MissingDoc(f"config section '{name}' has no doc text in src/movierec/config.py")
        target = f"[{_code(name)}](#{_anchor(name)})" if cls is not None else _code(name)
        out.append(f"| {target} | {_escape(doc)} |")
    out.append("")
    for name, doc, cls in sections():
        out += [f"### `{name}` {{#{_anchor(name)}}}", ""]
        if cls is None:  # a top-level value: its row says it all
            f, tp = top[name]
            out += [HEADER, _row(name, f, tp)]
        else:
            out += [f"{_escape(doc[:1].upper() + doc[1:])}.", "", HEADER]
            leaves = [(f, tp) for f, tp in fields(cls) if not dataclasses.is_dataclass(tp)]
            out += [_row(f"{name}.{f.name}", f, tp) for f, tp in leaves]
            nested = [f.name for f, tp in fields(cls) if dataclasses.is_dataclass(tp)]
            if nested:
                out += ["", "Sub-sections: " + ", ".join(
                    f"[{_code(name + '.' + n)}](#{_anchor(name + '.' + n)})" for n in nested) + "."]
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' signature)
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"docs/{PAGE} lost its marker {MARKER!r}: the config reference has nowhere to go")
    try:
        return markdown.replace(MARKER, render())
    except MissingDoc as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(str(exc)) from exc
