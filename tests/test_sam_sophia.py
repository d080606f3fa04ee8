"""SAM (transparent and opaque), adaptive SAM, Sophia and Hutchinson's estimator.

Reference: optax 0.2.8's ``optax.contrib`` (``sam``, ``normalize``, ``sophia``,
``hutchinson_estimator_diag_hessian``), compared over whole 120-step
trajectories on ``mlp3d`` (matrix, vector and 3-D leaves) and Rosenbrock, bit
for bit in float32 and in float64. Adaptive SAM's :func:`normalize_adaptive` has
no optax counterpart and is compared with a NumPy transcription of ASAM's update
(Kwon et al., 2021).

Generic ``CASES``: SAM and ASAM in transparent mode (one step per ``update``
call, so they fit the generic ``update(g, s, p)`` runner) and Sophia with a
squared-gradient curvature estimate (a ``hessian_diagonal_fn`` without extra
arguments). Excluded, because their ``update`` needs an extra argument the
generic runner cannot supply for every problem: SAM in opaque mode (``grad_fn``)
and Sophia-H with Hutchinson's estimator (``obj_fn``); both are covered here.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.optimizers.second_order import sophia
from jopt.transforms.sam import SAMState, normalize, normalize_adaptive, sam
from jopt.transforms.second_order import HutchinsonState, SophiaState, hutchinson_estimator_diag_hessian
from tests.reference import (
    OptCase,
    Problem,
    assert_trees_close,
    assert_trees_equal,
    mlp3d,
    quadratic,
    rosenbrock,
    trajectory,
)
from tests.test_batched_cond import _unconditional_primitives

STEPS = 120
PROBLEMS = {"mlp3d": mlp3d, "rosenbrock": rosenbrock}


def _float64(problem: Problem) -> Problem:
    return problem._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), problem.params))


def _run(tx, problem: Problem, steps: int = STEPS, **extra):
    """Like ``tests.reference.trajectory``; ``extra`` maps names to ``problem -> value`` (grad_fn, obj_fn)."""
    kwargs = {k: f(problem) for k, f in extra.items()}

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(problem.loss)(p), s, p, **kwargs)
            p = jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u)
            return (p, s), p

        return jax.lax.scan(step, (params, tx.init(params)), None, length=steps)[1]

    return run(problem.params)


def _grad_fn(problem: Problem):
    return lambda params, i: jax.grad(problem.loss)(params)


def _obj_fn(problem: Problem):
    return problem.loss


# --------------------------------------------------------------------------- SAM


def _sam(lib, *, opaque: bool, sync_period: int, reset_state: bool, adv: str):
    norm = normalize() if lib is jopt else optax.contrib.normalize()
    inner = lib.sgd(0.05) if adv == "sgd" else lib.adam(0.01, b1=0.8)
    make = sam if lib is jopt else optax.contrib.sam
    outer = lib.sgd(0.02, momentum=0.9)
    return make(outer, lib.chain(norm, inner), sync_period, reset_state, opaque)


SAM_CONFIGS = {
    "paper": dict(sync_period=2, reset_state=True, adv="sgd"),
    "adam_adversary_no_reset": dict(sync_period=3, reset_state=False, adv="adam"),
}


# Every configuration in both modes on Rosenbrock (cheap); on mlp3d each mode once (compiles dominate).
SAM_RUNS = [(c, o, "rosenbrock") for c in sorted(SAM_CONFIGS) for o in (False, True)]
SAM_RUNS += [("paper", False, "mlp3d"), ("adam_adversary_no_reset", True, "mlp3d")]


@pytest.mark.parametrize("config,opaque,problem", SAM_RUNS)
def test_sam_trajectory_equals_optax_float32(config, opaque, problem):
    prob = PROBLEMS[problem]()
    extra = {"grad_fn": _grad_fn} if opaque else {}
    ours = _run(_sam(jopt, opaque=opaque, **SAM_CONFIGS[config]), prob, **extra)
    ref = _run(_sam(optax, opaque=opaque, **SAM_CONFIGS[config]), prob, **extra)
    assert_trees_equal(ours, ref, err_msg=f"sam {config} opaque={opaque} on {problem}")


@pytest.mark.parametrize("opaque,problem", [(False, "mlp3d"), (True, "rosenbrock")])
def test_sam_trajectory_equals_optax_float64(opaque, problem):
    with jax.enable_x64(True):
        prob = _float64(PROBLEMS[problem]())
        extra = {"grad_fn": _grad_fn} if opaque else {}
        cfg = SAM_CONFIGS["adam_adversary_no_reset"]
        ours = _run(_sam(jopt, opaque=opaque, **cfg), prob, **extra)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
        assert_trees_equal(ours, _run(_sam(optax, opaque=opaque, **cfg), prob, **extra))


def test_sam_transparent_steps_alternate_and_state_matches_optax_layout():
    # One adversarial step climbs rho * g / |g| from theta, the next returns to theta and applies
    # the outer step with the gradient at the perturbed point.
    prob = quadratic()
    tx = sam(jopt.sgd(0.1), jopt.chain(normalize(), jopt.sgd(0.05)))
    update = jax.jit(tx.update)
    state = tx.init(prob.params)
    assert isinstance(state, SAMState) and int(state.steps_since_sync) == 0
    g0 = jax.grad(prob.loss)(prob.params)
    u, state = update(g0, state, prob.params)
    perturbed = jopt.apply_updates(prob.params, u)
    n0 = jopt.global_norm(g0)
    assert_trees_close(u, jax.tree.map(lambda g: 0.05 * g / n0, g0))
    g1 = jax.grad(prob.loss)(perturbed)
    u, state = update(g1, state, perturbed)
    assert_trees_close(
        jopt.apply_updates(perturbed, u), jax.tree.map(lambda p, g: p - 0.1 * g, prob.params, g1)
    )
    assert int(state.steps_since_sync) == 0
    assert_trees_equal(state.cache, prob.params)


def test_sam_opaque_inside_chain_forwards_grad_fn_and_needs_it():
    prob = rosenbrock()
    make = lambda: sam(jopt.sgd(0.001), jopt.chain(normalize(), jopt.sgd(0.05)), opaque_mode=True)
    assert "grad_fn" in make().extra_args and "grad_fn" in sam(jopt.sgd(0.1), jopt.sgd(0.1)).extra_args
    alone = _run(make(), prob, 20, grad_fn=_grad_fn)
    assert_trees_equal(_run(jopt.chain(make()), prob, 20, grad_fn=_grad_fn), alone)
    tx = make()
    with pytest.raises(ValueError, match="grad_fn"):
        tx.update(prob.params, tx.init(prob.params), prob.params)


def test_sam_forwards_the_members_extra_arguments():
    # A plateau-scheduled outer learning rate reads value=loss through sam.
    plateau = jopt.schedules.reduce_on_plateau(0.1, patience=1, factor=0.5)
    tx = sam(jopt.sgd(plateau), jopt.chain(normalize(), jopt.sgd(0.05)), sync_period=1)
    assert "value" in tx.extra_args
    p = jnp.ones(2)
    state = tx.init(p)
    for value in (1.0, 2.0, 3.0, 4.0):
        _, state = tx.update(jnp.ones(2), state, p, value=jnp.asarray(value))
    assert float(jopt.current_hyperparams(state)["opt_state/1/learning_rate"]) < 0.1


def test_sam_bad_sync_period():
    with pytest.raises(ValueError, match=r"sync_period must be in \[1, inf\]"):
        sam(jopt.sgd(0.1), jopt.sgd(0.1), sync_period=0)


# --------------------------------------------------------------------------- adaptive SAM


def _numpy_problem(name: str):
    """``(params, gradient)`` of the shared problem ``name`` as flat NumPy float64 code."""
    if name == "quadratic":
        a = np.array([1.0, 4.0, 9.0, 0.5])

        def grad(x):
            return np.concatenate([a * (x[:4] - 1.0), x[4:] + 2.0])

        return np.concatenate([np.zeros(4), np.ones(6)]), grad

    def grad(xy):
        x, y = xy
        return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x**2), 200.0 * (y - x**2)])

    return np.array([-1.0, 1.5]), grad


def _asam_numpy(name: str, outer_steps: int, lr: float, momentum: float, rho: float, eta: float, scaled):
    """ASAM with SGD+momentum, written from the paper: perturb by rho T^2 g / |T g|, T = |w| + eta.

    ``scaled`` marks the coordinates with that T (the authors': weights); the others have T = 1.
    """
    w, grad = _numpy_problem(name)
    m = np.zeros_like(w)
    perturbed, outer = [], []
    for _ in range(outer_steps):
        g = grad(w)
        t = np.where(scaled, np.abs(w) + eta, 1.0)
        w_adv = w + rho * t**2 * g / np.linalg.norm(t * g)
        m = grad(w_adv) + momentum * m
        w = w - lr * m
        perturbed.append(w_adv)
        outer.append(w)
    return np.stack(perturbed), np.stack(outer)


def _flat(tree) -> np.ndarray:
    leaves = jax.tree.leaves(tree)
    return np.concatenate([np.asarray(x).reshape(x.shape[0], -1) for x in leaves], axis=1)


ASAM = dict(lr=1e-3, momentum=0.9, rho=0.1, eta=0.01)


def _asam(mask=None, **kw):
    adversary = jopt.chain(normalize_adaptive(kw["eta"], mask), jopt.sgd(kw["rho"]))
    return sam(jopt.sgd(kw["lr"], momentum=kw["momentum"]), adversary)


@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_adaptive_sam_follows_numpy_transcription(problem):
    # On the quadratic only "x" is scaled by |w| + eta ("y" has T = 1, like the authors' biases).
    prob = {"quadratic": quadratic, "rosenbrock": rosenbrock}[problem]()
    mask = {"x": True, "y": False} if problem == "quadratic" else None
    scaled = np.arange(10) < 4 if problem == "quadratic" else np.ones(2, bool)
    with jax.enable_x64(True):
        ours = _flat(trajectory(_asam(mask, **ASAM), _float64(prob), STEPS))
    perturbed, outer = _asam_numpy(problem, STEPS // 2, **ASAM, scaled=scaled)
    np.testing.assert_allclose(ours[0::2], perturbed, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours[1::2], outer, rtol=1e-12, atol=1e-12)
    # float32: rounding only (relative 1e-7 per step, through 60 outer steps).
    ours32 = _flat(trajectory(_asam(mask, **ASAM), prob, STEPS))
    np.testing.assert_allclose(ours32[1::2], outer, rtol=2e-5, atol=2e-6)


def test_normalize_adaptive_eta_as_array_follows_number_path():
    prob = quadratic()
    kw = {**ASAM, "eta": jnp.float32(ASAM["eta"]), "rho": jnp.float32(ASAM["rho"])}
    assert_trees_close(
        trajectory(_asam(**kw), prob, 60), trajectory(_asam(**ASAM), prob, 60), rtol=1e-5, atol=1e-6
    )


def test_normalize_adaptive_bad_eta_and_params():
    with pytest.raises(ValueError, match=r"eta must be in \[0, inf\]"):
        normalize_adaptive(-0.1)
    tx = normalize_adaptive()
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# --------------------------------------------------------------------------- Sophia


def _sophia(lib, **kw):
    seed = kw.pop("seed", None)
    key = None if seed is None else jax.random.PRNGKey(seed)
    hutch = (
        hutchinson_estimator_diag_hessian if lib is jopt else optax.contrib.hutchinson_estimator_diag_hessian
    )
    make = sophia if lib is jopt else optax.contrib.sophia
    return make(hessian_diagonal_fn=hutch(key), **kw)


SOPHIA_CONFIGS = {
    "defaults": dict(learning_rate=0.01),
    "tuned": dict(
        learning_rate=0.02,
        b1=0.9,
        b2=0.95,
        eps=1e-7,
        weight_decay=1e-3,
        gamma=0.05,
        clip_threshold=0.5,
        update_interval=3,
        seed=7,
    ),  # fmt: skip
    "unclipped": dict(
        learning_rate=1e-3, gamma=1.0, clip_threshold=None, update_interval=1, eps=1e-3, seed=1
    ),
}


# Every configuration on Rosenbrock; the non-default one on mlp3d (each mlp3d compile is seconds).
SOPHIA_RUNS = [(c, "rosenbrock") for c in sorted(SOPHIA_CONFIGS)] + [("tuned", "mlp3d")]


@pytest.mark.parametrize("config,problem", SOPHIA_RUNS)
def test_sophia_trajectory_equals_optax_float32(config, problem):
    # The same seed draws the same Rademacher vectors as optax's estimator.
    prob = PROBLEMS[problem]()
    ours = _run(_sophia(jopt, **SOPHIA_CONFIGS[config]), prob, obj_fn=_obj_fn)
    ref = _run(_sophia(optax, **SOPHIA_CONFIGS[config]), prob, obj_fn=_obj_fn)
    assert_trees_equal(ours, ref, err_msg=f"sophia {config} on {problem}")


def test_sophia_trajectory_equals_optax_float64():
    with jax.enable_x64(True):
        prob = _float64(mlp3d())
        ours = _run(_sophia(jopt, **SOPHIA_CONFIGS["tuned"]), prob, obj_fn=_obj_fn)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
        assert_trees_equal(ours, _run(_sophia(optax, **SOPHIA_CONFIGS["tuned"]), prob, obj_fn=_obj_fn))


def test_sophia_array_hyperparameters_follow_number_path():
    # float32 arrays take the traced path (1 - float32(b) instead of float32(1 - b)): float32 rounding.
    prob = quadratic()
    kw = {k: v for k, v in SOPHIA_CONFIGS["tuned"].items() if k != "seed"}
    arrays = {k: jnp.asarray(v, jnp.int32 if isinstance(v, int) else jnp.float32) for k, v in kw.items()}
    ours = _run(_sophia(jopt, **arrays, seed=7), prob, 100, obj_fn=_obj_fn)
    assert_trees_close(
        ours, _run(_sophia(jopt, **kw, seed=7), prob, 100, obj_fn=_obj_fn), rtol=1e-4, atol=1e-6
    )


def test_sophia_state_and_hessian_refresh_cadence():
    prob = quadratic()
    tx = _sophia(jopt, learning_rate=0.01, update_interval=3)
    state = tx.init(prob.params)
    sophia_state = state[0]
    assert isinstance(sophia_state, SophiaState) and isinstance(
        sophia_state.hessian_fn_state, HutchinsonState
    )
    keys = []
    p = prob.params
    update = jax.jit(functools.partial(tx.update, obj_fn=prob.loss))
    for _ in range(7):
        _, state = update(jax.grad(prob.loss)(p), state, p)
        keys.append(np.asarray(state[0].hessian_fn_state.key))
    changed = [not np.array_equal(a, b) for a, b in zip(keys, keys[1:])]
    # estimates at counts 0, 3, 6: the key advances at those calls only
    assert changed == [False, False, True, False, False, True]


def test_hutchinson_matches_optax_draw_and_is_exact_for_diagonal_hessians():
    prob = rosenbrock()
    g = jax.grad(prob.loss)(prob.params)
    for seed in (None, jax.random.PRNGKey(3), jax.random.key(3)):
        ours, theirs = (
            hutchinson_estimator_diag_hessian(seed),
            optax.contrib.hutchinson_estimator_diag_hessian(seed),
        )
        a, sa = ours.update(g, ours.init(prob.params), prob.params, obj_fn=prob.loss)
        b, sb = theirs.update(g, theirs.init(prob.params), prob.params, obj_fn=prob.loss)
        assert_trees_equal(a, b)
        assert_trees_equal(jopt.tree.unwrap_random_key_data(sa.key), jopt.tree.unwrap_random_key_data(sb.key))
    q = quadratic()
    hutch = hutchinson_estimator_diag_hessian()
    est, _ = hutch.update(None, hutch.init(q.params), q.params, obj_fn=q.loss)  # u * (H u) = H_ii u_i^2
    assert_trees_equal(est, {"x": jnp.array([1.0, 4.0, 9.0, 0.5]), "y": jnp.ones((2, 3))})


def test_hutchinson_needs_params_and_obj_fn():
    tx = hutchinson_estimator_diag_hessian()
    p = jnp.ones(2)
    with pytest.raises(ValueError, match="obj_fn"):
        tx.update(p, tx.init(p), p)
    with pytest.raises(ValueError, match="params"):
        tx.update(p, tx.init(p), obj_fn=jnp.sum)
    assert "obj_fn" in sophia(0.1).extra_args


def test_sophia_verbose_prints_win_rate(capfd):
    tx = sophia(0.1, verbose=True, print_win_rate_every_n_steps=1)
    p = jnp.array([1.0, 2.0])
    tx.update(2 * p, tx.init(p), p, obj_fn=lambda x: jnp.sum(x**2))
    jax.effects_barrier()
    assert "Sophia optimizer win rate: 0.0" in capfd.readouterr().out


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"b1": 1.0}, r"b1 must be in \[0, 1\)"),
        ({"b2": -0.1}, r"b2 must be in \[0, 1\)"),
        ({"clip_threshold": 0.0}, r"clip_threshold must be in \(0, inf\]"),
        ({"update_interval": 0}, r"update_interval must be in \[1, inf\]"),
        ({"update_interval": 2.5}, "update_interval must be an integer"),
        ({"gamma": -1.0}, r"gamma must be in \[0, inf\]"),
    ],
)
def test_sophia_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sophia(0.1, **kwargs)


# --------------------------------------------------------------------------- generic cases


def _squared_gradients():
    """A curvature estimate without extra arguments: :math:`g \\odot g` (Gauss-Newton-like)."""
    return jopt.stateless(lambda updates, params: jax.tree.map(jnp.square, updates))


def _sam_case(learning_rate, rho):
    return sam(jopt.sgd(learning_rate, momentum=0.9), jopt.chain(normalize(), jopt.sgd(rho)))


def _asam_case(learning_rate, rho, eta):
    return sam(jopt.sgd(learning_rate, momentum=0.9), jopt.chain(normalize_adaptive(eta), jopt.sgd(rho)))


def _sophia_case(**kw):
    return sophia(hessian_diagonal_fn=_squared_gradients(), **kw)


def _sophia_reference(**kw):
    return optax.contrib.sophia(
        hessian_diagonal_fn=optax.stateless(lambda u, p: jax.tree.map(jnp.square, u)), **kw
    )


_SOPHIA_KW = dict(
    learning_rate=0.02, b1=0.9, b2=0.99, eps=1e-8, weight_decay=1e-4, gamma=0.05, clip_threshold=1.0,
    update_interval=10,
)  # fmt: skip

CASES: list[OptCase] = [
    # 500 generic steps are 250 outer steps; lr 1e-3 keeps Rosenbrock's first steps (|g| ~ 200) stable.
    OptCase("sam", _sam_case, {"learning_rate": 1e-3, "rho": 0.05}),
    OptCase("sam_adaptive", _asam_case, {"learning_rate": 1e-3, "rho": 0.1, "eta": 0.01}),
    OptCase("sophia_squared_gradients", _sophia_case, _SOPHIA_KW, _sophia_reference),
]


def test_sophia_squared_gradient_case_equals_optax():
    prob = quadratic()
    assert_trees_equal(
        trajectory(_sophia_case(**_SOPHIA_KW), prob), trajectory(_sophia_reference(**_SOPHIA_KW), prob)
    )


def test_vmapped_sophia_estimates_the_hessian_only_when_a_trial_is_due():
    """Trials with their own data (closed over by ``obj_fn``) and their own states (as in a sweep,
    so the step counts are batched) under vmap: the Hessian-vector product is a branch (no random
    draw outside a cond), and each trial equals its run alone."""
    tx = _sophia(jopt, learning_rate=0.05, update_interval=3, seed=1)
    x0 = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.ones(3)}
    targets = jnp.arange(4.0)[:, None] * jnp.ones((4, 3))  # one per trial
    states = jax.vmap(lambda _: tx.init(x0))(targets)

    def run(target, state, steps=7):
        loss = lambda p: jnp.sum((jnp.sum(p["w"], 0) + p["b"] - target) ** 2 + 0.1 * p["w"] ** 4)

        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p, obj_fn=loss)
            return (jopt.apply_updates(p, u), s), None

        return jax.lax.scan(step, (x0, state), None, length=steps)[0][0]

    jaxpr = jax.make_jaxpr(jax.vmap(run))(targets, states).jaxpr
    assert not _unconditional_primitives(jaxpr) & {"random_bits", "threefry2x32", "random_wrap"}
    batched = jax.jit(jax.vmap(run))(targets, states)
    for i in range(4):
        alone = jax.jit(run)(targets[i], jax.tree.map(lambda b, i=i: b[i], states))
        assert_trees_equal(jax.tree.map(lambda b, i=i: b[i], batched), alone)
