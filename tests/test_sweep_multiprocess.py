"""A sweep run by two processes (``jax.distributed``, 2 simulated CPU devices each) is the same
sweep as in one process, and its checkpoints resume on either process count.

The worker (``tests/sweep_process_worker.py``) runs the same ``jopt.sweep.run`` call in every
process, with the trial axis sharded over the 4 devices of the job (the resumed job also
splits each member's batch over a 2-device data axis). References run here: the same call on
4 devices in one process has the job's layout, so its checkpointed history is bit-exact; the
sweep never interrupted agrees with the resumed jobs to float32 rounding (other reduction orders:
a cross-process all-reduce, 8 devices; rtol 1e-5, atol 1e-6, see ``../shared/jax-notes.md``).
"""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from jopt import sweep
from tests.processes import launch
from tests.sweep_helpers import SPACE, make_task
from tests.sweep_process_worker import KW, TRIALS, describe

TIMEOUT_S = 90
RTOL, ATOL = 1e-5, 1e-6


def _run_job(tmp_path, name: str, *extra: str) -> list[dict]:
    """Run the 2-process job; what each process's result says (nothing if it was stopped)."""
    args = ["--local-devices=2", f"--out={tmp_path}/{name}{{i}}", "--timeout=60", *extra]
    launch("sweep_process_worker.py", args, 2, TIMEOUT_S)
    files = [tmp_path / f"{name}{i}.json" for i in range(2)]
    return [json.loads(f.read_text()) for f in files if f.exists()]


@pytest.fixture(scope="module")
def reference():
    result = sweep.run(make_task(), SPACE, TRIALS, devices=4, **KW)
    return describe(result), jax.tree.leaves(result.params())


def _assert_equal(got: dict, want: dict, exact: bool) -> None:
    assert [(t["trial"], t["status"], t["steps"]) for t in got["trials"]] == [
        (t["trial"], t["status"], t["steps"]) for t in want["trials"]
    ]
    for a, b in zip(got["trials"], want["trials"], strict=True):
        if exact:
            np.testing.assert_array_equal(a["objective"], b["objective"])
        else:
            np.testing.assert_allclose(a["objective"], b["objective"], rtol=RTOL, atol=ATOL)
    assert got["best"] == want["best"]


class Stop(Exception):
    pass


def _stop_at(boundary: int):
    def hook(event: int) -> None:
        if event == boundary:
            raise Stop

    return hook


def _newest_history(directory) -> list:
    newest = max((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return json.loads((newest / "meta" / "metadata").read_text())["history"]


def test_two_process_sweep_checkpoints_once_and_resumes_on_any_process_count(tmp_path, reference):
    want, want_params = reference
    ck = tmp_path / "ck"
    _run_job(tmp_path, "stopped", f"--checkpoint-dir={ck}", "--stop-at=3")  # interrupted mid-sweep
    steps = sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit())
    assert steps and not any((ck / str(s) / "arrays" / "ocdbt.process_1").exists() for s in steps)  # once
    shutil.copytree(ck, tmp_path / "single")

    # the same call in one process on 4 devices (the job's layout) saved the same history, bit for bit
    same = tmp_path / "same"
    with pytest.raises(Stop):
        sweep.run(
            make_task(), SPACE, TRIALS, devices=4, checkpoint_dir=str(same), _on_segment=_stop_at(3), **KW
        )
    assert _newest_history(ck) == _newest_history(same)

    # the 2-process job resumes, now splitting each member's batch over 2 devices (a trials x data
    # mesh); both processes hold the same results and best parameters
    results = _run_job(tmp_path, "resumed", f"--checkpoint-dir={ck}", "--data-parallel=2")
    assert results[0] == results[1] and results[0]["devices"] == 4
    _assert_equal(results[0], want, exact=False)
    for i in range(2):
        got = np.load(tmp_path / f"resumed{i}.npz")
        for j, leaf in enumerate(want_params):
            np.testing.assert_allclose(got[f"arr_{j}"], np.asarray(leaf), rtol=RTOL, atol=ATOL)

    # one process on 8 devices resumes the 2-process checkpoint
    single = sweep.run(make_task(), SPACE, TRIALS, checkpoint_dir=str(tmp_path / "single"), **KW)
    _assert_equal(describe(single), want, exact=False)
