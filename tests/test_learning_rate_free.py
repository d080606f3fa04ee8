"""Learning-rate-free methods against optax.contrib (bit for bit) and a NumPy D-Adapt SGD.

* Prodigy, D-Adapt AdamW, DoG, DoWG, COCOB and Mechanic equal optax's
  trajectories exactly in float32 and float64 over 150 steps, on ``mlp3d`` with
  the default hyperparameters and on Rosenbrock with every argument changed
  (``tests.reference.trajectory``), and in a loop of jitted single steps (the
  usual training loop), where their estimates, read with
  ``jopt.current_hyperparams``, equal optax's state fields bit for bit.
* D-Adapt SGD (not in optax) equals a NumPy transcription of the authors' rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jopt
from jopt.optimizers import learning_rate_free as lrf
from jopt.optimizers.learning_rate_free import cocob, dadapt_adamw, dadapt_sgd, dog, dowg, prodigy
from jopt.transforms.distance_estimates import DoGState, DoWGState
from jopt.transforms.learning_rate_free import COCOBState, mechanize
from tests.reference import OptCase, mlp3d, quadratic, rosenbrock, trajectory

STEPS = 150
contrib = optax.contrib


def _prodigy(learning_rate, b1, b2, beta3, eps, estim_lr0, estim_lr_coef, weight_decay, lib=lrf):
    return lib.prodigy(learning_rate, (b1, b2), beta3, eps, estim_lr0, estim_lr_coef, weight_decay)


def _dadapt(learning_rate, b1, b2, eps, estim_lr0, weight_decay, lib=lrf):
    return lib.dadapt_adamw(learning_rate, (b1, b2), eps, estim_lr0, weight_decay)


def _dog(learning_rate, init_step, eps, weight_decay, lib=lrf):
    return lib.dog(learning_rate, ("heuristic", init_step), eps, weight_decay)


def _mechanize(learning_rate, weight_decay, eps, s_init, lib=None):
    if lib is None:
        return mechanize(jopt.adam(learning_rate), weight_decay, eps, s_init)
    return contrib.mechanize(optax.adam(learning_rate), weight_decay, eps, s_init)


# Every numeric hyperparameter, at optax's defaults (the generic tests vmap over each; the
# array-path test below compares these, as float32 arrays, with the defaults' run).
# weight_decay=0.0 and init_estim_sq_dist=1e-4 (= eps) are what DoG's None and DoWG's None
# mean. The methods pick their own step, so Rosenbrock's curved valley is the hard case:
# 500 steps of DoG, COCOB or Mechanic end near loss 4.5 (from 29), not below 2.9.
CASES: list[OptCase] = [
    OptCase(
        "prodigy",
        _prodigy,
        dict(learning_rate=1.0, b1=0.9, b2=0.999, beta3=0.999**0.5, eps=1e-8, estim_lr0=1e-6)
        | dict(estim_lr_coef=1.0, weight_decay=0.0),
        lambda **kw: _prodigy(**kw, lib=contrib),
    ),
    OptCase(
        "dadapt_adamw",
        _dadapt,
        dict(learning_rate=1.0, b1=0.9, b2=0.999, eps=1e-8, estim_lr0=1e-6, weight_decay=0.0),
        lambda **kw: _dadapt(**kw, lib=contrib),
    ),
    OptCase(
        "dadapt_sgd",
        dadapt_sgd,
        dict(learning_rate=1.0, momentum=0.9, weight_decay=0.0, estim_lr0=1e-6, growth_rate=2.0),
    ),
    OptCase(
        "dog",
        _dog,
        dict(learning_rate=1.0, init_step=1e-6, eps=1e-8, weight_decay=0.0),
        lambda **kw: _dog(**kw, lib=contrib),
        converges_on=("quadratic",),
    ),
    OptCase(
        "dowg",
        dowg,
        dict(learning_rate=1.0, init_estim_sq_dist=1e-4, eps=1e-4, weight_decay=0.0),
        contrib.dowg,
    ),
    OptCase(
        "cocob",
        cocob,
        dict(learning_rate=1.0, alpha=100.0, eps=1e-8, weight_decay=0.0),
        contrib.cocob,
        converges_on=("quadratic",),
    ),
    OptCase(
        "mechanize",
        _mechanize,
        dict(learning_rate=1.0, weight_decay=1e-2, eps=1e-8, s_init=1e-6),
        lambda **kw: _mechanize(**kw, lib=contrib),
        converges_on=("quadratic",),
    ),
]
CASE = {c.name: c for c in CASES}

# --------------------------------------------------------------------------- optax parity

_DEFAULT = {
    "prodigy": (prodigy(), contrib.prodigy()),
    "dadapt_adamw": (dadapt_adamw(), contrib.dadapt_adamw()),
    "dog": (dog(), contrib.dog()),
    "dowg": (dowg(), contrib.dowg()),
    "cocob": (cocob(), contrib.cocob()),
    "mechanize": (mechanize(jopt.adam(1.0)), contrib.mechanize(optax.adam(1.0))),
}
_DOG_STEP = ("learning_rate", 1e-3)
_PRODIGY_ARGS = (0.5, (0.8, 0.99), 0.95, 1e-6, 1e-5, 2.0, 1e-2, True)
_NON_DEFAULT = {
    "prodigy": (prodigy(*_PRODIGY_ARGS), contrib.prodigy(*_PRODIGY_ARGS)),
    "dadapt_adamw": (
        dadapt_adamw(0.7, (0.8, 0.99), 1e-6, 1e-5, 1e-2),
        contrib.dadapt_adamw(0.7, (0.8, 0.99), 1e-6, 1e-5, 1e-2),
    ),
    "dog": (dog(0.5, _DOG_STEP, 1e-6, 1e-3), contrib.dog(0.5, _DOG_STEP, 1e-6, 1e-3)),
    "dowg": (dowg(0.5, 1e-3, 1e-6, 1e-3), contrib.dowg(0.5, 1e-3, 1e-6, 1e-3)),
    "cocob": (cocob(0.5, 50.0, 1e-6, 1e-3), contrib.cocob(0.5, 50.0, 1e-6, 1e-3)),
    "mechanize": (
        mechanize(jopt.sgd(1.0, 0.9), 1e-3, 1e-7, 1e-5, 4),
        contrib.mechanize(optax.sgd(1.0, 0.9), 1e-3, 1e-7, 1e-5, 4),
    ),
}


def _assert_equal(actual, expected):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _in_dtype(problem, dtype):
    return problem._replace(params=jax.tree.map(lambda x: x.astype(dtype), problem.params))


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("problem", ["mlp3d", "rosenbrock"])
@pytest.mark.parametrize("name", sorted(_DEFAULT))
def test_trajectory_equals_optax_bit_for_bit(name, problem, x64):
    ours, theirs = (_DEFAULT if problem == "mlp3d" else _NON_DEFAULT)[name]
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        prob = _in_dtype(mlp3d() if problem == "mlp3d" else rosenbrock(), dtype)
        ps = trajectory(ours, prob, STEPS)
        assert all(x.dtype == dtype for x in jax.tree.leaves(ps))
        _assert_equal(ps, trajectory(theirs, prob, STEPS))
        # The trajectories move (equal constants would prove nothing).
        assert prob.loss(jax.tree.map(lambda x: x[-1], ps)) < 0.9 * prob.loss(prob.params)


@pytest.mark.parametrize("case", [c for c in CASES if c.reference], ids=lambda c: c.name)
def test_array_hyperparameters_agree_with_python_numbers(case):
    """Every hyperparameter a float32 array.

    The array path computes ``1 - b2`` etc. in float32 from float32 values, so it equals optax
    run with the float32-rounded values as Python numbers (bit for bit for most; to 1e-5
    relative: D-Adapt AdamW's sqrt(b2) is then a float32 root, not a float64 one). Against
    the Python-number path it differs by no more than optax itself moves when its
    hyperparameters are rounded to float32 (~1e-4 after 150 steps on the quadratic: the
    estimates amplify the 1e-5 relative change of 1 - b2).
    """
    prob = quadratic()
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in case.kwargs.items()}
    rounded = {k: float(np.float32(v)) for k, v in case.kwargs.items()}
    ps = trajectory(case.make(**case.kwargs), prob, STEPS)
    ps_arr = trajectory(case.make(**arrays), prob, STEPS)
    ps_rounded = trajectory(case.reference(**rounded), prob, STEPS)
    for a, r in zip(jax.tree.leaves(ps_arr), jax.tree.leaves(ps_rounded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-5, atol=1e-6)
    gap = lambda x, y: max(
        float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y))
    )
    assert gap(ps_arr, ps) <= 2 * gap(ps_rounded, ps) + 1e-6


def test_dog_distance_init_and_mechanize_with_optax_base_equal_optax():
    prob = quadratic()
    init_step = ("distance", 1e-3)
    _assert_equal(trajectory(dog(1.0, init_step), prob), trajectory(contrib.dog(1.0, init_step), prob))
    ours = mechanize(optax.lion(1.0), 1e-3, 1e-8, 1e-5)  # a foreign (optax) base optimizer
    _assert_equal(
        trajectory(ours, prob), trajectory(contrib.mechanize(optax.lion(1.0), 1e-3, 1e-8, 1e-5), prob)
    )


def _find(state, cls):
    """The first sub-state of type ``cls`` (optax's and jopt's chains nest them differently)."""
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, cls)) if isinstance(s, cls)]
    assert found, f"no {cls.__name__} in the state"
    return found[0]


def _jitted_steps(tx, problem, steps):
    """Parameters after each step and the last state of a loop over one jitted step.

    This is the usual training loop; there every state field is an output of the step.
    """

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(problem.loss)(p), s, p)
        return jopt.apply_updates(p, u), s

    p, s, ps = problem.params, tx.init(problem.params), []
    for _ in range(steps):
        p, s = step(p, s)
        ps.append(p)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *ps), s


# name -> (optax state class, {name shown by current_hyperparams: optax state -> value}).
_ESTIMATES = {
    "prodigy": (contrib.ProdigyState, {"estim_lr": lambda s: s.estim_lr}),
    "dadapt_adamw": (contrib.DAdaptAdamWState, {"estim_lr": lambda s: s.estim_lr}),
    "dog": (contrib.DoGState, {"max_dist": lambda s: s.max_dist}),
    "dowg": (contrib.DoWGState, {"estim_sq_dist": lambda s: s.estim_sq_dist}),
    "mechanize": (contrib.MechanicState, {}),
}


def test_jitted_steps_and_estimates_equal_optax_bit_for_bit():
    prob = quadratic()
    for name, (cls, getters) in _ESTIMATES.items():
        ours, theirs = _DEFAULT[name]
        p, state = _jitted_steps(ours, prob, 12)
        p_ref, state_ref = _jitted_steps(theirs, prob, 12)
        _assert_equal(p, p_ref)
        shown, ref = jopt.current_hyperparams(state), _find(state_ref, cls)
        assert set(shown) == set(jopt.current_hyperparams(ours.init(prob.params))), name
        for key, get in getters.items():
            np.testing.assert_array_equal(np.asarray(shown[key]), np.asarray(get(ref)), err_msg=name)
        # The step sizes: DoG's / DoWG's step and Mechanic's scale from optax's state.
        if name == "dog":
            np.testing.assert_allclose(
                shown["estim_lr"], ref.max_dist / jnp.sqrt(ref.sum_sq_norm_grads + 1e-8)
            )
        if name == "dowg":
            step = ref.estim_sq_dist / (jnp.sqrt(ref.weighted_sq_norm_grads) + 1e-4)
            np.testing.assert_allclose(shown["estim_lr"], step, rtol=1e-6)
        if name == "mechanize":
            np.testing.assert_allclose(shown["estim_lr"], jnp.sum(ref.s), rtol=1e-6)
        assert shown["estim_lr"].dtype == jnp.float32 and float(shown["estim_lr"]) > 0, name


def test_estimates_before_the_first_step():
    params = quadratic().params
    assert float(jopt.current_hyperparams(prodigy(estim_lr0=1e-3).init(params))["estim_lr"]) == np.float32(
        1e-3
    )
    mech = mechanize(jopt.sgd(1.0), s_init=1e-3, num_betas=3).init(params)
    np.testing.assert_allclose(float(jopt.current_hyperparams(mech)["estim_lr"]), 3e-3, rtol=1e-6)
    dog_state = _find(dog(init_step=("distance", 0.5)).init(params), DoGState)
    assert float(dog_state.hyperparams["max_dist"]) == 0.5 and float(dog_state.hyperparams["estim_lr"]) == 0.0
    assert (
        float(_find(dowg(init_estim_sq_dist=2.0).init(params), DoWGState).hyperparams["estim_sq_dist"]) == 2.0
    )


def test_schedules_are_resolved_and_shown():
    prob = quadratic()
    sched = lambda count: 1.0 / (1.0 + count)
    _assert_equal(trajectory(prodigy(sched), prob, 20), trajectory(contrib.prodigy(sched), prob, 20))
    _, state = _jitted_steps(prodigy(sched), prob, 3)
    np.testing.assert_allclose(float(jopt.current_hyperparams(state)["learning_rate"]), 1.0 / 3, rtol=1e-6)


def test_cocob_state_layout_and_update_needs_params():
    params = {"w": jnp.ones(3)}
    tx = cocob()
    state = _find(tx.init(params), COCOBState)
    assert state._fields[0] == "count" and state._fields[-1] == "hyperparams"
    np.testing.assert_array_equal(state.scale["w"], np.full(3, 1e-8, np.float32))
    with pytest.raises(ValueError, match="needs params"):
        tx.update({"w": jnp.ones(3)}, tx.init(params))


# --------------------------------------------------------------------------- D-Adapt SGD


def _dadapt_sgd_numpy(x0, grad, steps, lr, momentum, weight_decay, d0, growth_rate):
    """SGD with D-Adaptation (Defazio & Mishchenko 2023), transcribed on flat float64 vectors."""
    x, s, d, numerator, g0_norm = x0.copy(), np.zeros_like(x0), d0, 0.0, None
    xs, ds = [], []
    for k in range(steps):
        g = grad(x) + weight_decay * x
        if k == 0:
            g0_norm = np.sqrt(np.dot(g, g))
        step = d * lr / g0_norm
        numerator += step * np.dot(g, s)
        s = s + step * g
        if lr > 0:
            d = max(d, min(2 * numerator / np.linalg.norm(s), d * growth_rate))
        x = momentum * x + (1 - momentum) * (x0 - s)
        xs.append(x.copy())
        ds.append(d)
    return np.stack(xs), np.array(ds)


def _check_dadapt_sgd(problem, kwargs, x64, rtol, steps=60):
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        prob = _in_dtype({"quadratic": quadratic, "mlp3d": mlp3d}[problem](), dtype)
        ps, state = _jitted_steps(dadapt_sgd(**kwargs), prob, steps)
        flat0, unravel = ravel_pytree(prob.params)
        grad_fn = jax.jit(lambda v: ravel_pytree(jax.grad(prob.loss)(unravel(v)))[0])
        ref_x, ref_d = _dadapt_sgd_numpy(
            np.asarray(flat0, np.float64),
            lambda v: np.asarray(grad_fn(jnp.asarray(v, dtype)), np.float64),
            steps,
            kwargs["learning_rate"],
            kwargs["momentum"],
            kwargs["weight_decay"],
            kwargs["estim_lr0"],
            kwargs.get("growth_rate", np.inf),
        )
        ours = np.concatenate([np.asarray(x).reshape(steps, -1) for x in jax.tree.leaves(ps)], axis=1)
        np.testing.assert_allclose(ours, ref_x, rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(float(jopt.current_hyperparams(state)["estim_lr"]), ref_d[-1], rtol=rtol)
        assert ref_d[-1] > 100 * kwargs["estim_lr0"]  # the estimate grew
        return ref_d


_DSGD_CONFIGS = [
    ("quadratic", dict(learning_rate=1.0, momentum=0.0, weight_decay=0.0, estim_lr0=1e-6)),
    ("mlp3d", dict(learning_rate=0.8, momentum=0.9, weight_decay=1e-3, estim_lr0=1e-5, growth_rate=1.5)),
]


# float64 against float64: the same rule, other summation orders. float32 against the
# float64 reference: float32 rounding, amplified over 60 steps.
@pytest.mark.parametrize("problem,kwargs", _DSGD_CONFIGS, ids=[p for p, _ in _DSGD_CONFIGS])
def test_dadapt_sgd_matches_numpy_transcription(problem, kwargs):
    ref_d = _check_dadapt_sgd(problem, kwargs, x64=True, rtol=1e-9)
    _check_dadapt_sgd(problem, kwargs, x64=False, rtol=2e-4)
    if "growth_rate" in kwargs:  # the bound is active: d grew by exactly that factor at some steps
        ratios = ref_d[1:] / ref_d[:-1]
        assert ratios.max() <= kwargs["growth_rate"] * (1 + 1e-12)
        assert np.any(np.isclose(ratios, kwargs["growth_rate"]))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: prodigy(betas=(1.5, 0.999)), r"prodigy: betas\[0\] must be in \[0, 1\)"),
        (lambda: prodigy(estim_lr0=0.0), r"prodigy: estim_lr0 must be in \(0, inf\]"),
        (lambda: dadapt_adamw(betas=(0.9, 1.0)), r"dadapt_adamw: betas\[1\] must be in \[0, 1\)"),
        (lambda: dadapt_sgd(growth_rate=0.5), r"dadapt_sgd: growth_rate must be in \[1, inf\]"),
        (lambda: dadapt_sgd(momentum=-0.1), r"dadapt_sgd: momentum must be in \[0, 1\)"),
        (lambda: dog(init_step=("distance", -1.0)), r"scale_by_dog: init_step must be in \(0, inf\]"),
        (lambda: dog(init_step=("typo", 1.0)), r"scale_by_dog: init_step\[0\] must be one of"),
        (lambda: dowg(eps=-1.0), r"scale_by_dowg: eps must be in \(0, inf\]"),
        (lambda: dowg(init_estim_sq_dist=0.0), r"scale_by_dowg: init_estim_sq_dist must be in \(0, inf\]"),
        (lambda: cocob(eps=0.0), r"scale_by_cocob: eps must be in \(0, inf\]"),
        (lambda: mechanize(jopt.sgd(1.0), s_init=-1.0), r"mechanize: s_init must be in \(0, inf\]"),
        (lambda: mechanize(jopt.sgd(1.0), num_betas=0), r"mechanize: num_betas must be an integer >= 1"),
    ],
)
def test_bad_values_raise_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()
