"""Run optax's own test files (from the installed wheel) against optax or jopt and read the outcomes.

Used by ``benchmarks/optax_conformance.py`` (tables, failure report, ``--update-expected``)
and ``tests/test_optax_conformance.py`` (the CI regression gate). The test files are copied at
run time into a temporary directory under flat names (``_src/alias_test.py`` ->
``_src__alias_test.py``) and pytest runs there in a subprocess with the
``tests.optax_substitute`` plugin; with ``impl="jopt"`` the plugin hands the test modules
jopt-backed substitutes for optax's modules (see that module's docstring for the rules).

Node ids are reported in optax's own spelling, ``_src/alias_test.py::AliasTest::test_adam0``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED_FILE = os.path.join(REPO, "tests", "optax_conformance_expected.txt")

__all__ = [
    "EXPECTED_FILE",
    "Expected",
    "RunResult",
    "SCOPES",
    "categorize",
    "optax_dir",
    "optax_test_files",
    "read_expected",
    "run_tests",
    "write_expected",
]

#: Groups of optax test files (glob patterns relative to the optax package directory).
SCOPES: dict[str, tuple[str, ...]] = {
    # optimizers, transforms, schedules, combinators, tree utilities, contrib, projections
    "core": (
        "_src/*_test.py",
        "transforms/*_test.py",
        "schedules/*_test.py",
        "contrib/*_test.py",
        "tree_utils/*_test.py",
        "projections/*_test.py",
        "optax_test.py",
    ),
    # the optimizer, transform, schedule and combinator files (optax 0.2.8 passes 815 of their 886)
    "main": (
        "_src/alias_test.py",
        "_src/base_test.py",
        "_src/combine_test.py",
        "_src/factorized_test.py",
        "_src/transform_test.py",
        "_src/update_test.py",
        "transforms/*_test.py",
        "schedules/*_test.py",
    ),
    # plus losses, assignment, perturbations, microbatching, experimental, second_order
    "all": ("*_test.py", "**/*_test.py"),
}


def optax_dir() -> str:
    """Directory of the installed optax package (the tests are read from there)."""
    import optax

    return os.path.dirname(optax.__file__)


def optax_version() -> str:
    import optax

    return optax.__version__


def optax_test_files(patterns: Sequence[str]) -> list[str]:
    """Relative paths (``_src/alias_test.py``) of the installed optax test files matching ``patterns``."""
    root = optax_dir()
    found = set()
    for dirpath, _, names in os.walk(root):
        for name in names:
            if not name.endswith("_test.py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if any(fnmatch.fnmatch(rel, pat) if "/" in pat else rel == pat for pat in patterns):
                found.add(rel)
    return sorted(found)


def flat_name(rel: str) -> str:
    """``_src/alias_test.py`` -> ``_src__alias_test`` (the module name of the copy)."""
    return rel[: -len(".py")].replace("/", "__")


@dataclass
class RunResult:
    """Outcomes of one pytest run over optax test files.

    ``results`` maps optax-spelled node ids to ``{"outcome", "duration", "error"}``, outcome one
    of passed/failed/error/skipped; ``collect_errors`` maps a file that could not be imported
    to the error text.
    """

    impl: str
    files: list[str]
    results: dict[str, dict] = field(default_factory=dict)
    collect_errors: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    returncode: int = 0
    output_tail: str = ""

    def file_of(self, nodeid: str) -> str:
        return nodeid.split("::", 1)[0]

    def per_file(self) -> dict[str, Counter]:
        """``{file: Counter(passed=.., failed=.., error=.., skipped=.., collect_error=0/1)}``."""
        table: dict[str, Counter] = {rel: Counter() for rel in self.files}
        for nodeid, entry in self.results.items():
            table.setdefault(self.file_of(nodeid), Counter())[entry["outcome"]] += 1
        for rel in self.collect_errors:
            table.setdefault(rel, Counter())["collect_error"] += 1
        return table

    def passed(self) -> set[str]:
        return {n for n, e in self.results.items() if e["outcome"] == "passed"}


def _clean_env() -> dict[str, str]:
    """The environment for the pytest subprocess: repo importable, one CPU device, no outer pytest state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = REPO + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    if not env["XLA_FLAGS"]:
        del env["XLA_FLAGS"]
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


_TEST_IMPORT = re.compile(
    r"^\s*from\s+(optax[\w.]*)\s+import\s+(\w+_test)\b|^\s*import\s+(optax[\w.]*_test)\b", re.M
)


def with_dependencies(files: Sequence[str]) -> list[str]:
    """``files`` plus the optax test modules they import (``from optax._src import alias_test``)."""
    root, todo, seen = optax_dir(), list(files), set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        with open(os.path.join(root, rel)) as f:
            for m in _TEST_IMPORT.finditer(f.read()):
                dotted = f"{m.group(1)}.{m.group(2)}" if m.group(2) else m.group(3)
                todo.append(dotted[len("optax.") :].replace(".", "/") + ".py")
    return sorted(seen)


def _prepare(workdir: str, files: Sequence[str]) -> dict[str, str]:
    root = optax_dir()
    manifest = {}
    for rel in with_dependencies(files):
        flat = flat_name(rel)
        shutil.copyfile(os.path.join(root, rel), os.path.join(workdir, flat + ".py"))
        manifest[flat] = rel
    with open(os.path.join(workdir, "conformance_manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(os.path.join(workdir, "pytest.ini"), "w") as f:
        f.write("[pytest]\npython_files = *_test.py\naddopts = -p no:cacheprovider\n")
    return manifest


def _to_optax_id(nodeid: str, manifest: dict[str, str]) -> str:
    head, sep, rest = nodeid.partition("::")
    flat = os.path.basename(head)[: -len(".py")] if head.endswith(".py") else os.path.basename(head)
    return manifest.get(flat, head) + sep + rest


def _to_flat_id(nodeid: str) -> str:
    rel, sep, rest = nodeid.partition("::")
    return flat_name(rel) + ".py" + sep + rest


def run_tests(
    impl: str,
    files: Sequence[str],
    *,
    nodeids: Iterable[str] | None = None,
    workers: int = 0,
    timeout_per_test: float = 300.0,
    timeout_total: float | None = None,
    extra_args: Sequence[str] = (),
    verbose: bool = False,
) -> RunResult:
    """Run the optax test ``files`` with ``impl`` ("optax" or "jopt") in a pytest subprocess.

    ``nodeids`` (optax-spelled) restricts the run to those tests; ``workers`` > 0 uses
    pytest-xdist. Returns every test's outcome.
    """
    files = sorted(set(files))
    with tempfile.TemporaryDirectory(prefix="optax_conformance_") as workdir:
        manifest = _prepare(workdir, files)
        report = os.path.join(workdir, "report.json")
        imported_only = [flat for flat, rel in manifest.items() if rel not in files]  # copied, not collected
        cmd = [
            sys.executable, "-m", "pytest", workdir, "-c", os.path.join(workdir, "pytest.ini"),
            "--rootdir", workdir, "-p", "tests.optax_substitute", f"--optax-impl={impl}",
            f"--conformance-report={report}", f"--conformance-timeout={timeout_per_test}",
            "-q", "--tb=short", "-o", "console_output_style=classic", "-W", "ignore",
        ]  # fmt: skip
        cmd += [f"--ignore={os.path.join(workdir, flat + '.py')}" for flat in imported_only]
        cmd += ["-n", str(workers)] if workers else ["-p", "no:xdist"]
        if nodeids is not None:
            select = os.path.join(workdir, "select.txt")
            with open(select, "w") as f:
                f.write("\n".join(_to_flat_id(n) for n in nodeids) + "\n")
            cmd.append(f"--conformance-select={select}")
        cmd += list(extra_args)
        proc = subprocess.run(
            cmd, cwd=workdir, env=_clean_env(), capture_output=not verbose, text=True, timeout=timeout_total
        )
        tail = "" if verbose else (proc.stdout + proc.stderr)[-4000:]
        if not os.path.exists(report):
            raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}):\n{tail}")
        with open(report) as f:
            data = json.load(f)
    results = {_to_optax_id(n, manifest): e for n, e in data["results"].items()}
    collect_errors = {_to_optax_id(n, manifest).split("::")[0]: e for n, e in data["collect_errors"].items()}
    return RunResult(impl, files, results, collect_errors, data["wall_s"], proc.returncode, tail)


# ----------------------------------------------------------------------------- expected-pass list


@dataclass
class Expected:
    """The recorded list of optax tests that pass against jopt (``tests/optax_conformance_expected.txt``)."""

    optax_version: str
    entries: dict[str, tuple[bool, float]]  # node id -> (in the CI subset, seconds when recorded)

    def ids(self, ci_only: bool = False) -> list[str]:
        return sorted(n for n, (ci, _) in self.entries.items() if ci or not ci_only)

    def files(self, ci_only: bool = False) -> list[str]:
        return sorted({n.split("::")[0] for n in self.ids(ci_only)})


def read_expected(path: str = EXPECTED_FILE) -> Expected:
    version, entries = "", {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# optax "):
                version = line.split()[2]
            if not line.strip() or line.startswith("#"):
                continue
            flag, seconds, nodeid = line.split("\t")
            entries[nodeid] = (flag == "ci", float(seconds))
    return Expected(version, entries)


def _ci_subset(durations: dict[str, float], budget_s: float) -> set[str]:
    """Round-robin over files, cheapest tests first, until the recorded durations reach ``budget_s``."""
    by_file: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for nodeid, seconds in durations.items():
        by_file[nodeid.split("::")[0]].append((seconds, nodeid))
    queues = [sorted(v) for _, v in sorted(by_file.items())]
    chosen, total = set(), 0.0
    while any(queues):
        for queue in queues:
            if queue and total + queue[0][0] <= budget_s:
                seconds, nodeid = queue.pop(0)
                chosen.add(nodeid)
                total += seconds
            elif queue:
                queue.clear()
    return chosen


def write_expected(run: RunResult, budget_s: float, path: str = EXPECTED_FILE, command: str = "") -> Expected:
    """Record every test of ``run`` that passed; mark a CI subset within ``budget_s`` of test time.

    Recorded tests of files ``run`` did not cover are kept, so a run over some files updates those.
    """
    durations = {}
    if os.path.exists(path):
        old = read_expected(path)
        if old.optax_version == optax_version():
            durations = {n: s for n, (_, s) in old.entries.items() if n.split("::")[0] not in run.files}
    durations.update({n: round(e["duration"], 3) for n, e in run.results.items() if e["outcome"] == "passed"})
    ci = _ci_subset(durations, budget_s)
    lines = [
        "# optax's own tests (from the installed wheel) that pass against jopt: the regression gate",
        "# of tests/test_optax_conformance.py, which runs the lines marked 'ci'. Regenerate when jopt",
        "# gains names:",
        f"#   {command or 'python benchmarks/optax_conformance.py --update-expected'}",
        f"# optax {optax_version()}",
        f"# {len(durations)} passing, {len(ci)} in the CI subset ({sum(durations[n] for n in ci):.1f} s"
        " recorded test time); columns: ci|-, seconds, node id",
    ]
    lines += [f"{'ci' if n in ci else '-'}\t{durations[n]:.3f}\t{n}" for n in sorted(durations)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return read_expected(path)


# ----------------------------------------------------------------------------- failure categories

_MISSING = re.compile(r"jopt has no counterpart of optax name (optax[\w.]*) \((.*?)\)")
_UNKNOWN_OPTIMIZER = re.compile(r"ValueError: Unknown optimizer: (\w+)")
_RANGE = re.compile(r"must be in [\[(]|needs the|must be (positive|nonnegative|finite)")
_SIGNATURE = re.compile(
    r"unexpected keyword argument|missing \d+ required|positional argument|got multiple values"
    r"|takes \d+ positional|takes no arguments|got an unexpected|required keyword-only"
)
_PROTOCOL = re.compile(
    r"values to unpack|GradientTransformation|object has no attribute|is not a valid JAX type"
    r"|not a callable|object is not callable|object is not subscriptable|object is not iterable"
)
_STRUCTURE = re.compile(
    r"[Cc]ustom node type mismatch|tree structure|pytree|PyTreeDef|[Dd]ict key mismatch"
    r"|structures do not match"
    r"|Mismatch custom node|different tree|different structure|Trees? .* (differ|mismatch)"
)
_NUMERIC = re.compile(
    r"Not equal to tolerance|Arrays are not|not almost equal|Mismatched elements|Max absolute difference"
    r"|Trees are not all close|Values not approximately equal|assert_trees_all_close|allclose"
)


def _exception_line(text: str) -> str:
    """The most telling ``E ...`` line of a pytest traceback (the exception type and message)."""
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    for ln in lines:
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Timeout|Interrupt)\b", ln):
            return ln[:300]
    return (lines[0] if lines else text.strip().splitlines()[-1] if text.strip() else "")[:300]


def categorize(error: str) -> tuple[str, str]:
    """``(category, detail)`` of a failing jopt-mapped test from its traceback text.

    Categories: ``missing name`` (detail: the optax name), ``validation difference`` (jopt
    rejects a value optax accepts), ``raises/warns difference`` (an error or warning optax
    gives and jopt does not), ``signature difference``, ``protocol/state difference``,
    ``tree-structure difference``, ``numeric difference``, ``timeout``, ``other``.
    """
    match = _MISSING.search(error)
    if match:
        return "missing name", match.group(1)
    match = _UNKNOWN_OPTIMIZER.search(error)  # contrib/_common_test looks optimizers up with hasattr
    if match:
        return "missing name", f"optax.contrib.{match.group(1)}"
    line = _exception_line(error)
    if "ConformanceTimeout" in error:
        return "timeout", line
    if line.startswith("ValueError") and _RANGE.search(line):
        return "validation difference", line
    if re.search(r"AssertionError: \w+ not (raised|triggered)", line):
        return "raises/warns difference", line
    if re.search(r"State\.__new__\(\)|State\b.*has no (field|attribute)", line):
        return "protocol/state difference", line
    if line.startswith("TypeError") and _SIGNATURE.search(line):
        return "signature difference", line
    if _STRUCTURE.search(line):
        return "tree-structure difference", line
    if _PROTOCOL.search(line):
        return "protocol/state difference", line
    if _NUMERIC.search(error) and ("AssertionError" in error or "assert" in line.lower()):
        return "numeric difference", line
    return "other", line
