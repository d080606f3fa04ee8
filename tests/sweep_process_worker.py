"""One process of a multi-process sweep (used by ``tests/test_sweep_multiprocess.py``).

Run as a script, one copy per process (the same arguments but ``--process-id``)::

    python tests/sweep_process_worker.py --coordinator 127.0.0.1:PORT --num-processes 2 \
        --process-id 0 --local-devices 2 --out /tmp/sweep0 [--checkpoint-dir D] [--stop-at B]

Each process simulates ``--local-devices`` CPU devices, joins the job with
``jax.distributed.initialize`` and runs the *same* ``jopt.sweep.run`` call; the trial axis is
sharded over every device of every process. It writes what its own copy of the result says
(``OUT.json``: every trial's status and objective history, the best trial; ``OUT.npz``: the
best trial's parameters). With ``--stop-at B`` the sweep is interrupted at segment boundary
``B`` (after the checkpoint of that boundary is written), as a killed job would be; with
``--data-parallel D`` each member's minibatch is split over ``D`` devices.

Importing this module (as the test does for :data:`KW` and :func:`describe`) has no side effects.
"""

from __future__ import annotations

import json
import os
import sys

KW = dict(steps=6, eval_every=2, seed=0, max_parallel=8, progress=False, patience=2)
TRIALS = 12  # 2 chunks of 8 slots on 4 devices: a refill and a second chunk

if __name__ == "__main__":  # device flags must be set before JAX is imported
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from processes import worker_arguments

    EXTRA = [
        ("--checkpoint-dir", {"default": None}),
        ("--stop-at", {"type": int, "default": None}),
        ("--data-parallel", {"type": int, "default": 1}),
    ]
    ARGS = worker_arguments(__doc__, EXTRA, timeout=60)

import jax  # noqa: E402
import numpy as np  # noqa: E402


def describe(result) -> dict:
    """The parts of a SweepResult that every process must agree on (JSON-ready)."""
    return {
        "trials": [
            {
                "trial": t.trial,
                "status": t.status,
                "steps": t.steps_trained,
                "objective": t.history["objective"],
            }
            for t in result.trials
        ],
        "best": result.best.trial,
        "devices": result.stats["devices"],
    }


class Stop(Exception):
    """The interruption of ``--stop-at``."""


def main(args) -> None:
    from processes import join_job

    join_job(args)
    from jopt import sweep
    from tests.sweep_helpers import SPACE, make_task

    def hook(boundary: int) -> None:
        if boundary == args.stop_at:
            raise Stop

    try:
        result = sweep.run(
            make_task(), SPACE, TRIALS, checkpoint_dir=args.checkpoint_dir, _on_segment=hook, **KW
        )
    except Stop:
        jax.distributed.shutdown()
        return
    with open(args.out + ".json", "w") as f:
        json.dump(describe(result), f)
    leaves = jax.tree.leaves(result.params())
    np.savez(args.out + ".npz", *[np.asarray(x) for x in leaves])
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(ARGS)
