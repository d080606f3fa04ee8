"""Population-based training: exploit copies the training state bit for bit (the recipient keeps
its own key stream), explore stays within the space's bounds, diverged members rank worst and are
never copied from, hyperparameters change between segments with one compiled segment program,
determinism, lineage / schedules / ancestry, the plot, and bad arguments (before any compile).
"""

from __future__ import annotations

import math

import jax
import matplotlib
import numpy as np
import pytest

from jopt import sweep
from jopt.sweep import programs as runner
from jopt.sweep.population_based import exploit_explore, explore, pbt, perturb_value
from tests.sweep_helpers import SPACE, CompileCounter, make_task

matplotlib.use("Agg")
N, STEPS, EVERY = 8, 12, 3
HUGE = {"learning_rate": 1e30, "weight_decay": 1e-2, "b1": 0.9}  # diverges at step 2

MIXED = sweep.Space(
    lr=sweep.loguniform(1e-4, 1e-1),
    b1=sweep.uniform(0.5, 0.99),
    layers=sweep.integer(1, 6),
    width=sweep.integer(8, 512, log=True),
    batch=sweep.choice([16, 32, 64, 128]),
)


def test_perturb_and_explore_stay_within_bounds():
    rng = np.random.default_rng(0)
    configs = [c for c in sweep.sample(MIXED, "random", 200, seed=1)]
    configs += [{"lr": 1e-4, "b1": 0.99, "layers": 1, "width": 512, "batch": 16}]  # at the bounds
    for cfg in configs:
        new = explore(MIXED, cfg, rng, perturb=(0.8, 1.2), resample_probability=0.0)
        for name, dim in MIXED.items():
            if name == "batch":
                i, j = dim.values.index(cfg[name]), dim.values.index(new[name])
                assert abs(i - j) == 1 or (i == j and i in (0, len(dim.values) - 1))
                continue
            assert dim.low <= new[name] <= dim.high
            if isinstance(dim, sweep.space.Integer):
                assert isinstance(new[name], int)
                moved = new[name] != cfg[name]
                assert moved or new[name] in (dim.low, dim.high)
            else:  # multiplied by 0.8 or 1.2, or clipped to a bound
                ratio = new[name] / cfg[name]
                assert min(abs(ratio - 0.8), abs(ratio - 1.2)) < 1e-9 or new[name] in (dim.low, dim.high)
        resampled = explore(MIXED, cfg, rng, resample_probability=1.0)
        assert MIXED.validate_config(resampled) == resampled
        for name, dim in MIXED.items():
            if name != "batch":
                assert dim.low <= resampled[name] <= dim.high
            else:
                assert resampled[name] in dim.values
    assert perturb_value(MIXED["lr"], 0.09, 1.2) == 0.1 and perturb_value(MIXED["lr"], 2e-4, 0.5) == 1e-4
    assert perturb_value(MIXED["layers"], 6, 1.2) == 6 and perturb_value(MIXED["layers"], 3, 0.8) == 2
    assert perturb_value(MIXED["batch"], 128, 1.2) == 128 and perturb_value(MIXED["batch"], 32, 1.2) == 64


def test_exploit_explore_truncation_selection():
    space = sweep.Space(lr=sweep.loguniform(1e-3, 1.0))
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(4, 20))
        keys = rng.normal(size=n)
        keys[rng.random(n) < 0.3] = np.inf  # diverged members
        cfgs = [{"lr": float(v)} for v in rng.uniform(1e-3, 1.0, n)]
        q = float(rng.choice([0.25, 0.3, 0.5]))
        donors, new = exploit_explore(keys, cfgs, space, np.random.default_rng(7), quantile=q)
        again = exploit_explore(keys, cfgs, space, np.random.default_rng(7), quantile=q)
        assert donors.tolist() == again[0].tolist() and new == again[1]  # deterministic
        n_q = math.floor(q * n + 1e-9)
        order = sorted(range(n), key=lambda i: (keys[i], i))
        top = [i for i in order[:n_q] if np.isfinite(keys[i])]
        replaced = [i for i in range(n) if donors[i] != i]
        if not top:
            assert replaced == [] and new == cfgs
            continue
        assert replaced == sorted(order[n - n_q :])  # exactly the bottom quantile
        assert all(donors[i] in top for i in replaced)  # donors: top quantile, never diverged
        assert all(new[i] == cfgs[i] for i in range(n) if i not in replaced)
        assert all(1e-3 <= new[i]["lr"] <= 1.0 for i in replaced)


@pytest.fixture(scope="module")
def run():
    """One PBT run (a fresh task: its compiles are counted) with a diverging member, recording
    the population before and after every exploit."""
    configs = sweep.sample(SPACE, "sobol", N, seed=0)
    configs[6] = HUGE
    runner.member_keys(0, np.arange(N), np.zeros(N))  # warm the (cached) eager key derivation
    events = []

    def on_update(before, after, src, hp):  # chunk slot i holds member i (8 members, 2 devices)
        events.append((before, None, after, hp, np.asarray(src)))

    task = make_task()
    with CompileCounter() as counter:
        r = pbt(task, SPACE, configs, steps=STEPS, eval_every=EVERY, seed=0, devices=2, progress=False,
                keep_states="all", _on_update=on_update)  # fmt: skip
    return r, events, counter.count, configs, task


def test_exploit_copies_state_exactly_and_keeps_own_keys(run):
    r, events, _, _, _ = run
    assert len(events) == STEPS // EVERY - 1 and r.stats["exploits"] == 2 * len(events)  # floor(0.25 * 8)
    for before, _, after, _, donors in events:
        replaced = [i for i in range(N) if donors[i] != i]
        assert len(replaced) == 2
        for i in range(N):
            j = int(donors[i])
            # state (params + Adam state incl. its count), step counter, status: copied bit for bit
            jax.tree.map(
                lambda a, b, i=i, j=j: np.testing.assert_array_equal(a[i], b[j]), after.state, before.state
            )
            assert after.steps[i] == before.steps[j] and after.status[i] == runner.RUNNING
            np.testing.assert_array_equal(after.key[i], before.key[i])  # own key stream
        for i in replaced:
            assert not np.array_equal(before.key[i], before.key[int(donors[i])])
    # the schedule records the hyperparameters fed to the program after each exploit
    for k, (_, _, _, hp_after, donors) in enumerate(events):
        step = EVERY * (k + 1)
        for i in range(N):
            values = [h for s, h in r.schedules[i] if s <= step][-1]
            for name in SPACE:
                np.testing.assert_array_equal(hp_after[name][i], np.float32(values[name]))
            if donors[i] != i:
                assert (step, int(donors[i])) in r.lineage[i]


def test_diverged_member_ranks_worst_and_is_never_copied(run):
    r, events, _, _, _ = run
    before, _, _, _, donors = events[0]
    diverged = [i for i in range(N) if before.status[i] == runner.DIVERGED]
    assert diverged == [6]
    assert donors[6] != 6 and 6 not in donors.tolist()  # replaced, and no one copies from it
    for before, _, _, _, donors in events:
        for i in range(N):
            if donors[i] != i:
                assert before.status[donors[i]] == runner.RUNNING
    # revived with a copied state and explored (in-bounds) hyperparameters
    t = r.trials[6]
    assert t.status == "completed" and np.isfinite(t.objective) and r.lineage[6][0][0] == EVERY
    for name, dim in SPACE.items():
        assert dim.low <= t.hyperparams[name] <= dim.high


def test_one_compile_for_the_whole_run(run):
    r, events, count, _, _ = run
    assert len({repr(h) for sched in r.schedules.values() for _, h in sched}) > N  # values changed
    assert r.stats["compiles"] == 3 and r.stats["gather_compiles"] == 0  # init, segment, update
    assert count == 3  # XLA backend compiles seen by jax.monitoring for the whole run
    assert r.stats["batch_size"] == N and r.stats["devices"] == 2


def test_deterministic_lineage_ancestry_and_plot(run, tmp_path):
    r, _, _, configs, task = run
    kw = dict(steps=STEPS, eval_every=EVERY, devices=2, progress=False)
    again = pbt(task, SPACE, configs, seed=0, **kw)
    assert again.stats["compiles"] == 0 and again.stats["gather_compiles"] == 0  # all reused
    assert again.lineage == r.lineage and again.schedules == r.schedules
    np.testing.assert_equal([t.history for t in again.trials], [t.history for t in r.trials])  # NaN == NaN
    other = pbt(task, SPACE, configs, seed=1, **kw)
    assert other.lineage != r.lineage or other.schedules != r.schedules
    # ancestry: contiguous intervals from 0 to the end, each with the values that member then used
    for t in range(N):
        anc = r.ancestry(t)
        assert anc[0][0] == 0 and anc[-1][1] == STEPS and anc[-1][2] == t
        assert all(a[1] == b[0] for a, b in zip(anc, anc[1:], strict=False))
        for start, _, member, values in anc:
            assert values == [h for s, h in r.schedules[member] if s <= start][-1]
    assert r.best.objective == min(t.objective for t in r.trials)
    assert set(r.states) == set(range(N)) and set(r.params()) == {"w", "b"}
    assert r.to_dict()["lineage"] and "schedules" in r.to_json()
    fig = r.plot_schedules(tmp_path / "pbt.png")
    assert (tmp_path / "pbt.png").stat().st_size > 1000 and len(fig.axes) == len(SPACE) + 2
    assert {ax.get_yscale() for ax in fig.axes[:2]} == {"log"}  # learning_rate, weight_decay


def test_bad_configuration_raises_before_compile():
    task = make_task()
    kw = dict(steps=12, eval_every=3, progress=False)
    cases = [
        (dict(kw, quantile=0), "quantile"), (dict(kw, quantile=0.6), "quantile"),
        (dict(kw, quantile=-0.1), "quantile"), (dict(kw, perturb=()), "perturb"),
        (dict(kw, perturb=(0.8, -1.2)), "perturb"), (dict(kw, perturb=(1.0, 1.0)), "perturb"),
        (dict(kw, perturb=(float("nan"),)), "perturb"), (dict(kw, perturb="ab"), "perturb"),
        (dict(kw, resample_probability=1.5), "resample_probability"),
        (dict(steps=12, eval_every=5), "eval_every"), (dict(steps=0, eval_every=1), "steps"),
        (dict(kw, mode="up"), "mode"), (dict(kw, keep_states="x"), "keep_states"),
    ]  # fmt: skip
    with CompileCounter() as counter:
        for args, name in cases:
            with pytest.raises(ValueError, match=name):
                pbt(task, SPACE, 8, **args)
        with pytest.raises(ValueError, match="at least ceil"):
            pbt(task, SPACE, 3, **kw)  # floor(0.25 * 3) = 0 members would be replaced
        static = sweep.Space(dict(SPACE), batch_size=sweep.choice([8, 16], static=True))
        with pytest.raises(ValueError, match="static"):
            pbt(make_task(hidden_static=True), static, 8, **kw)
    assert counter.count == 0
    # a fixed (static but shared) value is fine: nothing to perturb
    space = sweep.Space(dict(SPACE), batch_size=16)
    r = pbt(make_task(hidden_static=True), space, 4, steps=4, eval_every=2, quantile=0.5, devices=1,
            progress=False)  # fmt: skip
    assert all(t.hyperparams["batch_size"] == 16 for t in r.trials) and r.stats["exploits"] == 2


def test_docstring_examples_run():
    import doctest
    import importlib

    module = importlib.import_module("jopt.sweep.population_based")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
