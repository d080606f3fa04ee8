"""Multi-objective sweeps (``directions=``) and constraints.

References: a brute-force NumPy dominance check and hypervolume (2-D: the union of rectangles
summed by sweeping the sorted front; 3-D: inclusion-exclusion over all subsets of a small
front), and the task's own ``evaluate`` applied to the kept final states.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt import sweep
from jopt.sweep import pareto

TARGET = jnp.array([3.0, -1.0])
SPACE = sweep.Space(lr=sweep.loguniform(1e-2, 0.9), w=sweep.uniform(0.1, 2.0))
KW = dict(steps=6, eval_every=3, seed=0, progress=False)


def _evaluate(hp, x):
    losses = jnp.stack([(x[0] - 3.0) ** 2 + hp["w"], (x[1] + 1.0) ** 2 + 1.0 / hp["w"]])
    return losses, {"w": hp["w"]}


TASK = sweep.Task(
    init=lambda hp, key: jnp.zeros(2),
    step=lambda hp, x, key: (x - hp["lr"] * 2 * (x - TARGET), {"loss": jnp.sum((x - TARGET) ** 2)}),
    evaluate=_evaluate,
)


def brute_front(points: np.ndarray) -> list[int]:
    out = []
    for i, p in enumerate(points):
        if not any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(points) if j != i):
            out.append(i)
    return out


def brute_hv2(points: np.ndarray, ref) -> float:
    pts = sorted(map(tuple, points[brute_front(points)]))
    total, prev_y = 0.0, ref[1]
    for x, y in pts:  # x increasing, y decreasing along a 2-D front
        if x < ref[0] and y < prev_y:
            total += (ref[0] - x) * (prev_y - y)
            prev_y = y
    return total


def brute_hv_inclusion_exclusion(points: np.ndarray, ref) -> float:
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.max(np.array(subset), axis=0)
            total += (-1) ** (k + 1) * np.prod(np.clip(np.asarray(ref) - corner, 0.0, None))
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_and_hypervolume_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts2 = rng.integers(0, 6, size=(12, 2)).astype(float)  # integer grid: ties and duplicates
    front = pareto.non_dominated(pts2)
    assert sorted(np.flatnonzero(front).tolist()) == brute_front(pts2)
    assert pareto.hypervolume(pts2, [6.0, 7.0]) == pytest.approx(brute_hv2(pts2, [6.0, 7.0]))
    pts3 = rng.random((6, 3))
    assert pareto.hypervolume(pts3, [1.1, 1.2, 1.0]) == pytest.approx(
        brute_hv_inclusion_exclusion(pts3, [1.1, 1.2, 1.0])
    )


@pytest.fixture(scope="module")
def result():
    return sweep.run(TASK, SPACE, 12, directions=("min", "max"), keep_states="all", **KW)


def test_objectives_are_the_tasks_and_the_front_is_non_dominated(result):
    assert result.directions == ("min", "max")
    for t in result.trials:  # evaluate applied to the kept final state gives the recorded objectives
        want, _ = _evaluate(t.hyperparams, result.state(t.trial))
        np.testing.assert_allclose(t.objectives, np.asarray(want), rtol=1e-6)
        assert t.objective == t.objectives[0]
    values = np.array([t.objectives for t in result.trials])
    oriented = values * np.array([1.0, -1.0])  # the second objective is maximized
    want = {result.trials[i].trial for i in brute_front(oriented)}
    front = result.pareto_front()
    assert {t.trial for t in front} == want
    assert [t.objectives[0] for t in front] == sorted(t.objectives[0] for t in front)
    ref = [20.0, 0.0]  # worse than every point: objective 0 larger, objective 1 smaller
    assert result.hypervolume(ref) == pytest.approx(brute_hv2(oriented, [20.0, 0.0]))
    fig = result.plot_pareto()
    assert len(fig.axes) == 1


def test_directions_must_match_the_objectives_before_any_compile():
    with pytest.raises(ValueError, match=r"directions=\('min', 'min', 'min'\) names 3 objectives"):
        sweep.run(TASK, SPACE, 2, directions=("min", "min", "min"), **KW)
    with pytest.raises(ValueError, match="returns 2 objectives: give directions"):
        sweep.run(TASK, SPACE, 2, **KW)
    with pytest.raises(ValueError, match="patience"):
        sweep.run(TASK, SPACE, 2, directions=("min", "min"), patience=2, **KW)
    single = TASK._replace(evaluate=lambda hp, x: jnp.sum(x))
    with pytest.raises(ValueError, match="returns one scalar"):
        sweep.run(single, SPACE, 2, directions=("min", "min"), **KW)


def _light(metrics):  # feasible when w <= 1
    return [metrics["eval/w"] - 1.0]


def test_constraints_rank_infeasible_trials_last_and_leave_them_off_the_front():
    r = sweep.run(TASK, SPACE, 12, directions=("min", "min"), constraints=_light, **KW)
    feasible = [t.hyperparams["w"] <= 1.0 for t in r.trials]
    assert 0 < sum(feasible) < len(feasible)
    assert [t.feasible for t in r.trials] == feasible
    for t in r.trials:
        assert t.violation == pytest.approx(max(0.0, t.hyperparams["w"] - 1.0), rel=1e-6)
    ranked = r.ranked()
    k = sum(feasible)
    assert all(t.feasible for t in ranked[:k]) and not any(t.feasible for t in ranked[k:])
    assert [t.violation for t in ranked[k:]] == sorted(t.violation for t in ranked[k:])
    assert r.best.feasible and all(t.feasible for t in r.pareto_front())


def test_constraints_steer_successive_halving():
    """The rung's survivors are the feasible trials (there are enough of them), whatever their objective."""
    task = TASK._replace(evaluate=lambda hp, x: (jnp.sum((x - TARGET) ** 2) - hp["w"], {"w": hp["w"]}))
    r = sweep.successive_halving(task, SPACE, 9, max_steps=6, min_steps=2, eta=3, constraints=_light,
                                 progress=False, seed=0)  # fmt: skip
    survivors = [t for t in r.trials if (t.rung or 0) >= 1]
    feasible = [t for t in r.trials if t.hyperparams["w"] <= 1.0]
    assert len(feasible) >= len(survivors) > 0
    assert all(t.hyperparams["w"] <= 1.0 for t in survivors)
    plain = sweep.successive_halving(task, SPACE, 9, max_steps=6, min_steps=2, eta=3, progress=False, seed=0)
    assert any(
        t.hyperparams["w"] > 1.0 for t in plain.trials if (t.rung or 0) >= 1
    )  # the constraint mattered


def test_bad_constraints_are_clear_errors():
    with pytest.raises(ValueError, match="constraints must be None or a function"):
        sweep.run(TASK, SPACE, 2, directions=("min", "min"), constraints=[1.0], **KW)
    with pytest.raises(ValueError, match="constraints failed on the metrics"):
        sweep.run(TASK, SPACE, 2, directions=("min", "min"), constraints=lambda m: m["eval/missing"], **KW)


def test_module_is_jax_free_numpy():
    assert not any(isinstance(v, jax.Array) for v in vars(pareto).values())


def test_nsga2_drives_the_engine_and_the_study_agrees_on_the_front():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    r = sweep.optuna_search(TASK, SPACE, 8, batch=4, sampler="nsga2", directions=("min", "min"),
                            constraints=_light, **KW)  # fmt: skip
    assert r.directions == ("min", "min") and len(r.trials) == 8 and r.stats["sampler"] == "NSGAIISampler"
    assert all(t.objectives is not None for t in r.trials)
    with pytest.raises(ValueError, match="no pruner with directions"):
        sweep.optuna_search(
            TASK, SPACE, 2, pruner=optuna.pruners.MedianPruner(), directions=("min", "min"), **KW
        )


def test_multi_objective_study_is_told_every_objective_and_the_violation():
    import optuna

    study = sweep.optuna_study.create_study(sampler="nsga2", mode=("min", "min"), constrained=True)
    r = sweep.optuna_search(
        TASK, SPACE, 6, batch=3, study=study, directions=("min", "min"), constraints=_light, **KW
    )
    done = {t.number: t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert set(done) == {t.trial for t in r.trials}
    for t in r.trials:
        np.testing.assert_allclose(done[t.trial].values, t.objectives)
        assert done[t.trial].user_attrs["jopt_constraint"] == [pytest.approx(t.violation)]
    feasible_best = {t.number for t in study.best_trials}  # Optuna's constrained front
    assert feasible_best == {t.trial for t in r.pareto_front()}


def test_optuna_search_refuses_a_multi_process_job(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="Optuna workers are independent"):
        sweep.optuna_search(TASK, SPACE, 2, directions=("min", "min"), **KW)


def test_parego_targets_respect_dominance_and_feasibility():
    from types import SimpleNamespace

    from jopt.sweep.bayes import minimization_targets

    rng = np.random.default_rng(0)
    f = rng.random((20, 3))
    results = [SimpleNamespace(objective=v[0], objectives=tuple(v), violation=0.0) for v in f]
    for round_ in range(10):  # any weights: a dominated point never scores better than its dominator
        y = np.asarray(
            minimization_targets(results, "min", ("min", "min", "min"), np.random.default_rng(round_))
        )
        for i, j in itertools.permutations(range(20), 2):
            if np.all(f[i] <= f[j]):
                assert y[i] <= y[j] + 1e-12
    flipped = [SimpleNamespace(objective=-v[0], objectives=(v[0], -v[1], v[2]), violation=0.0) for v in f]
    y = minimization_targets(results, "min", ("min", "min", "min"), np.random.default_rng(3))
    y_flip = minimization_targets(flipped, "min", ("min", "max", "min"), np.random.default_rng(3))
    np.testing.assert_allclose(y, y_flip)  # a maximized objective is its negation minimized
    results[4].violation = 0.5
    y = minimization_targets(results, "min", ("min", "min", "min"), np.random.default_rng(0))
    assert y[4] > max(v for i, v in enumerate(y) if i != 4)


def test_bayesian_multi_objective_search_proposes_after_its_design():
    r = sweep.bayesian(TASK, SPACE, 10, batch=4, initial=4, steps=6, eval_every=3, fit_steps=30, restarts=1,
                       num_candidates=256, directions=("min", "min"), progress=False)  # fmt: skip
    assert r.stats["rounds"] > 1 and max(r.stats["trial_round"]) >= 1
    assert all(t.objectives is not None for t in r.trials) and r.pareto_front()
