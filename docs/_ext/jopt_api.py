"""Generate the API reference: one page per family, an entry for every public name.

Public names are read from the packages themselves (``jopt``'s flat namespace and
the ``__all__`` of :mod:`jopt.schedules`, :mod:`jopt.sweep`,
:mod:`jopt.distributed`, :mod:`jopt.precision`), so a new function appears in
the reference without editing the docs. ``jopt.contrib`` mirrors optax's layout
with names documented at top level: its page links each name to that entry.
:func:`public_names` is also what ``tests/test_docs.py`` checks the built
site's inventory against.
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections import defaultdict
from pathlib import Path

SUBPACKAGES = ("jopt.schedules", "jopt.sweep", "jopt.distributed", "jopt.precision")


def _exported(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(n for n in names if not isinstance(getattr(module, n, None), types.ModuleType))


def public_names() -> dict[str, list[str]]:
    """``{namespace: [names]}`` for every documented namespace (``jopt.contrib`` included)."""
    out = {"jopt": _exported(importlib.import_module("jopt"))}
    for pkg in (*SUBPACKAGES, "jopt.contrib"):
        out[pkg] = _exported(importlib.import_module(pkg))
    return out


def _directive(obj: object) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


def _family(obj: object, namespace: str) -> str:
    """The defining module of ``obj`` (its family page), or the namespace for plain values."""
    module = getattr(obj, "__module__", None) or namespace
    if not module.startswith("jopt") or not (inspect.isclass(obj) or callable(obj)):
        return namespace
    return module


def _title(module_name: str) -> str:
    try:
        doc = inspect.getdoc(importlib.import_module(module_name)) or ""
    except ImportError:
        doc = ""
    first = doc.strip().splitlines()[0].rstrip(".") if doc.strip() else module_name
    return f"{first}"


def _page(path: Path, title: str, intro: str, entries: list[tuple[str, str]]) -> None:
    lines = [title, "=" * max(len(title), 3), "", intro, ""]
    for directive, qualname in entries:
        lines += [f".. {directive}:: {qualname}", ""]
    text = "\n".join(lines)
    if not path.exists() or path.read_text() != text:  # untouched pages keep Sphinx's cache
        path.write_text(text)


def write_reference(out_dir: Path) -> list[str]:
    """Write ``api/*.rst`` pages into ``out_dir``; returns the page names for the index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = public_names()
    pages: list[str] = []
    families: dict[str, list[tuple[str, str]]] = defaultdict(list)
    jopt = importlib.import_module("jopt")
    for name in names["jopt"]:
        obj = getattr(jopt, name)
        families[_family(obj, "jopt")].append((_directive(obj), f"jopt.{name}"))
    for module_name, entries in sorted(families.items()):
        slug = module_name.replace(".", "_")
        intro = f"Names defined in ``{module_name}``, all available as ``jopt.<name>``."
        _page(out_dir / f"{slug}.rst", f"{_title(module_name)} (``{module_name}``)", intro, entries)
        pages.append(slug)
    for pkg in SUBPACKAGES:
        module = importlib.import_module(pkg)
        entries = [(_directive(getattr(module, n)), f"{pkg}.{n}") for n in names[pkg]]
        slug = pkg.replace(".", "_")
        _page(out_dir / f"{slug}.rst", f"``{pkg}``", f".. automodule:: {pkg}\n   :no-members:", entries)
        pages.append(slug)
    contrib = ["``jopt.contrib``", "=" * 16, "", ".. automodule:: jopt.contrib", "   :no-members:", ""]
    contrib += [f"* ``jopt.contrib.{n}`` — :py:obj:`jopt.{n}`" for n in names["jopt.contrib"]]
    (out_dir / "jopt_contrib.rst").write_text("\n".join(contrib) + "\n")
    pages.append("jopt_contrib")
    return pages


def _on_builder_inited(app) -> None:
    api = Path(app.srcdir) / "api"
    pages = write_reference(api)
    index = ["API reference", "=============", "", ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {p}" for p in sorted(pages)]
    text = "\n".join(index) + "\n"
    if not (api / "index.rst").exists() or (api / "index.rst").read_text() != text:
        (api / "index.rst").write_text(text)


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
