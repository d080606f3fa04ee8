"""Run optax's own test files against jopt: a pytest plugin that swaps optax's modules for jopt proxies.

The optax wheel ships its tests (``site-packages/optax/**/*_test.py``). To run them against
jopt, ``benchmarks/optax_conformance.py`` copies them at run time into a temporary directory
(flat names such as ``_src__alias_test.py``; nothing is copied into the repository) and runs
pytest there with this plugin::

    python -m pytest TMPDIR -p tests.optax_substitute --optax-impl=jopt

With ``--optax-impl=jopt`` the plugin, before any test module is imported, imports every
real optax module and then replaces each ``sys.modules["optax..."]`` entry by a proxy module
whose attributes resolve to jopt's object of the same name:

* public namespaces mirror jopt's: ``optax.X`` -> ``jopt.X``, ``optax.schedules.X`` ->
  ``jopt.schedules.X``, ``optax.transforms.X`` -> ``jopt.transforms.X``, ``optax.tree.X`` ->
  ``jopt.tree.X``, ``optax.tree_utils.X`` -> ``jopt.tree_utils.X`` (or ``jopt.tree.X`` while
  jopt has no ``tree_utils``), ``optax.contrib.X`` -> ``jopt.contrib.X``, likewise
  ``projections``, ``losses``, ``second_order``, ``assignment``, ``perturbations``,
  ``microbatching`` and ``experimental``. The lookup is done at every attribute access, so
  names added to jopt later are picked up.
* a private module (``optax._src.alias``, ``optax.transforms._clipping``, ...) has no jopt
  counterpart, so its name ``n`` is looked up at the public places where optax exports the
  very same object (``optax._src.alias.adam`` is ``optax.adam``, so it maps to ``jopt.adam``;
  ``optax.contrib._muon.muon`` maps to ``jopt.contrib.muon``), then, if ``n`` has no leading
  underscore, in the jopt module of the same name where one exists (``optax._src.numerics``
  -> ``jopt.numerics``, ``optax.transforms._clipping`` -> ``jopt.transforms.clipping``). An
  optax-private helper found nowhere has no jopt counterpart.
* a name jopt does not have raises :class:`MissingJoptName` (an ``AttributeError``) during a
  test, so the test fails and is counted. While a test module is being imported the name
  resolves to a :class:`MissingName` placeholder instead, which raises the same error as soon
  as a test uses it, so one missing name used at module level (in a ``parameterized`` list, as
  the base of a helper class) fails the tests that use it, not the whole file.

It never falls back to optax's implementation of an optimizer, transform, schedule or
utility. The only objects taken from optax itself are:

* test infrastructure: ``optax._src.test_utils`` (assertion helpers), and
  ``optax._src.utils.x64_precision`` (a context manager that switches ``jax_enable_x64``);
  chex, absl, numpy, scipy and sklearn are untouched;
* optax's own test modules (``from optax._src import alias_test``), which are the copied
  test files, imported under the same substitution;
* when jopt lacks them, the pure typing aliases in :data:`TYPE_ALIASES` (``Params``,
  ``Updates``, ``OptState``, ``Schedule``, ``PRNGKey``, ... : ``typing`` constructs, aliases
  of jax/chex types, or the ``Protocol`` classes ``TransformInitFn`` / ``TransformUpdateFn``
  / ``TransformUpdateExtraArgsFn``, used in annotations, with no behaviour). Every protocol
  class with behaviour (``GradientTransformation``, ``GradientTransformationExtraArgs``, ``EmptyState``,
  ``StatefulSchedule``, ...) must come from jopt.

What a jopt name is bound to is jopt's business: ``jopt.losses`` re-exports ``optax.losses``
(jopt does not reimplement losses), so optax's loss tests (``--scope all``) run optax's code.

``--optax-impl=optax`` (the default) leaves optax alone: the baseline run. Both modes
accept ``--conformance-select=FILE`` (run only the node ids listed in FILE),
``--conformance-report=FILE`` (write every test's outcome, duration and error as JSON) and
``--conformance-timeout=SECONDS`` (fail a test that runs longer, default 300).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = [
    "INFRASTRUCTURE",
    "MissingJoptName",
    "ConformanceTimeout",
    "MissingName",
    "TYPE_ALIASES",
    "install",
]

#: Mirror of optax's public subpackages in jopt: candidates, first existing module wins.
PUBLIC_MIRRORS: dict[str, tuple[str, ...]] = {
    "optax": ("jopt",),
    "optax.tree_utils": ("jopt.tree_utils", "jopt.tree"),
}

#: Typing aliases optax's tests use in annotations; taken from optax only when jopt lacks them.
TYPE_ALIASES = frozenset(
    {
        "ArrayTree",
        "OptState",
        "PRNGKey",
        "Params",
        "PyTree",
        "ScalarOrSchedule",
        "Schedule",
        "Shape",
        "TransformInitFn",
        "TransformUpdateExtraArgsFn",
        "TransformUpdateFn",
        "Updates",
    }
)

#: Test-infrastructure objects always taken from optax: (module, name); name "*" is the module.
INFRASTRUCTURE = frozenset(
    {
        ("optax._src.test_utils", "*"),
        ("optax._src.utils", "x64_precision"),
    }
)


class MissingJoptName(AttributeError):
    """An optax name used by optax's tests that jopt does not provide."""


class MissingName:
    """Placeholder for a missing name met while a test module is imported.

    While the import lasts, calling it, reading an attribute or indexing gives another
    placeholder and subclassing it gives a class that cannot be instantiated; once a test runs,
    any use raises :class:`MissingJoptName`. So a missing name in module-level code (a
    ``parameterized`` list, a helper class) fails the tests that use it, not the whole file.
    """

    def __init__(self, message: str):
        object.__setattr__(self, "_message", message)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        message = object.__getattribute__(self, "_message")
        if _RESOLVER is not None and _RESOLVER.importing:
            return MissingName(message)
        raise MissingJoptName(message)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._fail()

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        message = object.__getattribute__(self, "_message")

        def new(cls: type, *args: Any, **kwargs: Any) -> Any:
            raise MissingJoptName(message)

        return (type("MissingBase", (), {"__new__": new, "__doc__": message}),)

    def __repr__(self) -> str:
        return f"<MissingName: {object.__getattribute__(self, '_message')}>"

    __call__ = __getitem__ = _fail

    def __iter__(self) -> Any:
        __tracebackhide__ = True
        raise MissingJoptName(object.__getattribute__(self, "_message"))

    __add__ = __mul__ = __setattr__ = __iter__
    __hash__ = object.__hash__


def _is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].endswith("_test")


def _is_public(modname: str) -> bool:
    return not any(part.startswith("_") for part in modname.split("."))


def _optax_module_names() -> list[str]:
    """Dotted names of every optax module on disk (``optax/_src`` is a namespace package,
    which ``pkgutil.walk_packages`` skips, so the directory tree is walked instead)."""
    import optax

    root = os.path.dirname(optax.__file__)
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, root)
        package = "optax" if rel == "." else "optax." + rel.replace(os.sep, ".")
        names.append(package)
        names += [
            f"{package}.{f[:-3]}" for f in sorted(filenames) if f.endswith(".py") and f != "__init__.py"
        ]
    return [n for n in names if not _is_test_module(n)]


def _import_all_optax() -> dict[str, types.ModuleType]:
    """Import every optax module (tests excluded) and return them by name."""
    for name in _optax_module_names():
        try:
            importlib.import_module(name)
        except Exception:  # optional dependencies of a few modules; skip them
            continue
    return {
        name: mod
        for name, mod in sys.modules.items()
        if (name == "optax" or name.startswith("optax.")) and mod is not None and not _is_test_module(name)
    }


def _public_index(real: dict[str, types.ModuleType]) -> dict[int, list[tuple[str, str]]]:
    """Where optax exports each function or class publicly: ``id(obj) -> [(module, name)]``."""
    index: dict[int, list[tuple[str, str]]] = {}
    for modname in sorted(real, key=lambda n: (n.count("."), n)):
        if not _is_public(modname):
            continue
        mod = real[modname]
        for name, obj in vars(mod).items():
            if name.startswith("_") or isinstance(obj, types.ModuleType) or not callable(obj):
                continue
            index.setdefault(id(obj), []).append((modname, name))
    return index


def _is_typing_alias(obj: Any) -> bool:
    """A typing construct, a ``Protocol`` class, or an alias of a non-optax object (``jax.Array``)."""
    if getattr(obj, "_is_protocol", False):
        return True
    if type(obj).__module__ in ("typing", "types", "collections.abc", "typing_extensions"):
        return True
    return not str(getattr(obj, "__module__", "optax")).startswith("optax")


class _Resolver:
    """Maps (optax module, name) to jopt's object, or reports it missing."""

    def __init__(self, real: dict[str, types.ModuleType], test_modules: dict[str, str]):
        self.real = real
        self.index = _public_index(real)
        self.test_modules = test_modules  # optax dotted name -> flat module name of the copy
        self.importing = 0  # >0 while a test module is being imported (collection)

    def jopt_module(self, optax_public: str) -> tuple[types.ModuleType | None, str]:
        candidates = PUBLIC_MIRRORS.get(optax_public, ("jopt" + optax_public[len("optax") :],))
        for cand in candidates:
            try:
                return importlib.import_module(cand), cand
            except ImportError:
                continue
        return None, candidates[0]

    def lookup_public(self, optax_public: str, name: str, optax_obj: Any) -> tuple[Any, str]:
        """jopt's object for ``optax_public.name``, or (None, where it was looked for)."""
        mod, where = self.jopt_module(optax_public)
        if mod is None:
            return None, f"{where} (no such module)"
        obj = getattr(mod, name, None)
        if obj is None or (isinstance(obj, types.ModuleType) and not isinstance(optax_obj, types.ModuleType)):
            return None, f"{where}.{name}"
        return obj, f"{where}.{name}"

    def lookup_private_mirror(self, modname: str, name: str) -> tuple[Any, str]:
        """``optax._src.numerics.abs_sq`` -> ``jopt.numerics.abs_sq``; ``optax.P._M.n`` -> ``jopt.P.M.n``."""
        parts = [p.lstrip("_") for p in modname.split(".")[1:] if p != "_src"]
        where = ".".join(["jopt", *parts])
        try:
            mod = importlib.import_module(where)
        except ImportError:
            return None, f"{where} (no such module)"
        obj = getattr(mod, name, None)
        return (None if obj is None or isinstance(obj, types.ModuleType) else obj), f"{where}.{name}"

    def public_places(self, modname: str, optax_obj: Any) -> list[tuple[str, str]]:
        places = list(self.index.get(id(optax_obj), [])) if callable(optax_obj) else []
        home = ".".join(p for p in modname.split(".") if not p.startswith("_")) or "optax"

        def rank(place: tuple[str, str]) -> tuple[int, int]:
            return (0 if place[0] == home else 1 if place[0] == "optax" else 2, place[0].count("."))

        return sorted(places, key=rank)

    def resolve(self, modname: str, name: str) -> Any:
        __tracebackhide__ = True
        full = f"{modname}.{name}"
        if full in sys.modules and (full in self.real or full in self.test_modules):
            return sys.modules[full]
        if full in self.test_modules:
            return importlib.import_module(self.test_modules[full])
        real_mod = self.real[modname]
        if (modname, name) in INFRASTRUCTURE:
            return getattr(real_mod, name)
        if not hasattr(real_mod, name):
            raise AttributeError(f"module {modname!r} has no attribute {name!r} (in optax either)")
        optax_obj = getattr(real_mod, name)
        if _is_public(modname):
            places = [(modname, name)]
        else:
            places = self.public_places(modname, optax_obj)
        looked = []
        for pub_mod, pub_name in places:
            obj, where = self.lookup_public(pub_mod, pub_name, optax_obj)
            if obj is not None:
                return obj
            looked.append(where)
        if not _is_public(modname) and not name.startswith("_"):
            obj, where = self.lookup_private_mirror(modname, name)
            if obj is not None:
                return obj
            looked.append(where)
        if name in TYPE_ALIASES and _is_typing_alias(optax_obj):
            return optax_obj
        where = ", ".join(looked) if looked else "nowhere: a private helper"
        private = "" if places else "private to optax, "
        message = f"jopt has no counterpart of optax name {full} ({private}looked up: {where})"
        if self.importing:
            return MissingName(message)
        raise MissingJoptName(message)


class _Proxy(types.ModuleType):
    """A stand-in for an optax module; attribute reads go through the resolver."""

    def __init__(self, name: str, real: types.ModuleType, resolver: _Resolver):
        super().__init__(name, getattr(real, "__doc__", None))
        self.__file__ = getattr(real, "__file__", None)
        if hasattr(real, "__path__"):
            self.__path__ = []  # every real submodule is already proxied; no finder needed
        self._resolver = resolver

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        __tracebackhide__ = True
        return self._resolver.resolve(self.__name__, name)

    def __dir__(self) -> list[str]:
        return dir(self._resolver.real[self.__name__])


_RESOLVER: _Resolver | None = None


def install(test_modules: dict[str, str]) -> _Resolver:
    """Replace every optax module in ``sys.modules`` by a jopt proxy (test infrastructure stays real).

    ``test_modules`` maps optax's dotted names of test modules (``optax._src.alias_test``) to
    the module names of their copies, so test files importing each other get the copies.
    """
    global _RESOLVER
    import jopt  # noqa: F401  (import jopt before optax is hidden from it)

    real = _import_all_optax()
    resolver = _Resolver(real, test_modules)
    for name in real:  # jopt modules that import optax must see the real one
        if _is_public(name):
            resolver.jopt_module(name)
    for name, mod in real.items():
        if (name, "*") in INFRASTRUCTURE:
            continue
        sys.modules[name] = _Proxy(name, mod, resolver)
    _RESOLVER = resolver
    return resolver


# ----------------------------------------------------------------------------- pytest plugin

MANIFEST = "conformance_manifest.json"  # written by the runner next to the copies: {flat name: rel path}
_STATE: dict[str, Any] = {}
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("optax-conformance")
    group.addoption("--optax-impl", choices=("optax", "jopt"), default="optax", help="implementation")
    group.addoption("--conformance-select", default=None, help="file of node ids to run (others deselected)")
    group.addoption("--conformance-report", default=None, help="write per-test outcomes as JSON here")
    group.addoption("--conformance-timeout", type=float, default=300.0, help="per-test time limit (s)")


def _test_module_map(rootdir: str) -> dict[str, str]:
    """optax dotted test-module names -> flat names of their copies, from the runner's manifest."""
    path = os.path.join(rootdir, MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        manifest = json.load(f)
    return {"optax." + rel[: -len(".py")].replace("/", "."): flat for flat, rel in manifest.items()}


def pytest_configure(config: pytest.Config) -> None:
    _STATE.update(config=config, results={}, collect_errors={}, start=time.time())
    if config.getoption("--optax-impl") == "jopt":
        install(_test_module_map(str(config.rootpath)))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    if _RESOLVER is not None:
        _RESOLVER.importing += 1
    try:
        return (yield)
    finally:
        if _RESOLVER is not None:
            _RESOLVER.importing -= 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = config.getoption("--conformance-select")
    if not path:
        return
    with open(path) as f:
        wanted = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    drop = [it for it in items if it.nodeid not in wanted]
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = [it for it in items if it.nodeid in wanted]


class ConformanceTimeout(Exception):
    """Raised in a test that runs past ``--conformance-timeout``."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    limit = item.config.getoption("--conformance-timeout")
    if not limit or not hasattr(signal, "SIGALRM"):
        return (yield)

    def on_alarm(signum: int, frame: Any) -> None:
        raise ConformanceTimeout(f"test exceeded --conformance-timeout={limit:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Fold the setup/call/teardown (and subtest) reports of a test into one outcome."""
    if "results" not in _STATE:
        return
    entry = _STATE["results"].setdefault(report.nodeid, {"outcome": "passed", "duration": 0.0, "error": ""})
    if not getattr(report, "context", None):  # subtest reports would count the time twice
        entry["duration"] += float(getattr(report, "duration", 0.0) or 0.0)
    if report.passed:
        return
    if report.skipped:
        outcome = "skipped" if report.when in ("setup", "call") else "passed"
    else:
        outcome = "failed" if report.when == "call" else "error"
    if _RANK[outcome] > _RANK[entry["outcome"]]:
        entry["outcome"] = outcome
        entry["error"] = str(report.longrepr)[-6000:]


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if "collect_errors" in _STATE and report.failed:
        _STATE["collect_errors"][report.nodeid] = str(report.longrepr)[-6000:]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    path = config.getoption("--conformance-report")
    if not path or hasattr(config, "workerinput"):  # under xdist the controller writes the report
        return
    data = {
        "impl": config.getoption("--optax-impl"),
        "exitstatus": int(exitstatus),
        "wall_s": time.time() - _STATE["start"],
        "results": _STATE["results"],
        "collect_errors": _STATE["collect_errors"],
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
