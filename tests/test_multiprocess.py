"""Two processes on localhost (CPU collectives, 2 simulated devices each) train like one process.

The worker (``tests/multiprocess_worker.py``) runs the unchanged jitted training
step on a 4-device global mesh, each process feeding half of the batch. The
reference is the same step run here on one device over the whole batch;
results agree to rtol 1e-5, atol 1e-6 (only the batch reduction order differs).
The whole test is bounded by ``TIMEOUT_S`` (processes are killed after it).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from tests import multiprocess_worker as worker
from tests.processes import launch

TIMEOUT_S = 50
NUM_PROCESSES = 2


def _launch(tmp_path: Path) -> None:
    args = ["--local-devices=2", f"--out={tmp_path}/result{{i}}.npz", "--timeout=30"]
    launch("multiprocess_worker.py", args, NUM_PROCESSES, TIMEOUT_S)


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
    _launch(tmp_path)

    ref_params, ref_losses = _single_process_reference()
    for i in range(NUM_PROCESSES):
        result = np.load(tmp_path / f"result{i}.npz")
        assert int(result["devices"]) == 4  # 2 processes x 2 devices in one global mesh
        np.testing.assert_allclose(result["losses"], ref_losses, rtol=1e-5, atol=1e-6)
        for name, value in ref_params.items():
            np.testing.assert_allclose(result[name], np.asarray(value), rtol=1e-5, atol=1e-6, err_msg=name)
    assert ref_losses[-1] < ref_losses[0]
