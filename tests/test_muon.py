"""Muon (jopt.optimizers.muon, jopt.transforms.muon, jopt.transforms.orthogonalize).

* optax.contrib.muon's trajectories exactly, float32 and float64, 100+ steps on
  ``mlp`` and ``mlp3d`` (its (2, 8, 8) stack through ``MuonDimensionNumbers(1, 2)``),
  with the options optax has (weight decay, consistent RMS, Nesterov off, adaptive,
  the four preconditionings, the Dion coefficient preset);
* Moonlight's rule (Liu et al., 2025) against a NumPy transcription of the paper;
* batching: equal-shape matrices run as one chain of batched products (counted in
  the jaxpr) and agree with the leaf-by-leaf path to float32 rounding;
* sharding: on 8 simulated devices (FSDP) the sharded update equals the
  single-device one and the compiled program moves matrices with all-to-all, never
  gathers them, and multiplies whole single matrices per device;
* hyperparameters as arrays / schedules / vmapped values, and ValueErrors.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
from jopt import distributed as jd
from jopt.optimizers.muon import muon, muon_labels
from jopt.transforms.muon import MuonState, scale_by_muon, scale_by_shape
from jopt.transforms.orthogonalize import (
    DEFAULT_NS_COEFFS,
    MuonDimensionNumbers,
    group_matrices,
    matrix_layout,
    orthogonalize_leaves,
    orthogonalize_via_newton_schulz,
)
from tests.reference import (
    OptCase,
    Problem,
    assert_trees_close,
    assert_trees_equal,
    mlp,
    mlp3d,
    quadratic,
    trajectory,
)

STEPS = 100
MUON_KWARGS = dict(
    learning_rate=0.02,
    beta=0.9,
    eps=1e-7,
    weight_decay=0.01,
    adam_b1=0.85,
    adam_b2=0.99,
    adam_eps_root=1e-9,
    adam_weight_decay=0.02,
    consistent_rms=0.2,
)

CASES: list[OptCase] = [
    OptCase(
        "muon",
        muon,
        MUON_KWARGS,
        optax.contrib.muon,
        # consistent_rms=0.2 makes the (2, 3) matrix step ~0.2 * lr per entry: a larger lr converges.
        converge_kwargs={**MUON_KWARGS, "learning_rate": 0.05},
    ),
    OptCase(
        "muon_batched",
        lambda **kw: muon(**kw, batch_matrices=True),
        MUON_KWARGS,
        lambda **kw: optax.contrib.muon(**kw),
        converge_kwargs={**MUON_KWARGS, "learning_rate": 0.05},
    ),
]


def _mlp3d_dims(dims_cls):
    """Muon for the three weight matrices (the stack as two (8, 8) matrices), AdamW for the biases."""
    return {
        "inp": {"w": dims_cls(), "b": None},
        "stack": {"w": dims_cls(1, 2), "b": None},
        "out": {"w": dims_cls(), "b": None},
    }


# (id, problem, extra kwargs for both libraries; MuonDimensionNumbers come from each library)
CONFIGS = [
    ("mlp3d-dims-decay-rms", mlp3d, dict(weight_decay=0.1, consistent_rms=0.2, adam_weight_decay=0.01)),
    (
        "mlp-aol-dion-adaptive-plain",
        mlp,
        dict(preconditioning="aol", ns_coeffs="dion", adaptive=True, nesterov=False),
    ),
    ("mlp3d-schatten", mlp3d, dict(preconditioning="schatten", beta=0.8)),
    ("mlp-spectral-adam", mlp, dict(preconditioning="spectral", adam_b1=0.8, adam_b2=0.99, eps=1e-6)),
]


def _pair(problem, extra):
    jk, ok = dict(extra), dict(extra)
    if problem is mlp3d:
        jk["muon_weight_dimension_numbers"] = _mlp3d_dims(MuonDimensionNumbers)
        ok["muon_weight_dimension_numbers"] = _mlp3d_dims(optax.contrib.MuonDimensionNumbers)
    return muon(0.02, **jk), optax.contrib.muon(0.02, **ok)


@pytest.mark.parametrize("name,problem,extra", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_float32_trajectory_equals_optax_exactly(name, problem, extra):
    ours, theirs = _pair(problem, extra)
    prob = problem()
    assert_trees_equal(trajectory(ours, prob, STEPS), trajectory(theirs, prob, STEPS), err_msg=name)


@pytest.mark.parametrize("problem", [mlp, mlp3d], ids=["mlp", "mlp3d"])
def test_float64_trajectory_equals_optax_exactly(problem):
    ours, theirs = _pair(problem, dict(weight_decay=0.05, consistent_rms=0.2))
    with jax.enable_x64(True):
        prob = problem()
        prob = prob._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), prob.params))
        ours_t, theirs_t = trajectory(ours, prob, STEPS), trajectory(theirs, prob, STEPS)
    assert jax.tree.leaves(ours_t)[0].dtype == jnp.float64
    assert_trees_equal(ours_t, theirs_t)


def test_array_and_schedule_hyperparameters_agree_with_numbers():
    """Every numeric hyperparameter as a float32 array (the rate as a schedule): float32 rounding.

    ``1 - beta`` is formed in float32 instead of double (~1e-7 relative per step). Muon
    normalises the momentum, so once the gradients are tiny (after ~60 steps here) such
    differences grow to O(1e-3); the comparison covers the first 50 steps (max 1e-6 seen).
    """
    prob = mlp3d()
    dims = _mlp3d_dims(MuonDimensionNumbers)
    numbers = dict(MUON_KWARGS, ns_coeffs=DEFAULT_NS_COEFFS)
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in numbers.items()}
    arrays["learning_rate"] = lambda count: jnp.asarray(0.02, jnp.float32) + 0.0 * count
    expected = trajectory(muon(**numbers, muon_weight_dimension_numbers=dims), prob, 50)
    actual = trajectory(muon(**arrays, muon_weight_dimension_numbers=dims), prob, 50)
    assert_trees_close(actual, expected, rtol=1e-5, atol=5e-6)
    state = muon(**arrays, muon_weight_dimension_numbers=dims).init(prob.params)
    logged = jopt.current_hyperparams(state)
    assert any(k.endswith("ns_coeffs") for k in logged) and any(k.endswith("consistent_rms") for k in logged)


def test_vmap_over_ns_coeffs_equals_loop():
    prob = quadratic()  # y is a (2, 3) matrix
    coeffs = jnp.asarray([DEFAULT_NS_COEFFS, (2.0, -1.5, 0.5)], jnp.float32)

    def final(c):
        opt = muon(0.1, ns_coeffs=c)
        updates, _ = opt.update(jax.grad(prob.loss)(prob.params), opt.init(prob.params), prob.params)
        return updates["y"]

    batched = jax.jit(jax.vmap(final))(coeffs)
    single = jax.jit(final)
    for i in range(2):
        np.testing.assert_allclose(batched[i], single(coeffs[i]), rtol=2e-5, atol=2e-6)
    assert not np.allclose(batched[0], batched[1])


# --------------------------------------------------------------------------- Moonlight (NumPy)


def _ns5_numpy(g, steps=5, coeffs=DEFAULT_NS_COEFFS):
    """Newton–Schulz as written in the Muon / Moonlight papers, in NumPy."""
    a, b, c = coeffs
    x = g / np.linalg.norm(g)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def _moonlight_numpy(params, grad, steps, lr, mu, wd):
    """Liu et al. (2025), Algorithm 1: M = mu M + G; O = NS(M) 0.2 sqrt(max(A, B)); W -= lr (O + wd W)."""
    w = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in w.items()}
    path = []
    for _ in range(steps):
        g = grad(w)
        for k in w:
            m[k] = mu * m[k] + g[k]
            o = _ns5_numpy(m[k]) * 0.2 * np.sqrt(max(w[k].shape))
            w[k] = w[k] - lr * (o + wd * w[k])
        path.append({k: v.copy() for k, v in w.items()})
    return path


def _matrix_regression():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 6))
    y = rng.normal(size=(16, 5))
    params = {"a": rng.normal(size=(6, 4)) / 3, "b": rng.normal(size=(4, 5)) / 3}

    def loss(p, xp=jnp):
        return 0.5 * xp.mean((xp.tanh(x @ p["a"]) @ p["b"] - y) ** 2)

    def grad_numpy(p):
        h = np.tanh(x @ p["a"])
        r = (h @ p["b"] - y) / r_size
        return {"a": x.T @ ((r @ p["b"].T) * (1 - h**2)), "b": h.T @ r}

    r_size = y.size
    return params, loss, grad_numpy


def test_moonlight_rule_matches_numpy_transcription():
    """Moonlight = muon(consistent_rms=0.2, nesterov=False, eps=0): (1 - mu) / (1 - mu^t) cancels."""
    params, loss, grad_numpy = _matrix_regression()
    lr, mu, wd, steps = 0.01, 0.9, 0.1, 60
    expected = _moonlight_numpy(params, grad_numpy, steps, lr, mu, wd)
    opt = muon(lr, beta=mu, eps=0.0, weight_decay=wd, consistent_rms=0.2, nesterov=False)
    for dtype, tol in ((jnp.float64, dict(rtol=1e-9, atol=1e-11)), (jnp.float32, dict(rtol=2e-4, atol=2e-5))):
        with jax.enable_x64(dtype == jnp.float64):
            prob = Problem("regression", {k: jnp.asarray(v, dtype) for k, v in params.items()}, loss)
            path = trajectory(opt, prob, steps)
        for k in params:
            np.testing.assert_allclose(path[k], np.stack([p[k] for p in expected]), **tol, err_msg=k)


def test_consistent_rms_gives_adamw_rms_for_orthogonal_updates():
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(24, 6)))  # 24 x 6, orthonormal columns
    tx = scale_by_shape(consistent_rms=0.2)
    u, _ = tx.update({"w": jnp.asarray(q, jnp.float32)}, tx.init(None))
    np.testing.assert_allclose(np.sqrt(np.mean(np.asarray(u["w"]) ** 2)), 0.2, rtol=1e-5)
    width = scale_by_shape()
    u, _ = width.update({"w": jnp.ones((4, 16)), "v": jnp.ones((16, 4))}, width.init(None))
    assert float(u["w"][0, 0]) == 2.0 and float(u["v"][0, 0]) == 1.0  # sqrt(max(1, fan_out / fan_in))


# --------------------------------------------------------------------------- orthogonalisation


def test_newton_schulz_orthogonalises_real_and_complex():
    real = jax.random.normal(jax.random.key(0), (4, 3))
    cplx = jax.random.normal(jax.random.key(1), (4, 3), jnp.complex64)
    for x in (real, cplx):
        q = orthogonalize_via_newton_schulz(x, (2.0, -1.5, 0.5), 25, eps=1e-12)
        np.testing.assert_allclose(q.conj().T @ q, np.eye(3), atol=1e-5)
        assert q.dtype == x.dtype


def test_dimension_numbers_layouts_match_optax():
    w = jax.random.normal(jax.random.key(2), (10, 12))
    conv = w.reshape(10, 3, 1, 4).transpose(3, 2, 0, 1)  # (4, 1, 10, 3): rows axis 2, columns (0, 3)
    dims, theirs_dims = MuonDimensionNumbers(2, (0, 3)), optax.contrib.MuonDimensionNumbers(2, (0, 3))
    ours = jax.jit(lambda x: orthogonalize_via_newton_schulz(x, DEFAULT_NS_COEFFS, dimension_numbers=dims))
    theirs = jax.jit(
        lambda x: optax.contrib._muon.orthogonalize_via_newton_schulz(
            x, jnp.asarray(DEFAULT_NS_COEFFS), dimension_numbers=theirs_dims
        )
    )
    np.testing.assert_array_equal(ours(conv), theirs(conv))
    plain = orthogonalize_via_newton_schulz(w, DEFAULT_NS_COEFFS)
    np.testing.assert_allclose(
        plain.reshape(10, 3, 1, 4).transpose(3, 2, 0, 1), ours(conv), rtol=1e-5, atol=1e-6
    )
    layout = matrix_layout((2, 3, 4, 5), MuonDimensionNumbers(-2, (0, -1)))
    assert layout.flat == (3, 4, 10) and layout.matrix_shape == (4, 10)


def test_partition_labels_and_state_layout():
    p = {"w1": {"a": jnp.ones((2, 3)), "b": jnp.ones((2, 3))}, "w2": jnp.ones((3,)), "s": jnp.ones((2, 3, 4))}
    dims = {"w1": {"a": MuonDimensionNumbers(), "b": None}, "w2": None, "s": MuonDimensionNumbers(1, 2)}
    assert muon_labels(dims, p) == {"w1": {"a": "muon", "b": "adam"}, "w2": "adam", "s": "muon"}
    opt = muon(1e-3, muon_weight_dimension_numbers=lambda params: dims)
    state = opt.init(p)
    muon_state = state[0]["muon"][0][0]  # optax's path: partition -> masked -> chain -> scale_by_muon
    assert isinstance(muon_state, MuonState)
    assert isinstance(muon_state.mu["w1"]["b"], jopt.MaskedNode) and muon_state.mu["s"].shape == (2, 3, 4)
    updates, _ = opt.update(p, state, p)
    assert jax.tree.map(jnp.shape, updates) == jax.tree.map(jnp.shape, p)
    # Another transform for the non-Muon leaves (jopt's extension).
    sgd = muon(1e-3, muon_weight_dimension_numbers=dims, fallback=jopt.sgd(0.5))
    updates, _ = sgd.update(p, sgd.init(p), p)
    np.testing.assert_allclose(updates["w2"], -0.5 * p["w2"])


# --------------------------------------------------------------------------- batching


def _many_matrices() -> Problem:
    """Four (8, 8) layers, an (8, 32) and a (32, 8) (one (8, 32) group): 2 groups for 6 matrices."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(32, 8)), jnp.float32)
    y = jnp.asarray(np.sin(rng.normal(size=(32, 8))), jnp.float32)
    params = {f"l{i}": jnp.asarray(rng.normal(size=(8, 8)) / 3, jnp.float32) for i in range(4)}
    params["wide"] = jnp.asarray(rng.normal(size=(8, 32)) / 3, jnp.float32)
    params["tall"] = jnp.asarray(rng.normal(size=(32, 8)) / 6, jnp.float32)

    def loss(p):
        h = x
        for i in range(4):
            h = jnp.tanh(h @ p[f"l{i}"])
        return jnp.mean((jnp.tanh(h @ p["wide"]) @ p["tall"] - y) ** 2)

    return Problem("many_matrices", params, loss)


def _dot_generals(opt, params) -> int:
    jaxpr = jax.make_jaxpr(lambda g, s: opt.update(g, s, params))(params, opt.init(params))
    return str(jaxpr).count("dot_general[")


def test_grouping_function():
    layouts = [matrix_layout(s) for s in [(8, 8), (8, 32), (32, 8), (8, 8)]]
    layouts.append(matrix_layout((2, 8, 8), MuonDimensionNumbers(1, 2)))
    groups = group_matrices(layouts, [jnp.float32, jnp.float32, jnp.float32, jnp.bfloat16, jnp.float32])
    assert [(g.matrix_shape, g.members, g.sizes) for g in groups] == [
        ((8, 8), (0, 3, 4), (1, 1, 2)),  # bf16 is iterated in float32: same group
        ((8, 32), (1, 2), (1, 1)),
    ]
    assert len(group_matrices(layouts, [jnp.float32] * 5, batch=False)) == 5


def test_batched_path_runs_one_chain_per_shape_and_matches_per_leaf():
    prob = _many_matrices()
    per_leaf, batched = muon(0.02), muon(0.02, batch_matrices=True)
    products = 3 * 5  # per Newton–Schulz chain: 3 products x 5 steps
    assert _dot_generals(per_leaf, prob.params) == 6 * products
    assert _dot_generals(batched, prob.params) == 2 * products
    expected = trajectory(optax.contrib.muon(0.02), prob, STEPS)
    assert_trees_equal(trajectory(per_leaf, prob, STEPS), expected)
    # Batched products may round differently (XLA's kernel depends on the batch size).
    assert_trees_close(trajectory(batched, prob, STEPS), expected, rtol=1e-5, atol=1e-6)


def test_orthogonalize_leaves_batched_equals_one_by_one():
    keys = jax.random.split(jax.random.key(4), 4)
    leaves = [jax.random.normal(k, s) for k, s in zip(keys, [(6, 10), (10, 6), (3, 6, 10), (4, 4)])]
    dims = [None, None, MuonDimensionNumbers(1, 2), None]

    def run(xs, batch):
        return orthogonalize_leaves(xs, dims, DEFAULT_NS_COEFFS, 5, "aol", batch=batch)

    together, alone = jax.jit(lambda xs: (run(xs, True), run(xs, False)))(leaves)
    assert_trees_close(together, alone, rtol=1e-5, atol=1e-6)
    # Muon's coefficients leave every singular value of every (6, 10) matrix of the stack near 1.
    singular = np.linalg.svd(np.asarray(together[2]), compute_uv=False)
    assert singular.shape == (3, 6) and 0.6 < singular.min() and singular.max() < 1.3


# --------------------------------------------------------------------------- sharding

SHARDED_SPECS = {"a": P("fsdp", None), "b": P("fsdp", None), "c": P(None, "fsdp"), "bias": P("fsdp")}
COLLECTIVE = re.compile(r"\b(all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter)\(")
DOT_SHAPE = re.compile(r"= f32\[([\d,]*)\]\{[^}]*\} dot\(")


def _sharded_host():
    rng = np.random.default_rng(0)
    shapes = {"a": (32, 16), "b": (32, 16), "c": (16, 32), "bias": (16,)}  # three (16, 32) matrices
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    grads = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
    return params, grads


def _three_steps(opt, params, grads, state):
    step = jax.jit(opt.update)
    for _ in range(3):
        updates, state = step(grads, state, params)
        params = jopt.apply_updates(params, updates)
    return params, state, updates


def _collectives(hlo: str) -> tuple[set[str], set[tuple[int, ...]]]:
    dots = {tuple(int(d) for d in m.split(",")) for m in DOT_SHAPE.findall(hlo)}
    return set(COLLECTIVE.findall(hlo)), dots


def test_sharded_update_equals_unsharded_and_orthogonalises_each_matrix_on_one_device():
    host, grads = _sharded_host()
    ref_params, ref_state, _ = _three_steps(muon(0.02), host, grads, muon(0.02).init(host))
    mesh = jd.data_mesh(8, "fsdp", axis_type=AxisType.Explicit)
    shardings = {k: NamedSharding(mesh, s) for k, s in SHARDED_SPECS.items()}
    params, g = jax.device_put(host, shardings), jax.device_put(grads, shardings)
    hlos = {}
    for axes in ("auto", None):
        opt = muon(0.02, ns_mesh_axes=axes)
        with jax.set_mesh(mesh):
            state = jd.init_sharded(opt, params)
            new_params, new_state, updates = _three_steps(opt, params, g, state)
            hlos[axes] = jax.jit(opt.update).lower(g, state, params).compile().as_text()
        assert_trees_close(new_params, ref_params, rtol=1e-5, atol=1e-6)
        assert_trees_close(new_state, ref_state, rtol=1e-5, atol=1e-6)
        assert {k: v.sharding.spec for k, v in updates.items()} == SHARDED_SPECS
    collectives, dots = _collectives(hlos["auto"])
    # The stack of three matrices (padded to 8) is resharded with all-to-all, never gathered,
    # and each device multiplies one whole (16, 32) matrix: Gram (16, 16) and (16, 32) products.
    assert "all-to-all" in collectives and not collectives & {"all-gather", "collective-permute"}
    assert dots == {(16, 16), (16, 32)}
    # Without the strategy XLA keeps the matrices split and multiplies slices (the check can fail).
    assert _collectives(hlos[None])[1] != dots


def test_sharded_step_on_auto_mesh_keeps_layout_without_gathering():
    host, grads = _sharded_host()
    mesh = jd.data_mesh(8, "fsdp", axis_type=AxisType.Auto)
    shardings = {k: NamedSharding(mesh, s) for k, s in SHARDED_SPECS.items()}
    params, g = jax.device_put(host, shardings), jax.device_put(grads, shardings)
    opt = muon(0.02)
    with jax.set_mesh(mesh):
        state = jd.init_sharded(opt, params)
        state_shardings = jax.tree.map(lambda x: x.sharding, state)

        def train_step(p, s, g):
            u, s = opt.update(g, s, p)
            return jopt.apply_updates(p, u), s

        step = jax.jit(train_step, out_shardings=(shardings, state_shardings))
        new_params, _ = step(params, state, g)
        collectives, dots = _collectives(step.lower(params, state, g).compile().as_text())
    ref, _ = jax.jit(train_step)(host, opt.init(host), grads)
    assert_trees_close(new_params, ref, rtol=1e-5, atol=1e-6)
    assert {k: v.sharding.spec for k, v in new_params.items()} == SHARDED_SPECS
    assert "all-to-all" in collectives and "all-gather" not in collectives
    assert dots == {(16, 16), (16, 32)}


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(beta=1.5), r"beta must be in \[0, 1\)"),
        (dict(eps=-1.0), r"eps must be in \[0, inf\]"),
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(adam_b2=1.0), "b2"),
        (dict(consistent_rms=-0.2), "consistent_rms"),
        (dict(ns_steps=-1), "ns_steps"),
        (dict(ns_steps=2.5), "ns_steps"),
        (dict(preconditioning="newton"), "preconditioning"),
        (dict(ns_coeffs=(1.0, 2.0)), r"shape \(3,\) or \(n, 3\)"),
        (dict(ns_coeffs="dion", ns_steps=3), "more than ns_steps"),
        (dict(ns_coeffs="polar"), "preset"),
    ],
)
def test_bad_values_raise_value_error(kwargs, match):
    kwargs = {"learning_rate": 0.02, **kwargs}
    with pytest.raises(ValueError, match=match):
        muon(**kwargs)


def test_bad_shapes_raise_value_error():
    opt = muon(0.1, muon_weight_dimension_numbers={"v": MuonDimensionNumbers()})
    with pytest.raises(ValueError, match="rank >= 2"):
        opt.update({"v": jnp.ones(3)}, opt.init({"v": jnp.ones(3)}), {"v": jnp.ones(3)})
    with pytest.raises(ValueError, match="distinct"):
        matrix_layout((2, 3), MuonDimensionNumbers(0, 0))
    g = {"w": jnp.ones((8, 8))}
    with pytest.raises(ValueError, match="no mesh"):
        scale_by_muon(ns_mesh_axes="fsdp").update(g, scale_by_muon().init(g))
    with jax.set_mesh(jd.data_mesh(8, "fsdp", axis_type=AxisType.Auto)):
        with pytest.raises(ValueError, match="not .* axes of the mesh"):
            scale_by_muon(ns_mesh_axes="model").update(g, scale_by_muon().init(g))
    tx = scale_by_muon(weight_dimension_numbers={"w": None})
    with pytest.raises(ValueError, match="weight_dimension_numbers is None"):
        tx.update({"w": jnp.ones((2, 2))}, tx.init({"w": jnp.ones((2, 2))}))
