"""Properties every optimizer must have, checked over the ``CASES`` of each optimizer module.

* one jitted step compiles once for all hyperparameter values (traced hyperparameters);
* ``jax.vmap`` over every numeric hyperparameter equals a Python loop over its values;
* convergence on a quadratic and on Rosenbrock;
* jit and eager agree; state structure, shapes and dtypes are stable across updates;
* bfloat16 parameters keep their dtype and stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from tests.reference import PROBLEMS, OptCase, assert_trees_close, quadratic
from tests.test_adam_family import CASES as ADAM_CASES
from tests.test_ademamix_adopt import CASES as ADEMAMIX_CASES
from tests.test_kron import CASES as KRON_CASES
from tests.test_layerwise_factored_sign import CASES as LAYERWISE_CASES
from tests.test_learning_rate_free import CASES as LRF_CASES
from tests.test_madgrad_galore import CASES as MADGRAD_GALORE_CASES
from tests.test_mars_cautious import CASES as MARS_CASES
from tests.test_muon import CASES as MUON_CASES
from tests.test_sam_sophia import CASES as SAM_SOPHIA_CASES
from tests.test_schedule_free import CASES as SCHEDULE_FREE_CASES
from tests.test_sgd_adaptive import CASES as SGD_CASES
from tests.test_soap_shampoo import CASES as SOAP_SHAMPOO_CASES

CASES: list[OptCase] = [
    *SGD_CASES,
    *ADAM_CASES,
    *LAYERWISE_CASES,
    *SCHEDULE_FREE_CASES,
    *ADEMAMIX_CASES,
    *MARS_CASES,
    *SAM_SOPHIA_CASES,
    *MADGRAD_GALORE_CASES,
    *KRON_CASES,
    *SOAP_SHAMPOO_CASES,
    *LRF_CASES,
    *MUON_CASES,
]
IDS = [c.name for c in CASES]
STEPS = 20


def _variants(value, n: int = 3) -> list:
    """``n`` distinct valid values around ``value`` (scaled towards zero, or shifted ints)."""
    if isinstance(value, bool):
        raise TypeError("boolean options are structural, not hyperparameters")
    if isinstance(value, int) and not isinstance(value, bool):
        return [value + i for i in range(n)]
    return [float(value) * f for f in (1.0, 0.7, 0.4)][:n]


def _make_runner(case: OptCase, problem, steps: int = STEPS):
    """A jitted ``hparams -> final params`` and a counter of how often it was traced."""
    traces = []

    @jax.jit
    def run(hparams):
        traces.append(1)
        tx = case.make(**hparams)
        params = problem.params

        def step(carry, _):
            p, s = carry
            g = jax.grad(problem.loss)(p)
            u, s = tx.update(g, s, p)
            return (jopt.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return params

    return run, traces


def _as_arrays(hparams: dict) -> dict:
    return {k: jnp.asarray(v, jnp.int32 if isinstance(v, int) else jnp.float32) for k, v in hparams.items()}


def test_every_optimizer_module_registered_cases():
    names = {c.name for c in CASES}
    expected = {
        "sgd", "heavy_ball_momentum", "rmsprop", "adagrad", "adadelta", "adam", "adamw", "nadam",
        "nadamw", "amsgrad", "adamax", "radam", "adabelief", "yogi", "lion", "lamb", "lars",
        "adafactor", "novograd", "sign_sgd",
    }  # fmt: skip
    missing = {n for n in expected if not any(c.startswith(n) for c in names)}
    assert not missing, f"optimizers without a registered test case: {sorted(missing)}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vmap_over_every_hyperparameter_equals_loop_and_compiles_once(case):
    run, traces = _make_runner(case, quadratic())
    columns = {k: _variants(v) for k, v in case.kwargs.items()}
    configs = [{k: columns[k][i] for k in columns} for i in range(3)]
    looped = [run(_as_arrays(c)) for c in configs]
    assert len(traces) == 1, f"{case.name}: jitted step retraced for new hyperparameter values"
    batched_in = {k: jnp.stack([_as_arrays(c)[k] for c in configs]) for k in columns}
    batched = jax.jit(jax.vmap(run.__wrapped__ if hasattr(run, "__wrapped__") else run))(batched_in)
    for i, expected in enumerate(looped):
        actual = jax.tree.map(lambda x, i=i: x[i], batched)
        assert_trees_close(actual, expected, rtol=2e-5, atol=2e-6, err_msg=f"{case.name} config {i}")


@pytest.mark.parametrize(
    "case,problem",
    [(c, p) for c in CASES for p in c.converges_on],
    ids=[f"{c.name}-{p}" for c in CASES for p in c.converges_on],
)
def test_converges(case, problem):
    prob = PROBLEMS[problem]()
    run, _ = _make_runner(case, prob, steps=500)
    final = run(_as_arrays(case.converge_kwargs or case.kwargs))
    start, end = float(prob.loss(prob.params)), float(prob.loss(final))
    assert np.isfinite(end) and end < start / 10, f"{case.name} on {problem}: loss {start:.4g} -> {end:.4g}"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jit_equals_eager_and_state_is_stable(case):
    prob = PROBLEMS["mlp"]()
    tx = case.make(**case.kwargs)
    state0 = tx.init(prob.params)

    def step(p, s):
        g = jax.grad(prob.loss)(p)
        u, s = tx.update(g, s, p)
        return jopt.apply_updates(p, u), s

    jitted = jax.jit(step)
    p_e, s_e = prob.params, state0
    p_j, s_j = prob.params, state0
    for _ in range(2):  # eager steps of the matrix optimizers are slow; two show the state is stable
        p_e, s_e = step(p_e, s_e)
        p_j, s_j = jitted(p_j, s_j)
    assert_trees_close(p_e, p_j, rtol=1e-5, atol=1e-6)
    shape = lambda t: jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), t)
    assert jax.tree.structure(s_j) == jax.tree.structure(state0)
    assert shape(s_j) == shape(state0), f"{case.name}: state shapes/dtypes changed after update"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bfloat16_params_keep_dtype(case):
    prob = quadratic()
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), prob.params)
    tx = case.make(**case.kwargs)

    @jax.jit
    def run(p):
        def step(carry, _):
            p, s = carry
            g = jax.grad(lambda q: prob.loss(jax.tree.map(lambda x: x.astype(jnp.float32), q)))(p)
            u, s = tx.update(g, s, p)
            return (jopt.apply_updates(p, u), s), None

        (p, s), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=10)
        return p, s

    p, s = run(params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(p))
    for name, value in jopt.current_hyperparams(s).items():
        assert jnp.asarray(value).dtype in (jnp.float32, jnp.int32, jnp.bool_), (
            f"{name} stored as {value.dtype}"
        )
