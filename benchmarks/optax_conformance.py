"""optax's own test suite, run against optax (the baseline) and against jopt (optax's names mapped to jopt's).

The test files are read from the installed optax wheel (``site-packages/optax/**/*_test.py``),
copied at run time into a temporary directory and run by pytest in a subprocess with the
``tests.optax_substitute`` plugin: with jopt, every optax module the tests import is replaced
by a proxy whose names resolve to jopt's objects of the same name; a name jopt lacks fails the
test that uses it (never a fallback to optax). The rules, and the few names that do come from
optax (test infrastructure and typing aliases), are in ``tests/optax_substitute.py``.

Usage (from the repository root)::

    python benchmarks/optax_conformance.py                    # both runs, table, failure report
    python benchmarks/optax_conformance.py --impl jopt --baseline-json /tmp/optax_conformance_optax.json
    python benchmarks/optax_conformance.py --files 'transforms/*' 'schedules/*'
    python benchmarks/optax_conformance.py --update-expected  # rerecord tests/optax_conformance_expected.txt
    python benchmarks/optax_conformance.py --check            # all recorded tests still pass? (exit 1 if not)

``--scope core`` (default) is optax's optimizer, transform, schedule, combinator, tree-utility,
contrib and projection tests (41 files, 2197 tests); ``--scope main`` only the optimizer,
transform, schedule and combinator files (886 tests, the issue's figure); ``--scope all`` adds
losses, assignment, perturbations, microbatching, experimental and second-order.
Prints per file: optax passes, jopt passes, total; writes the categorized jopt failures
(missing names ranked by the number of tests they block, signature / protocol / structure /
numeric differences) to ``--report``, and every test's outcome and error text to
``/tmp/optax_conformance_{optax,jopt}.json`` (a run with ``--files`` or another scope gets its
own ``_TAG`` suffix on both, so it does not overwrite the full run's).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.optax_conformance_runner import (  # noqa: E402
    EXPECTED_FILE,
    REPO,
    SCOPES,
    RunResult,
    categorize,
    optax_test_files,
    optax_version,
    read_expected,
    run_tests,
    write_expected,
)

JOPT_NAMESPACES = (
    "jopt",
    "jopt.schedules",
    "jopt.transforms",
    "jopt.tree",
    "jopt.contrib",
    "jopt.projections",
)


def save(run: RunResult, path: str) -> None:
    with open(path, "w") as f:
        json.dump(run.__dict__, f)


def load(path: str) -> RunResult:
    with open(path) as f:
        return RunResult(**json.load(f))


def print_table(files: list[str], base: RunResult | None, jopt: RunResult | None) -> None:
    """Per file: optax passes, jopt passes, total (tests optax's run collected, else jopt's)."""

    def counts(run: RunResult | None, rel: str) -> Counter:
        return run.per_file().get(rel, Counter()) if run else Counter()

    rows, sums = [], Counter()
    for rel in files:
        b, j = counts(base, rel), counts(jopt, rel)
        total = sum(b[k] for k in ("passed", "failed", "error", "skipped")) or sum(
            j[k] for k in ("passed", "failed", "error", "skipped")
        )
        note = "jopt: import error" if j["collect_error"] else ""
        if b["collect_error"]:
            note = (note + "; " if note else "") + "optax: import error"
        row = (rel, b["passed"] if base else "-", j["passed"] if jopt else "-", total, note)
        rows.append(row)
        sums.update(optax=b["passed"], jopt=j["passed"], total=total)
    width = max(len(r[0]) for r in rows + [("TOTAL",)])
    print(f"{'file':<{width}} | optax pass | jopt pass | total | note")
    print("-" * (width + 40))
    for rel, bp, jp, total, note in rows:
        print(f"{rel:<{width}} | {bp!s:>10} | {jp!s:>9} | {total:>5} | {note}")
    print("-" * (width + 40))
    total_optax, total_jopt = (sums["optax"] if base else "-"), (sums["jopt"] if jopt else "-")
    print(f"{'TOTAL':<{width}} | {total_optax!s:>10} | {total_jopt!s:>9} | {sums['total']:>5} |")


def _elsewhere_in_jopt(optax_name: str) -> list[str]:
    """jopt namespaces that do have the bare name (a hint: exported in the wrong place)."""
    bare = optax_name.rsplit(".", 1)[-1]
    hits = []
    for ns in JOPT_NAMESPACES:
        try:
            mod = importlib.import_module(ns)
        except ImportError:
            continue
        if hasattr(mod, bare) and not isinstance(getattr(mod, bare), type(sys)):
            hits.append(f"{ns}.{bare}")
    return hits


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "jopt"], capture_output=True, text=True
        )
        return out.stdout.strip() + (" + uncommitted changes in jopt/" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def write_report(path: str, base: RunResult | None, jopt: RunResult, command: str, raw: str = "") -> None:
    """Markdown: jopt's failures among the tests optax passes, by category, missing names ranked."""
    optax_pass = base.passed() if base else None
    failing = {
        n: e
        for n, e in jopt.results.items()
        if e["outcome"] in ("failed", "error") and (optax_pass is None or n in optax_pass)
    }
    cats: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for nodeid, entry in sorted(failing.items()):
        cat, detail = categorize(entry["error"])
        cats[cat].append((nodeid, detail))
    lost_by_import = {}
    for rel, err in jopt.collect_errors.items():
        cat, detail = categorize(err)
        n_lost = len([n for n in (optax_pass or ()) if n.startswith(rel + "::")])
        lost_by_import[rel] = (cat, detail, n_lost)
    missing = Counter(d for _, d in cats.get("missing name", []))
    for cat, detail, n_lost in lost_by_import.values():
        if cat == "missing name":
            missing[detail] += n_lost

    out = [
        "# optax's own tests against jopt: failures",
        "",
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `{command}`; jopt at {_git_head()};"
        f" optax {optax_version()}.",
        "",
    ]
    total_optax = len(optax_pass) if optax_pass is not None else None
    out += [
        f"* optax passes {total_optax if total_optax is not None else '?'} tests;"
        f" jopt passes {len(jopt.passed())}"
        + (f" ({len(jopt.passed() & optax_pass)} of optax's passes)" if optax_pass is not None else "")
        + ".",
        f"* jopt fails {len(failing)} tests that optax passes"
        + (
            f", and {sum(v[2] for v in lost_by_import.values())} more in files jopt cannot import"
            if lost_by_import
            else ""
        )
        + ".",
        "* Tests optax itself fails or skips are left out (not jopt's fault).",
        "",
        "## By category",
        "",
        "| category | tests |",
        "| --- | --- |",
    ]
    out += [f"| {cat} | {len(items)} |" for cat, items in sorted(cats.items(), key=lambda kv: -len(kv[1]))]
    out += [
        "",
        "## Missing names, by the number of tests they fail (first missing name a test met)",
        "",
        "The proxy looked the name up at the jopt places listed in each test's error; 'elsewhere' lists",
        "jopt namespaces that have the bare name (exported, but not where optax has it).",
        "",
        "| optax name | tests | elsewhere in jopt |",
        "| --- | --- | --- |",
    ]
    for name, count in missing.most_common():
        out.append(f"| `{name}` | {count} | {', '.join(_elsewhere_in_jopt(name)) or ''} |")
    if lost_by_import:
        out += ["", "## Files jopt cannot import", ""]
        for rel, (cat, detail, n_lost) in sorted(lost_by_import.items()):
            out.append(f"* `{rel}` ({n_lost} optax-passing tests): {cat}: `{detail}`")
    for cat, items in sorted(cats.items(), key=lambda kv: -len(kv[1])):
        if cat == "missing name":
            continue
        out += ["", f"## {cat} ({len(items)})", ""]
        by_detail: dict[str, list[str]] = defaultdict(list)
        for nodeid, detail in items:
            by_detail[detail].append(nodeid)
        for detail, ids in sorted(by_detail.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(f"`{i}`" for i in ids[:6]) + (
                f" and {len(ids) - 6} more" if len(ids) > 6 else ""
            )
            out.append(f"* `{detail}` ({len(ids)}): {shown}")
    out += ["", "## Per file (tests optax passes and jopt does not)", ""]
    by_file: dict[str, Counter] = defaultdict(Counter)
    for cat, items in cats.items():
        for nodeid, detail in items:
            by_file[nodeid.split("::")[0]][detail if cat == "missing name" else cat] += 1
    for rel in sorted(by_file):
        parts = ", ".join(f"`{k}` {v}" for k, v in by_file[rel].most_common())
        out.append(f"* `{rel}` ({sum(by_file[rel].values())}): {parts}")
    if raw:
        out += ["", f"Every test's outcome and error text: `{raw}`."]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _run_tag(patterns: list[str] | None, scope: str) -> str:
    """'' for the default full run, else a file-name-safe tag such as ``_transforms__clipping``."""
    if not patterns and scope == "core":
        return ""
    text = "_".join(patterns) if patterns else scope
    return "_" + re.sub(r"[^A-Za-z0-9]+", "_", text.replace("_test.py", "")).strip("_")[:60]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("both", "optax", "jopt"), default="both")
    parser.add_argument("--scope", choices=sorted(SCOPES), default="core")
    parser.add_argument(
        "--files", nargs="+", help="glob patterns relative to the optax package (overrides --scope)"
    )
    parser.add_argument("-n", "--workers", type=int, default=2, help="pytest-xdist workers (0: one process)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-test time limit, seconds")
    parser.add_argument(
        "--report",
        help="categorized jopt failures (default /tmp/conformance_failures.md for a --scope core run,"
        " /tmp/conformance_failures_TAG.md otherwise)",
    )
    parser.add_argument(
        "--save-dir", default="/tmp", help="raw results go to optax_conformance_{impl}[TAG].json here"
    )
    parser.add_argument("--baseline-json", help="reuse a saved optax run instead of running optax again")
    parser.add_argument(
        "--jopt-json", help="reuse a saved jopt run (e.g. to rerecord with another --ci-budget)"
    )
    parser.add_argument("--update-expected", action="store_true", help="rerecord " + EXPECTED_FILE)
    parser.add_argument(
        "--ci-budget", type=float, default=30.0, help="recorded seconds of test time in the CI subset"
    )
    parser.add_argument(
        "--check", action="store_true", help="run every recorded test against jopt; exit 1 on a loss"
    )
    args = parser.parse_args()
    command = "python benchmarks/optax_conformance.py " + " ".join(sys.argv[1:])

    if args.check:
        expected = read_expected()
        run = run_tests(
            "jopt",
            expected.files(),
            nodeids=expected.ids(),
            workers=args.workers,
            timeout_per_test=args.timeout,
        )
        lost = [n for n in expected.ids() if run.results.get(n, {}).get("outcome") != "passed"]
        print(f"{len(expected.ids()) - len(lost)} of {len(expected.ids())} recorded tests pass against jopt")
        for n in lost:
            print("LOST", n, categorize(run.results.get(n, {}).get("error", "not run (import error?)")))
        return 1 if lost else 0

    files = optax_test_files(args.files or SCOPES[args.scope])
    tag = _run_tag(args.files, args.scope)  # partial runs do not overwrite the full run's files
    print(f"optax {optax_version()}: {len(files)} test files, {args.workers} workers")
    base = jopt = None
    if args.baseline_json:
        base = load(args.baseline_json)
    if args.impl in ("both", "optax") and base is None and not args.jopt_json:
        t0 = time.time()
        base = run_tests("optax", files, workers=args.workers, timeout_per_test=args.timeout)
        print(f"optax run: {time.time() - t0:.0f} s")
        save(base, os.path.join(args.save_dir, f"optax_conformance_optax{tag}.json"))
    if args.jopt_json:
        jopt = load(args.jopt_json)
    elif args.impl in ("both", "jopt") or args.update_expected:
        t0 = time.time()
        jopt = run_tests("jopt", files, workers=args.workers, timeout_per_test=args.timeout)
        print(f"jopt run: {time.time() - t0:.0f} s")
        save(jopt, os.path.join(args.save_dir, f"optax_conformance_jopt{tag}.json"))
    print_table(files, base, jopt)
    if jopt is not None:
        raw = args.jopt_json or os.path.join(args.save_dir, f"optax_conformance_jopt{tag}.json")
        report = args.report or f"/tmp/conformance_failures{tag}.md"
        write_report(report, base, jopt, command, raw)
        print(f"categorized jopt failures: {report}")
    if args.update_expected:
        if args.files or args.scope != "core":
            print("note: only the recorded tests of this run's files were replaced")
        expected = write_expected(jopt, args.ci_budget)
        n_all, n_ci = len(expected.ids()), len(expected.ids(ci_only=True))
        print(f"recorded {n_all} passing tests ({n_ci} in the CI subset)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
