"""Every search method gets every shared option, on the one execution path: folds, patience,
memory_budget, sharding (2 devices), progress, keep_states and checkpoint/resume.

For each method one reference run with all of them at once (cross-validated over 2 folds, early
stopping, a memory budget of 8 members per chunk, the trial axis over 2 devices, a progress bar,
every state kept), then the same call interrupted at a segment boundary with a
``checkpoint_dir`` and rerun: the resumed search ends with the same trials, statuses, histories
and states, bit for bit (the same chunk layouts, so the same compiled programs). Tiny
softmax-regression task, 6 steps in 3 segments.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import optuna
import pytest

from jopt import sweep
from tests.sweep_helpers import SPACE, make_task

optuna.logging.set_verbosity(optuna.logging.WARNING)
TASK = make_task()
STEPS, EVERY, FOLDS = 6, 2, 2


class Interrupt(Exception):
    pass


def _budget() -> int:
    per = sweep.run(TASK, SPACE, 1, steps=2, folds=FOLDS, patience=1, devices=1, progress=False)
    return int(per.stats["bytes_per_member"] * 8.5)  # 8 members (4 trials x 2 folds) per chunk


COMMON = dict(folds=FOLDS, patience=1, min_delta=0.02, devices=2, keep_states="all", seed=1)
FAST_GP = dict(num_candidates=64, fit_steps=20, restarts=1)


METHODS = {
    "run": lambda **o: sweep.run(TASK, SPACE, 10, steps=STEPS, eval_every=EVERY, method="sobol", **o),
    "median": lambda **o: sweep.run(TASK, SPACE, 10, steps=STEPS, eval_every=EVERY,
                                    scheduler=sweep.MedianStopping(min_trials=2), **o),
    "halving": lambda **o: sweep.successive_halving(TASK, SPACE, 9, budgets=[2, 6], eta=3, **o),
    "hyperband": lambda **o: sweep.hyperband(TASK, SPACE, max_steps=6, min_steps=2, eta=3, **o),
    "asha": lambda **o: sweep.asha(TASK, SPACE, 10, budgets=[2, 6], eta=3, parallel=3, **o),
    "pbt": lambda **o: sweep.pbt(TASK, SPACE, 4, steps=STEPS, eval_every=EVERY, **o),
    "bayesian": lambda **o: sweep.bayesian(TASK, SPACE, 7, steps=STEPS, eval_every=EVERY, batch=3,
                                           initial=4, **FAST_GP, **o),
    "optuna": "optuna",
}  # fmt: skip


def launch(name, tmp_path, tag, **o):
    if name == "optuna":
        url = f"sqlite:///{tmp_path / 'study.db'}"
        return sweep.optuna_search(TASK, SPACE, 6, steps=STEPS, eval_every=EVERY, batch=4, sampler="qmc",
                                   storage=url, study_name=tag, **o)  # fmt: skip
    return METHODS[name](**o)


def same(a, b) -> None:
    assert [t.trial for t in a.trials] == [t.trial for t in b.trials]
    for x, y in zip(a.trials, b.trials, strict=True):
        assert (x.status, x.steps_trained, x.rung, x.hyperparams) == (
            y.status,
            y.steps_trained,
            y.rung,
            y.hyperparams,
        )
        np.testing.assert_equal(x.history, y.history)
    assert set(a.states) == set(b.states)
    for t in a.states:
        jax.tree.map(np.testing.assert_array_equal, a.states[t], b.states[t])


@pytest.mark.parametrize("name", list(METHODS))
def test_every_option_and_resume(name, tmp_path, capsys):
    o = dict(COMMON, memory_budget=_budget(), progress=True)
    ref = launch(name, tmp_path, "ref", **o)
    err = capsys.readouterr().err
    assert "sweep" in err and "trial" in err  # the progress bar
    s = ref.stats
    assert s["devices"] == 2 and all(size <= 8 for v in s["chunk_sizes"].values() for size in v)
    assert ref.trials and s["members"] >= 2 * len(ref.trials)
    for t in ref.trials:
        assert len(t.fold_objectives) == FOLDS  # cross-validated
        assert isinstance(ref.state(t.trial), list) and len(ref.state(t.trial)) == FOLDS  # all kept
        if t.status != "diverged":
            assert t.objective == t.best_objective  # with patience: the best evaluation's state
        if t.status != "diverged" and math.isfinite(t.objective):
            np.testing.assert_allclose(t.final_objective, np.mean(t.fold_objectives), rtol=1e-6)
    statuses = {t.status for t in ref.trials}
    assert "stopped" in statuses or name not in ("run", "pbt")  # early stopping fired
    if name in ("halving", "hyperband", "asha", "median"):
        assert "pruned" in statuses

    def hook(boundary):
        if boundary == 2:
            raise Interrupt

    ck = str(tmp_path / "ck")
    with pytest.raises(Interrupt):
        launch(name, tmp_path, "ck", checkpoint_dir=ck, _on_segment=hook, **dict(o, progress=False))
    resumed = launch(name, tmp_path, "ck", checkpoint_dir=ck, **dict(o, progress=False))
    same(resumed, ref)
    # a finished search reloads from its checkpoint without training anything
    again = launch(
        name, tmp_path, "ck", checkpoint_dir=ck, _on_segment=lambda b: 1 / 0, **dict(o, progress=False)
    )
    same(again, ref)
