"""Checkpoint and resume: a sweep interrupted anywhere and rerun ends with the same results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jopt import sweep
from tests.sweep_helpers import SPACE, make_task

KW = dict(steps=6, eval_every=2, seed=0, devices=2, max_parallel=4, progress=False, patience=2)
N = 8  # 2 chunks x 3 segments


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def task():
    return make_task()


@pytest.fixture(scope="module")
def reference(task):
    return sweep.run(task, SPACE, N, **KW)


def assert_same(a, b):
    for x, y in zip(a.trials, b.trials, strict=True):
        assert (x.trial, x.status, x.steps_trained) == (y.trial, y.status, y.steps_trained)
        assert x.history == y.history or np.array_equal(
            np.array(x.history["objective"]), np.array(y.history["objective"])
        )
        np.testing.assert_array_equal(x.history["objective"], y.history["objective"])
    assert a.best.trial == b.best.trial
    jax.tree.map(np.testing.assert_array_equal, a.state(), b.state())


@pytest.mark.parametrize("kill_at", [0, 2, 3, 5])  # boundaries: chunk 0 at 0-2, chunk 1 at 3-5
def test_interrupted_sweep_resumes_to_same_results(task, reference, tmp_path, kill_at):
    def hook(event):
        if event == kill_at:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweep.run(task, SPACE, N, checkpoint_dir=str(tmp_path), _on_segment=hook, **KW)
    resumed = sweep.run(task, SPACE, N, checkpoint_dir=str(tmp_path), **KW)
    assert_same(resumed, reference)
    # a finished sweep reloads from its checkpoint without running anything
    again = sweep.run(task, SPACE, N, checkpoint_dir=str(tmp_path), _on_segment=lambda e: 1 / 0, **KW)
    assert_same(again, reference)


def test_checkpoint_of_another_sweep_is_refused(task, tmp_path):
    sweep.run(task, SPACE, 2, steps=2, eval_every=2, progress=False, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="different sweep"):
        sweep.run(task, SPACE, 2, steps=2, eval_every=2, seed=5, progress=False, checkpoint_dir=str(tmp_path))


def test_killed_process_resumes(task, reference, tmp_path):
    """SIGKILL a sweep process in the middle of chunk 1, then resume in this process."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        sys.path.insert(0, {os.getcwd()!r})
        from jopt import sweep
        from tests.sweep_helpers import SPACE, make_task
        def hook(event):
            if event == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        sweep.run(make_task(), SPACE, {N}, checkpoint_dir={str(tmp_path)!r}, _on_segment=hook, **{KW!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = sweep.run(task, SPACE, N, checkpoint_dir=str(tmp_path), **KW)
    assert_same(resumed, reference)


def test_resume_on_another_device_count_repacks_the_chunk(task, tmp_path):
    """A chunk of 5 slots saved on 1 device cannot be sharded over 2: its members are repacked
    into a chunk of 6 slots; the results agree to float32 rounding."""
    kw = dict(steps=6, eval_every=2, seed=0, progress=False)
    ref = sweep.run(task, SPACE, 5, devices=1, **kw)

    def hook(event):
        if event == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweep.run(task, SPACE, 5, devices=1, checkpoint_dir=str(tmp_path), _on_segment=hook, **kw)
    resumed = sweep.run(task, SPACE, 5, devices=2, checkpoint_dir=str(tmp_path), **kw)
    assert resumed.stats["chunk_sizes"] == {"-": [6]} and resumed.stats["devices"] == 2
    for a, b in zip(resumed.trials, ref.trials, strict=True):
        assert (a.trial, a.status, a.steps_trained) == (b.trial, b.status, b.steps_trained)
        np.testing.assert_allclose(a.history["objective"], b.history["objective"], rtol=1e-5, atol=1e-6)
