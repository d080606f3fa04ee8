"""Generate the API reference: an entry for every public name, grouped by family.

Public names are read from the packages themselves (``jopt``'s flat namespace
and the ``__all__`` of the documented subpackages), so a new function appears in
the reference without editing the docs. Each *object* is documented once, at
its home:

* an object exported by a subpackage that also defines it (a schedule, a sweep
  function, :func:`jopt.distributed.init_sharded`) lives on that subpackage's
  page, in a section per defining module;
* every other top-level name lives on the page of its defining module (its
  family: ``jopt.optimizers.adam_family``, ``jopt.transforms.clipping``, ...).

Every other name of the same object (``jopt.warmup_cosine_decay_schedule`` for
``jopt.schedules.warmup_cosine_decay_schedule``, all of ``jopt.contrib``) is an
alias: its entry says where it is also available, and the alias is registered in
the Python domain (so ``:py:obj:`` links and the ``objects.inv`` inventory know
it) pointing at the home entry. References to defining-module paths such as
``jopt.core.GradientTransformation`` in type hints resolve to the home entry too.
:func:`public_names` is what ``tests/test_docs.py`` checks the built site's
inventory against.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from sphinx.util import logging
from sphinx.util.nodes import make_refnode

#: Namespaces with a page of their own (besides ``jopt``'s flat namespace and ``jopt.contrib``).
SUBPACKAGES = (
    "jopt.hyperparams",
    "jopt.schedules",
    "jopt.sweep",
    "jopt.distributed",
    "jopt.precision",
    "jopt.tree",
    "jopt.tree_utils",
    "jopt.projections",
    "jopt.datasets",
    "jopt.fused",
)
#: Every documented namespace, in the order homes are chosen among equals.
NAMESPACES = ("jopt", *SUBPACKAGES, "jopt.contrib")
#: Captions of the reference index, by the package that holds a family module.
GROUPS = {
    "jopt.optimizers": "Optimizers",
    "jopt.transforms": "Transforms",
    "jopt": "Protocol, hyperparameters and numerics",
    "namespaces": "Schedules, sweeps, scale and utilities",
}

logger = logging.getLogger(__name__)


def _exported(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(n for n in names if not isinstance(getattr(module, n, None), types.ModuleType))


def public_names() -> dict[str, list[str]]:
    """``{namespace: [names]}`` for every documented namespace (``jopt.contrib`` included)."""
    return {ns: _exported(importlib.import_module(ns)) for ns in NAMESPACES}


class Entry(NamedTuple):
    """One documented object: its home name, defining module and the names it is also known by."""

    home: str
    module: str
    directive: str
    aliases: tuple[str, ...]


def _directive(obj: object) -> str:
    if typing.get_origin(obj) is not None:  # a type alias such as ``Hyperparam``
        return "autodata"
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


def _defining_module(obj: object, namespace: str) -> str:
    module = getattr(obj, "__module__", None) or namespace
    if not module.startswith("jopt") or not (inspect.isclass(obj) or callable(obj)):
        return namespace
    return module


def _home(obj: object, names: list[str]) -> str:
    """The name an object is documented under, among its public ``names`` (``ns.name``)."""

    def rank(full: str) -> tuple:
        ns, name = full.rsplit(".", 1)
        module = _defining_module(obj, ns)
        defines = ns != "jopt" and (module == ns or module.startswith(ns + "."))
        return (not defines, ns != "jopt", NAMESPACES.index(ns), name != getattr(obj, "__name__", name), name)

    return min(names, key=rank)


def entries() -> list[Entry]:
    """Every documented object once, with its home name and aliases."""
    by_object: dict[int, tuple[object, list[str]]] = {}
    for ns, names in public_names().items():
        module = importlib.import_module(ns)
        for name in names:
            obj = getattr(module, name)
            # Plain values (numbers, strings) are not identified by identity: each name is its own entry.
            key = id(obj) if (inspect.isclass(obj) or callable(obj)) else id((ns, name))
            by_object.setdefault(key, (obj, []))[1].append(f"{ns}.{name}")
    out = []
    for obj, names in by_object.values():
        home = _home(obj, names)
        ns = home.rsplit(".", 1)[0]
        aliases = tuple(sorted(n for n in names if n != home))
        out.append(Entry(home, _defining_module(obj, ns), _directive(obj), aliases))
    return sorted(out)


def _title(module_name: str) -> tuple[str, str]:
    """A short page or section title and the intro paragraph, from a module's docstring."""
    try:
        doc = inspect.getdoc(importlib.import_module(module_name)) or ""
    except ImportError:
        doc = ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split()) if doc.strip() else module_name
    title = paragraph.split(": ")[0].split(" (``optax")[0].rstrip(".")
    if len(title) > 50:  # a short title for the sidebar: cut at the first top-level comma
        depth = 0
        for i, ch in enumerate(title):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == "," and depth == 0:
                title = title[:i]
                break
    return title, paragraph


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # untouched pages keep Sphinx's cache
        path.write_text(text)


def _heading(text: str, underline: str) -> list[str]:
    return [text, underline * max(len(text), 3), ""]


def _family_page(module_name: str, items: list[Entry]) -> str:
    title, intro = _title(module_name)
    lines = _heading(title, "=")
    note = f"Defined in ``{module_name}``; every name below is available as ``jopt.<name>``."
    lines += [intro, "", note, ""]
    for e in items:
        lines += [f".. {e.directive}:: {e.home}", ""]
    return "\n".join(lines)


def _namespace_page(ns: str, items: list[Entry], also: list[tuple[str, str]]) -> str:
    lines = _heading(f"``{ns}``", "=") + [f".. automodule:: {ns}", "   :no-members:", ""]
    sections: dict[str, list[Entry]] = defaultdict(list)
    for e in items:
        sections[e.module].append(e)
    for module_name, group in sorted(sections.items()):
        if len(sections) > 1 or module_name != ns:
            title, _ = _title(module_name)
            lines += _heading(title if module_name != ns else f"``{ns}``", "-")
        for e in group:
            lines += [f".. {e.directive}:: {e.home}", ""]
    if also:
        lines += _heading("Also exported here", "-")
        lines += [f"Names of ``{ns}`` documented elsewhere (the same objects):", ""]
        lines += [f"* ``{alias}`` — :py:obj:`{home}`" for alias, home in also] + [""]
    return "\n".join(lines)


def write_reference(out_dir: Path) -> dict[str, list[str]]:
    """Write ``api/*.rst`` pages into ``out_dir``; returns ``{index caption: [page names]}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    all_entries = entries()
    families: dict[str, list[Entry]] = defaultdict(list)
    namespaces: dict[str, list[Entry]] = defaultdict(list)
    also: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for e in all_entries:
        ns = e.home.rsplit(".", 1)[0]
        (families[e.module] if ns == "jopt" else namespaces[ns]).append(e)
        for alias in e.aliases:
            if alias.rsplit(".", 1)[0] != "jopt":
                also[alias.rsplit(".", 1)[0]].append((alias, e.home))
    groups: dict[str, list[str]] = defaultdict(list)
    for module_name, items in sorted(families.items()):
        slug = "family_" + module_name.replace(".", "_")
        _write(out_dir / f"{slug}.rst", _family_page(module_name, items))
        package = module_name.rsplit(".", 1)[0] if module_name.count(".") >= 2 else "jopt"
        groups[GROUPS.get(package, f"``{package}``")].append(slug)
    for ns in NAMESPACES[1:]:
        slug = ns.replace(".", "_")
        _write(out_dir / f"{slug}.rst", _namespace_page(ns, namespaces[ns], sorted(also[ns])))
        groups[GROUPS["namespaces"]].append(slug)
    return dict(groups)


def _index(groups: dict[str, list[str]]) -> str:
    lines = _heading("API reference", "=")
    lines += [
        "Every public name of jopt, generated from its docstring. Optimizers and transforms are",
        "top-level names (``jopt.adamw``, ``jopt.clip_by_global_norm``), grouped here by family;",
        "the subpackages have a page each. Use the search box for a name.",
        "",
        "Names of types in the signatures:",
        "",
        "* ``Scalar``: a Python number or an array (traced or not);",
        "* ``Hyperparam``: a ``Scalar`` or a schedule, a function ``step -> value``",
        "  (:py:data:`jopt.hyperparams.Hyperparam`);",
        "* ``LearningRate``: a ``Hyperparam`` or a stateful schedule such as",
        "  :py:func:`jopt.reduce_on_plateau`;",
        "* ``PyTree``: any pytree of arrays; ``MaskOrFn``: a pytree of booleans or a function",
        "  ``params -> pytree of booleans``; ``DType``: a dtype or ``None``.",
        "",
    ]
    order = [*GROUPS.values()]
    for caption in sorted(groups, key=lambda c: (order.index(c) if c in order else len(order), c)):
        lines += [".. toctree::", "   :maxdepth: 1", f"   :caption: {caption}", ""]
        lines += [f"   {p}" for p in groups[caption]] + [""]
    return "\n".join(lines)


def _on_builder_inited(app) -> None:
    api = Path(app.srcdir) / "api"
    groups = write_reference(api)
    keep = {f"{p}.rst" for pages in groups.values() for p in pages} | {"index.rst"}
    for stale in api.glob("*.rst"):  # pages of families that no longer exist
        if stale.name not in keep:
            stale.unlink()
    _write(api / "index.rst", _index(groups))
    app.env.jopt_aliases = {alias: e.home for e in entries() for alias in e.aliases}


def _alias_note(app, what, name, obj, options, lines) -> None:
    """Append the other names of a documented object to its entry."""
    by_home = getattr(app, "_jopt_by_home", None)
    if by_home is None:
        by_home = app._jopt_by_home = {e.home: e.aliases for e in entries()}
    if by_home.get(name):
        lines += ["", "Also available as " + ", ".join(f"``{a}``" for a in by_home[name]) + "."]


_ARG_SECTIONS = {"Args:", "Arguments:", "Parameters:", "Keyword Args:", "Keyword Arguments:"}
_NAME = r"\*{0,2}\w+(?:\s*\([^)]*\))?"
_ITEM = re.compile(rf"^\s*{_NAME}(?:\s*,\s*{_NAME})*\s*:(?:\s|$)")
_WRAPPED_NAMES = re.compile(rf"^\s*{_NAME}(?:\s*,\s*{_NAME})*\s*,\s*$")


def _normalize_args(app, what, name, obj, options, lines) -> None:
    """Accept two argument-list styles of jopt's docstrings that napoleon misreads.

    A list of names wrapped over several lines (``b1, b2, eps,`` / ``gamma: see ...``) is
    joined into one ``a, b, c: description`` item; a line of free text in an ``Args:``
    section (``Others as for ...``) becomes a paragraph after the section.
    """
    out: list[str] = []
    moved: list[str] = []
    section = item = None  # indents of the open section's header and of its items
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if line.strip() in _ARG_SECTIONS:
            section, item = indent, None
        elif section is not None and line.strip():
            if indent <= section:
                out += ["", *moved, ""] if moved else []
                moved, section = [], None
            else:
                item = indent if item is None else item
                while indent == item and _WRAPPED_NAMES.match(line) and i + 1 < len(lines):
                    i += 1
                    line = line.rstrip() + " " + lines[i].strip()
                if indent == item and not _ITEM.match(line):
                    moved.append(" " * section + line.strip())
                    i += 1
                    continue
        out.append(line)
        i += 1
    lines[:] = out + (["", *moved] if moved else [])


def _register_aliases(app, env) -> None:
    """Register every alias in the Python domain, pointing at its home entry."""
    from sphinx.domains.python import ObjectEntry

    domain = env.get_domain("py")
    for alias, home in getattr(env, "jopt_aliases", {}).items():
        target = domain.objects.get(home)
        if target is None:
            logger.warning("jopt_api: %s (home of %s) has no reference entry", home, alias)
            continue
        domain.objects[alias] = ObjectEntry(target.docname, target.node_id, target.objtype, True)


def _lookup(path: str) -> object | None:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _resolve_defining_path(app, env, node, contnode):
    """Resolve ``jopt.core.X``-style references (type hints) to the entry documenting ``X``.

    A ``jopt.*`` reference from a guide or notebook that resolves to nothing is a warning
    (an error under ``-W``): guides must not name what jopt does not have.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("jopt."):
        return None
    homes = getattr(app, "_jopt_homes", None)
    if homes is None:
        homes = app._jopt_homes = {}
        for e in entries():
            homes[id(_lookup(e.home))] = e.home
    obj = _lookup(target)
    home = homes.get(id(obj)) if obj is not None else None
    entry = env.get_domain("py").objects.get(home) if home else None
    if entry is None:
        if not node["refdoc"].startswith("api/"):  # a guide names something the reference lacks
            logger.warning("unresolved reference to %s", target, location=node, type="jopt", subtype="ref")
        return None
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, home)


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    app.connect("autodoc-process-docstring", _normalize_args, priority=400)  # before napoleon
    app.connect("autodoc-process-docstring", _alias_note)
    app.connect("env-check-consistency", _register_aliases)
    app.connect("missing-reference", _resolve_defining_path)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
