"""Checkpoint and resume: a sweep interrupted anywhere and rerun ends with the same results."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
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


# ----------------------------------------------------------------------------- the task's identity


def _task_on(data):
    """make_task's softmax regression with its data and objective swapped for ``data``'s."""
    base = make_task()

    def evaluate(hp, state):
        params = state[0]
        return jnp.mean((data @ params["w"]) ** 2)

    return base._replace(evaluate=evaluate)


def test_checkpoint_of_a_changed_task_or_data_is_refused(task, tmp_path):
    kw = dict(steps=2, eval_every=2, progress=False, checkpoint_dir=str(tmp_path))
    data = np.ones((4, 8), np.float32)
    sweep.run(_task_on(data), SPACE, 2, **kw)
    # the same task rebuilt: reloads the finished sweep without running a segment
    sweep.run(_task_on(data.copy()), SPACE, 2, _on_segment=lambda e: 1 / 0, **kw)
    with pytest.raises(ValueError, match=r"different sweep: its task differs"):
        sweep.run(task, SPACE, 2, **kw)  # another objective function
    with pytest.raises(ValueError, match=r"different sweep: its task differs"):
        sweep.run(_task_on(2 * data), SPACE, 2, **kw)  # the same function on other data


# ----------------------------------------------------------------------------- corrupted checkpoints


def _truncate(path):
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])


def _drop_one_array_file(step_dir):
    files = sorted(p for p in (step_dir / "arrays").rglob("*") if p.is_file() and p.parent.name == "d")
    files[0].unlink()


def _inconsistent(step_dir):
    meta_file = step_dir / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["kept"] = meta["kept"] + [999]  # a kept state of a trial with no record
    meta_file.write_text(json.dumps(meta))


def _wrong_shape(step_dir):
    meta_file = step_dir / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["chunk"]["size"] = meta["chunk"]["size"] + 2
    meta_file.write_text(json.dumps(meta))


CORRUPTIONS = {
    "empty metadata": (lambda d: (d / "meta" / "metadata").write_text(""), "meta/metadata"),
    "truncated metadata": (lambda d: _truncate(d / "meta" / "metadata"), "meta/metadata"),
    "inconsistent records": (_inconsistent, ""),
    "chunk of another size": (_wrong_shape, ""),
    "missing arrays": (lambda d: shutil.rmtree(d / "arrays"), "arrays"),
    "missing array file": (_drop_one_array_file, "arrays"),
}


@pytest.fixture(scope="module")
def small_reference(task):
    return sweep.run(task, SPACE, 4, **SMALL)


SMALL = dict(steps=6, eval_every=2, seed=0, devices=2, max_parallel=4, progress=False, patience=2)


def _interrupted(task, directory, at=2):
    def hook(event):
        if event == at:
            raise Interrupt

    with pytest.raises(Interrupt):
        sweep.run(task, SPACE, 4, checkpoint_dir=str(directory), _on_segment=hook, **SMALL)
    return max((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one(task, small_reference, tmp_path, kind):
    corrupt, culprit = CORRUPTIONS[kind]
    newest = _interrupted(task, tmp_path)
    corrupt(newest)
    with pytest.warns(RuntimeWarning, match=re.escape(str(newest / culprit))) as caught:
        resumed = sweep.run(task, SPACE, 4, checkpoint_dir=str(tmp_path), **SMALL)
    assert any("unusable sweep checkpoint" in str(w.message) for w in caught)
    assert_same(resumed, small_reference)


def test_no_usable_checkpoint_is_a_clear_error_and_closes_the_directory(task, tmp_path):
    _interrupted(task, tmp_path)
    for step in (p for p in tmp_path.iterdir() if p.name.isdigit()):
        (step / "meta" / "metadata").write_text("{")
    script = textwrap.dedent(
        f"""
        import os, sys, warnings
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        sys.path.insert(0, {os.getcwd()!r})
        warnings.simplefilter("ignore")
        from jopt import sweep
        from tests.sweep_helpers import SPACE, make_task
        try:
            sweep.run(make_task(), SPACE, 4, checkpoint_dir={str(tmp_path)!r}, **{SMALL!r})
        except ValueError as err:
            print("ValueError:", err)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"ValueError: no usable checkpoint in {tmp_path}" in proc.stdout
    assert "delete the directory" in proc.stdout
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
