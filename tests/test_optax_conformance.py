"""Regression gate: optax's own tests that passed against jopt still pass.

optax's test files are read from the installed wheel and run in a pytest subprocess with
optax's modules replaced by jopt proxies (``tests/optax_substitute.py``). The tests that pass
are recorded in ``tests/optax_conformance_expected.txt``; CI runs the lines marked ``ci`` (a
subset sized to ~1-2 minutes on 2 cores) and fails if any of them no longer passes. Rerecord
after jopt gains names with ``python benchmarks/optax_conformance.py --update-expected``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.optax_conformance_runner import (
    EXPECTED_FILE,
    REPO,
    categorize,
    optax_version,
    read_expected,
    run_tests,
)

EXPECTED = read_expected()

pytestmark = pytest.mark.skipif(
    optax_version() != EXPECTED.optax_version,
    reason=f"expected-pass list recorded with optax {EXPECTED.optax_version}, installed {optax_version()}",
)


def test_recorded_optax_tests_still_pass_against_jopt():
    ids = EXPECTED.ids(ci_only=True)
    assert len(ids) >= 20, f"the CI subset of {EXPECTED_FILE} is nearly empty"
    run = run_tests("jopt", EXPECTED.files(ci_only=True), nodeids=ids, workers=0, timeout_per_test=120)
    lost = {n: run.results.get(n) for n in ids if (run.results.get(n) or {}).get("outcome") != "passed"}
    lines = []
    for nodeid, entry in sorted(lost.items()):
        if entry is None:
            rel = nodeid.split("::")[0]
            reason = run.collect_errors.get(rel, "not run")
            lines.append(
                f"{nodeid}: not run ({categorize(reason)[1] if rel in run.collect_errors else reason})"
            )
        else:
            lines.append(f"{nodeid}: {entry['outcome']}: {categorize(entry['error'])}")
    assert not lost, (
        f"{len(lost)} of {len(ids)} recorded optax tests no longer pass against jopt:\n"
        + "\n".join(lines)
        + f"\n{run.output_tail[-2000:]}"
    )


def test_substitutes_resolve_to_jopt_and_never_fall_back_to_optax():
    """The proxies hand out jopt's objects, keep test infrastructure real, and refuse optax-only names."""
    script = textwrap.dedent(
        """
        import jopt
        from tests import optax_substitute as sub
        sub.install({})
        import optax
        from optax._src import alias, base, combine, test_utils, transform, utils
        from optax.schedules import _schedule
        from optax.transforms import _clipping
        assert optax.adam is jopt.adam and alias.adam is jopt.adam
        assert transform.scale_by_adam is jopt.scale_by_adam and combine.chain is jopt.chain
        assert _clipping.clip_by_global_norm is jopt.clip_by_global_norm
        assert base.GradientTransformation is jopt.GradientTransformation
        assert test_utils.__file__.endswith("test_utils.py") and not isinstance(test_utils, sub._Proxy)
        assert base.Params is not None  # a typing alias: may come from optax
        from optax.transforms import _masking
        for get in (lambda: utils.set_diags, lambda: _masking._mask_callable):  # optax-private helpers
            try:
                get()
            except sub.MissingJoptName as e:
                assert "private to optax" in str(e), e
            else:
                raise AssertionError("an optax-only name resolved")
        try:
            optax.no_such_name_anywhere
        except AttributeError as e:
            assert "in optax either" in str(e), e
        sub._RESOLVER.importing = 1  # as while a test module is imported: use is deferred
        placeholder = utils.set_diags
        assert isinstance(placeholder, sub.MissingName) and isinstance(placeholder(1).x, sub.MissingName)
        class Helper(placeholder):
            pass
        sub._RESOLVER.importing = 0  # as in a test: every use raises
        uses = (lambda: placeholder(1), lambda: placeholder.x, lambda: Helper(), lambda: list(placeholder))
        for use in uses:
            try:
                use()
            except sub.MissingJoptName as e:
                assert "set_diags" in str(e), e
            else:
                raise AssertionError("placeholder did not raise")
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
