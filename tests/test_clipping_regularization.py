"""Clipping and explicit regularizers, against optax or NumPy transcriptions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import Problem, assert_trees_close, mlp, rosenbrock, trajectory

STEPS = 120


def _adam_with(pre_jopt, pre_optax, lr=0.01):
    ours = jopt.chain(pre_jopt, optax.scale_by_adam(), jopt.scale_by_learning_rate(lr))
    ref = optax.chain(pre_optax, optax.scale_by_adam(), optax.scale(-lr))
    return ours, ref


CLIP_CASES = [
    ("clip", jopt.clip, optax.clip, 0.05),
    ("global_norm", jopt.clip_by_global_norm, optax.clip_by_global_norm, 0.3),
    ("block_rms", jopt.clip_by_block_rms, optax.clip_by_block_rms, 0.05),
]


@pytest.mark.parametrize("name,ours_fn,ref_fn,threshold", CLIP_CASES, ids=[c[0] for c in CLIP_CASES])
@pytest.mark.parametrize("problem", [mlp, rosenbrock], ids=["mlp", "rosenbrock"])
def test_clipping_matches_optax(name, ours_fn, ref_fn, threshold, problem):
    prob = problem()
    # SGD makes clipping visible directly in the step; then the same clip before Adam.
    ours = trajectory(jopt.chain(ours_fn(threshold), jopt.scale_by_learning_rate(1e-3)), prob, STEPS)
    ref = trajectory(optax.chain(ref_fn(threshold), optax.sgd(1e-3)), prob, STEPS)
    unclipped = trajectory(optax.sgd(1e-3), prob, STEPS)
    assert_trees_close(ours, ref, rtol=1e-5, atol=1e-6)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(unclipped), strict=True)
    )
    assert diff > 1e-3, "threshold too loose: clipping never triggered"
    if prob.name == "rosenbrock":
        a_ours, a_ref = _adam_with(ours_fn(threshold), ref_fn(threshold))
        assert_trees_close(
            trajectory(a_ours, prob, STEPS), trajectory(a_ref, prob, STEPS), rtol=1e-4, atol=1e-5
        )


def _conv_problem() -> Problem:
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(8, 6, 6, 2)), jnp.float32)
    params = {
        "conv": jnp.asarray(rng.normal(size=(3, 3, 2, 4)) * 0.3, jnp.float32),
        "dense": jnp.asarray(rng.normal(size=(4, 3)) * 0.3, jnp.float32),
        "bias": jnp.zeros(3, jnp.float32),
    }

    def loss(p):
        h = jax.lax.conv_general_dilated(
            x, p["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jnp.tanh(h).mean(axis=(1, 2)) @ p["dense"] + p["bias"]
        return jnp.sum((h - 1.0) ** 2)

    return Problem("conv", params, loss)


@pytest.mark.parametrize("axis", [None, 0])
def test_adaptive_grad_clip_matches_optax(axis):
    prob = _conv_problem() if axis is None else mlp()
    ours = trajectory(
        jopt.chain(jopt.adaptive_grad_clip(0.02, axis=axis), jopt.scale_by_learning_rate(0.1)), prob
    )
    ref = trajectory(optax.chain(optax.adaptive_grad_clip(0.02, axis=axis), optax.sgd(0.1)), prob)
    plain = trajectory(optax.sgd(0.1), prob)
    assert_trees_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(ref)[0], jax.tree.leaves(plain)[0], atol=1e-4)


def _np_clip_by_leaf_norm(g, c):
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return g if norm <= c else g * (c / norm)


def test_clip_by_leaf_norm_against_numpy_sgd():
    prob = mlp()
    lr, c, steps = 0.1, 0.05, 100
    ours = trajectory(jopt.chain(jopt.clip_by_leaf_norm(c), jopt.scale_by_learning_rate(lr)), prob, steps)
    grad = jax.jit(jax.grad(prob.loss))
    p = jax.tree.map(np.asarray, prob.params)
    clipped_any = False
    for _ in range(steps):
        g = jax.tree.map(np.asarray, grad(jax.tree.map(jnp.asarray, p)))
        cg = jax.tree.map(lambda x: _np_clip_by_leaf_norm(x, c), g)
        clipped_any |= any(
            not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(cg), strict=True)
        )
        p = jax.tree.map(lambda x, u: (x - lr * u).astype(np.float32), p, cg)
    assert clipped_any
    assert_trees_close(jax.tree.map(lambda x: x[-1], ours), p, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [jopt.clip, jopt.clip_by_global_norm, jopt.clip_by_leaf_norm, jopt.clip_by_block_rms],
    ids=["clip", "global_norm", "leaf_norm", "block_rms"],
)
def test_thresholds_vmap_equal_loop_and_compile_once(make):
    g = {"a": jnp.array([3.0, -4.0, 0.5]), "b": jnp.array([[1.0, 2.0], [-2.0, 0.1]])}
    traces = []

    @jax.jit
    def step(threshold):
        traces.append(1)
        tx = make(threshold)
        u, s = tx.update(g, tx.init(g), g)
        return u, jopt.current_hyperparams(s)

    values = [0.0, 0.3, 1.5, 100.0]
    looped = [step(jnp.float32(v)) for v in values]
    assert len(traces) == 1
    batched, hp = jax.vmap(step)(jnp.asarray(values, jnp.float32))
    for i, (u, _) in enumerate(looped):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), u)
    np.testing.assert_allclose(list(hp.values())[0], values)
    zero, _ = looped[0]
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(zero)), "threshold 0 must zero the updates"
    inf_u, _ = jax.jit(lambda: make(jnp.inf).update(g, make(jnp.inf).init(g)))()
    assert_trees_close(inf_u, g)


def test_clip_threshold_schedule_is_resolved_per_step():
    tx = jopt.clip_by_global_norm(lambda t: 1.0 + t)
    g = {"w": jnp.array([30.0, 40.0])}
    s = tx.init(g)
    norms = []
    for _ in range(3):
        u, s = tx.update(g, s)
        norms.append(float(jnp.linalg.norm(u["w"])))
    np.testing.assert_allclose(norms, [1.0, 2.0, 3.0], rtol=1e-6)
    assert float(jopt.current_hyperparams(s)["max_norm"]) == 3.0


def test_clipping_keeps_dtype_and_validates():
    g = {"w": jnp.array([3.0, -4.0], jnp.bfloat16)}
    for tx in [
        jopt.clip(1.0),
        jopt.clip_by_global_norm(1.0),
        jopt.clip_by_leaf_norm(1.0),
        jopt.clip_by_block_rms(1.0),
    ]:
        u, _ = tx.update(g, tx.init(g))
        assert u["w"].dtype == jnp.bfloat16
    agc = jopt.adaptive_grad_clip(0.1)
    u, _ = agc.update(g, agc.init(g), g)
    assert u["w"].dtype == jnp.bfloat16
    for make, name in [
        (jopt.clip, "max_delta"),
        (jopt.clip_by_global_norm, "max_norm"),
        (jopt.clip_by_leaf_norm, "max_norm"),
        (jopt.clip_by_block_rms, "threshold"),
        (jopt.adaptive_grad_clip, "clipping"),
    ]:
        with pytest.raises(ValueError, match=name):
            make(-1.0)
    with pytest.raises(ValueError, match="eps"):
        jopt.adaptive_grad_clip(0.1, eps=-1.0)
    with pytest.raises(ValueError, match="needs params"):
        agc.update(g, agc.init(g))


# --------------------------------------------------------------------------- regularization


def test_coupled_l2_is_adam_plus_l2_and_differs_from_adamw():
    prob = mlp()
    lr, l2 = 0.02, 0.05
    ours = trajectory(
        jopt.chain(jopt.add_l2_penalty(l2), optax.scale_by_adam(), jopt.scale_by_learning_rate(lr)), prob
    )
    # Adam on the loss plus 0.5 * l2 * |theta|^2, written independently as a modified loss.
    penalized = Problem(
        "pen", prob.params, lambda p: prob.loss(p) + 0.5 * l2 * optax.tree.norm(p, squared=True)
    )
    ref = trajectory(optax.adam(lr), penalized)
    adamw = trajectory(optax.adamw(lr, weight_decay=l2), prob)
    assert_trees_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(jax.tree.leaves(ours)[-1][-1], jax.tree.leaves(adamw)[-1][-1], atol=1e-3)


def test_l2_penalty_mask_and_schedule():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = jopt.add_l2_penalty(lambda t: 0.5 * (t + 1), mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
    s = tx.init(params)
    u, s = tx.update(zeros, s, params)
    u, s = tx.update(zeros, s, params)
    np.testing.assert_allclose(u["w"], 1.0)
    np.testing.assert_allclose(u["b"], 0.0)
    elementwise = jopt.add_l2_penalty(2.0, mask={"w": jnp.array([[True, False], [False, True]]), "b": False})
    u, _ = elementwise.update(zeros, elementwise.init(params), params)
    np.testing.assert_allclose(u["w"], [[2.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="l2"):
        jopt.add_l2_penalty(-0.1)


def _lasso():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 12)).astype(np.float32)
    x_true = np.zeros(12, np.float32)
    x_true[:3] = [2.0, -1.5, 1.0]
    b = (a @ x_true + 0.05 * rng.normal(size=40)).astype(np.float32)
    params = {
        "x": jnp.asarray(rng.normal(size=12) * 0.5, jnp.float32),
        "c": jnp.asarray([0.3, -0.2], jnp.float32),
    }

    def loss(p):
        return 0.5 * jnp.mean((jnp.asarray(a) @ p["x"] - jnp.asarray(b)) ** 2) + 0.5 * jnp.sum(p["c"] ** 2)

    def np_grad(p):
        return {"x": a.T @ (a @ p["x"] - b) / a.shape[0], "c": p["c"]}

    return Problem("lasso", params, loss), np_grad


def test_l1_subgradient_against_numpy():
    prob, np_grad = _lasso()
    lr, l1, steps = 0.05, 0.1, 120
    ours = trajectory(jopt.chain(jopt.add_l1_subgradient(l1), jopt.scale_by_learning_rate(lr)), prob, steps)
    p = {k: np.asarray(v) for k, v in prob.params.items()}
    for _ in range(steps):
        g = np_grad(p)
        p = {k: (p[k] - lr * (g[k] + l1 * np.sign(p[k]))).astype(np.float32) for k in p}
    assert_trees_close(jax.tree.map(lambda x: x[-1], ours), p, rtol=1e-4, atol=1e-5)


def _np_soft_threshold(x, t):
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


@pytest.mark.parametrize("with_mask", [False, True])
def test_proximal_l1_drives_small_weights_to_exact_zero(with_mask):
    prob, np_grad = _lasso()
    lr, l1, steps = 0.05, 0.1, 200
    mask = {"x": True, "c": False} if with_mask else None
    tx = jopt.chain(jopt.scale_by_learning_rate(lr), jopt.proximal_l1(l1, lr, mask=mask))
    ours = jax.tree.map(lambda x: np.asarray(x[-1]), trajectory(tx, prob, steps, apply=jopt.apply_updates))
    p = {k: np.asarray(v) for k, v in prob.params.items()}
    for _ in range(steps):  # ISTA: gradient step, then soft-threshold.
        g = np_grad(p)
        p = {k: (p[k] - lr * g[k]).astype(np.float32) for k in p}
        p = {
            k: (_np_soft_threshold(v, lr * l1) if (mask is None or mask[k]) else v).astype(np.float32)
            for k, v in p.items()
        }
    assert_trees_close(ours, p, rtol=1e-4, atol=1e-5)
    # The 9 irrelevant features are exactly zero, the 3 relevant ones are not.
    np.testing.assert_array_equal(ours["x"] == 0, p["x"] == 0)
    assert np.count_nonzero(ours["x"][3:]) == 0 and np.all(ours["x"][:3] != 0)
    if with_mask:
        assert np.all(ours["c"] != 0)
    # The subgradient method never reaches exact zeros on the same problem.
    sub = trajectory(jopt.chain(jopt.add_l1_subgradient(l1), jopt.scale_by_learning_rate(lr)), prob, steps)
    assert np.count_nonzero(np.asarray(sub["x"][-1]) == 0) == 0


def test_proximal_l1_vmaps_over_strength():
    p = {"w": jnp.array([0.05, -0.3, 1.0])}

    def final(l1):
        tx = jopt.chain(jopt.scale_by_learning_rate(0.1), jopt.proximal_l1(l1, 0.1))
        u, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
        return jopt.apply_updates(p, u)["w"]

    l1s = jnp.array([0.0, 1.0, 5.0])
    out = jax.vmap(final)(l1s)
    expected = np.stack([_np_soft_threshold(np.asarray(p["w"]), 0.1 * float(v)) for v in l1s])
    np.testing.assert_allclose(out, expected, atol=1e-7)
    with pytest.raises(ValueError, match="learning_rate"):
        jopt.proximal_l1(0.1, -1.0)
