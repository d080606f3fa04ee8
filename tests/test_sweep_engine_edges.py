"""Engine corner cases: fewer members at once than devices."""

from __future__ import annotations

import jax
import numpy as np

from jopt import sweep
from tests.sweep_helpers import SPACE, make_task

TASK = make_task()


def test_max_parallel_below_device_count_shards_over_fewer_devices_with_same_results():
    assert len(jax.devices()) == 8
    small = sweep.run(TASK, SPACE, 7, steps=20, eval_every=10, max_parallel=3, progress=False)
    full = sweep.run(TASK, SPACE, 7, steps=20, eval_every=10, progress=False)
    assert small.stats["devices"] == 3 and small.stats["chunk_sizes"] == {"-": [3]}
    assert small.stats["chunks"] == 3
    np.testing.assert_allclose(
        [t.final_objective for t in small.trials], [t.final_objective for t in full.trials], rtol=1e-6
    )
