"""Engine corner cases: fewer members at once than devices; members spanning a data axis."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jopt import sweep
from jopt.sweep import programs
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


def test_data_parallel_splits_each_members_batch_over_its_devices():
    """8 devices as 4 trial shards x 2 data devices: the same results to float32 rounding, and
    the segment program reduces gradients across the data axis (an all-reduce)."""
    task = make_task(shard=True)
    kw = dict(steps=4, eval_every=2, seed=0, progress=False)
    plain = sweep.run(task, SPACE, 4, **kw)
    split = sweep.run(task, SPACE, 4, data_parallel=2, **kw)
    assert split.stats["devices"] == 8 and split.stats["data_parallel"] == 2
    for a, b in zip(plain.trials, split.trials, strict=True):
        np.testing.assert_allclose(a.history["objective"], b.history["objective"], rtol=1e-5, atol=1e-6)
    texts = [v.as_text() for k, v in programs._CACHE.items() if k[0] is task and k[-1] == "segment"]
    assert sorted("all-reduce" in t for t in texts) == [False, True]
    with pytest.raises(ValueError, match="data_parallel=3 must divide"):
        sweep.run(task, SPACE, 4, data_parallel=3, **kw)
