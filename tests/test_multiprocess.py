"""Two processes on localhost (CPU collectives, 2 simulated devices each) train like one process.

The worker (``tests/multiprocess_worker.py``) runs the unchanged jitted training
step on a 4-device global mesh, each process feeding half of the batch. The
reference is the same step run here on one device over the whole batch;
results agree to rtol 1e-5, atol 1e-6 (only the batch reduction order differs).
The whole test is bounded by ``TIMEOUT_S`` (processes are killed after it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from tests import multiprocess_worker as worker

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 50
NUM_PROCESSES = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, deadline: float) -> tuple[list[int], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the worker sets its own
    env["PYTHONPATH"] = str(ROOT)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "multiprocess_worker.py"),
                f"--coordinator=127.0.0.1:{port}",
                f"--num-processes={NUM_PROCESSES}",
                f"--process-id={i}",
                "--local-devices=2",
                f"--out={tmp_path / f'result{i}.npz'}",
                "--timeout=30",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(NUM_PROCESSES)
    ]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outputs = [p.communicate()[0] for p in procs]
        raise AssertionError(f"workers exceeded {TIMEOUT_S}s:\n" + "\n---\n".join(outputs)) from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [p.returncode for p in procs], "\n---\n".join(outputs)


def _single_process_reference():
    params, x, y = worker.problem()
    opt = worker.optimizer()
    step = worker.train_step(opt)
    device = jax.devices()[0]
    params, x, y = jax.device_put((params, x, y), device)
    state = opt.init(params)
    losses = []
    for _ in range(worker.STEPS):
        params, state, value = step(params, state, x, y)
        losses.append(float(value))
    return params, np.asarray(losses)


def test_two_processes_match_single_process(tmp_path):
    deadline = time.monotonic() + TIMEOUT_S
    codes, output = _launch(tmp_path, deadline)
    if any(codes) and "in use" in output.lower():  # the free port was taken meanwhile: retry once
        codes, output = _launch(tmp_path, deadline)
    assert codes == [0] * NUM_PROCESSES, output

    ref_params, ref_losses = _single_process_reference()
    for i in range(NUM_PROCESSES):
        result = np.load(tmp_path / f"result{i}.npz")
        assert int(result["devices"]) == 4  # 2 processes x 2 devices in one global mesh
        np.testing.assert_allclose(result["losses"], ref_losses, rtol=1e-5, atol=1e-6)
        for name, value in ref_params.items():
            np.testing.assert_allclose(result[name], np.asarray(value), rtol=1e-5, atol=1e-6, err_msg=name)
    assert ref_losses[-1] < ref_losses[0]
