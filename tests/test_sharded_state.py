"""Sharded (FSDP / ZeRO-style) optimizer state on an explicit-axis mesh, for every optimizer.

Parameters are sharded over an 8-device ``fsdp`` axis. For each optimizer:

* ``init_sharded`` from ``jax.ShapeDtypeStruct`` parameters gives every state
  leaf that mirrors a parameter that parameter's sharding; scalars are
  replicated; the result equals ``state_shardings`` and ``jit(init)`` on
  concrete parameters;
* a jitted ``update`` keeps every state leaf's sharding;
* three sharded steps equal three steps on one device (rtol 1e-5, atol 1e-6).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jopt
from jopt import distributed as jd
from tests.reference import assert_trees_close
from tests.test_optimizers_generic import CASES as GENERIC_CASES

# Explicit list (a missing optimizer is a failure, not a skip): name -> kwargs.
OPTIMIZERS: dict[str, dict] = {
    "sgd": {"learning_rate": 0.1, "momentum": 0.9},
    "heavy_ball_momentum": {"learning_rate": 0.1},
    "rmsprop": {"learning_rate": 1e-2, "centered": True, "momentum": 0.9},
    "adagrad": {"learning_rate": 0.1},
    "adadelta": {"learning_rate": 1.0},
    "adam": {"learning_rate": 1e-2},
    "adamw": {"learning_rate": 1e-2, "weight_decay": 0.1},
    "nadam": {"learning_rate": 1e-2},
    "nadamw": {"learning_rate": 1e-2},
    "radam": {"learning_rate": 1e-2},
    "adabelief": {"learning_rate": 1e-2},
    "yogi": {"learning_rate": 1e-2},
    "amsgrad": {"learning_rate": 1e-2},
    "adamax": {"learning_rate": 1e-2},
    "lion": {"learning_rate": 1e-3},
    "sign_sgd": {"learning_rate": 1e-3},
    "lamb": {"learning_rate": 1e-2, "weight_decay": 0.01},
    "lars": {"learning_rate": 0.1},
    "novograd": {"learning_rate": 1e-2},
    "adafactor": {"learning_rate": 1e-2, "min_dim_size_to_factor": 8, "momentum": 0.9},
    # the optimizers of 2023-2026 whose state mirrors the parameters
    "schedule_free_adamw": {"learning_rate": 1e-2},
    "prodigy": {"learning_rate": 1.0},
    "dadapt_adamw": {"learning_rate": 1.0},
    "ademamix": {"learning_rate": 1e-2},
    "simplified_ademamix": {"learning_rate": 1e-3},
    "adopt": {"learning_rate": 1e-2},
    "mars": {"learning_rate": 1e-2},
    "cautious_adamw": {"learning_rate": 1e-2},
    "madgrad": {"learning_rate": 1e-2},
    "cocob": {},
    # Kronecker-factored preconditioners: moments mirror the parameters, factors do not
    # (an eps well above rounding: Adam in a rotated basis of rank-deficient factors otherwise
    # normalises the rounding noise of the null space's components to steps of size one)
    "soap": {"learning_rate": 1e-2, "precondition_frequency": 2, "eps": 1e-3},
    "shampoo": {"learning_rate": 1e-2, "precondition_frequency": 2},
    "kron": {"learning_rate": 1e-2},
}
# The other optimizers of the generic tests (wrappers and estimators built by their test modules),
# with the generic tests' hyperparameters; Muon's sharded strategy has its own tests (test_muon.py).
GENERIC = {c.name: c for c in GENERIC_CASES if c.name not in OPTIMIZERS and not c.name.startswith("muon")}
STATELESS = {"sign_sgd"}  # only scalar state (counts, learning rate)
REDUCES_AT_INIT = {"mechanize"}  # init sums over the parameters: the sharded sum rounds otherwise
# init keeps a copy of the initial parameters (x0 / z): init_sharded needs concrete parameters
READS_PARAMS = {
    *("schedule_free_adamw", "schedule_free_sgd", "prodigy", "madgrad", "cocob", "mechanize"),
    *("dadapt_sgd", "dog", "dowg", "sam", "sam_adaptive"),
}
SPECS = {"w1": P("fsdp", None), "w2": P(None, "fsdp"), "b": P("fsdp"), "s": P()}
TOL = {"rtol": 1e-5, "atol": 1e-6}
# Shampoo's inverse roots and SOAP's eigenbases of rank-deficient factors (3 gradients) are not
# unique where the factors' eigenvalues coincide: compared through the parameters they produce.
# Shampoo's preconditioned steps also amplify the gradients' rounding differences: rtol 1e-4.
NOT_UNIQUE = {"shampoo": "roots", "soap": "bases"}
STATE_TOL = {"shampoo": {"rtol": 1e-4, "atol": 1e-5}}


def _mesh(axis_type=AxisType.Explicit):
    return jd.data_mesh(8, "fsdp", axis_type=axis_type)


def _host_params():
    rng = np.random.default_rng(0)
    return {
        "w1": jnp.asarray(rng.normal(size=(16, 8)) / 4, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(8, 16)) / 3, jnp.float32),
        "b": jnp.asarray(rng.normal(size=(16,)), jnp.float32),
        "s": jnp.asarray(0.5, jnp.float32),
    }


X = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.float32)


def _loss(params, x):
    # FSDP: gather each weight for the computation (its gradient is reduce-scattered back).
    full = {k: jax.reshard(v, P()) if v.ndim else v for k, v in params.items()}
    h = jnp.tanh(x @ full["w1"]) @ full["w2"] + full["b"]
    return jnp.mean((h - 1.0) ** 2) + full["s"] ** 2


def _single_loss(params, x):
    h = jnp.tanh(x @ params["w1"]) @ params["w2"] + params["b"]
    return jnp.mean((h - 1.0) ** 2) + params["s"] ** 2


def _run(opt, params, state, loss, x, steps=3):
    @jax.jit
    def step(p, s, x):
        g = jax.grad(loss)(p, x)
        u, s = opt.update(g, s, p)
        return jopt.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state, x)
    return params, state


def _mirrors(state, params):
    """(state subtree leaf, param leaf) pairs for every subtree with the parameters' structure."""
    pdef = jax.tree.structure(params)
    pleaves = jax.tree.leaves(params)
    subtrees = jax.tree.leaves(state, is_leaf=lambda n: jax.tree.structure(n) == pdef)
    return [
        (s, p)
        for sub in subtrees
        if jax.tree.structure(sub) == pdef
        for s, p in zip(jax.tree.leaves(sub), pleaves, strict=True)
    ]


def _spec(x):
    return x.sharding.spec if isinstance(x.sharding, NamedSharding) else None


def _normalise(spec):
    return tuple(spec) + (None,) * 8  # P("a") and P("a", None) shard identically


def _check_layout(state, params, mesh, *, per_param=True):
    mirrored = _mirrors(state, params)
    assert bool(mirrored) == per_param, "per-parameter state expected iff the optimizer has moments"
    matched = not per_param
    for s, p in mirrored:
        if s.shape == p.shape:
            assert _normalise(_spec(s))[: s.ndim] == _normalise(_spec(p))[: p.ndim], (s.shape, _spec(s))
            matched += p.ndim > 0
    assert matched, "no state leaf mirrors a parameter"
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh == mesh
        if leaf.ndim == 0:
            assert leaf.sharding.is_fully_replicated, leaf.sharding


def _unique_part(state, name):
    """The state's leaves, less those under a field named ``NOT_UNIQUE[name]``."""
    leaves = jax.tree_util.tree_leaves_with_path(state)
    skip = NOT_UNIQUE.get(name)
    return [leaf for path, leaf in leaves if skip is None or skip not in jax.tree_util.keystr(path)]


def _spec_tree(state):
    return jax.tree.map(lambda x: _normalise(_spec(x))[: x.ndim], state)


def _optimizer(name):
    if name in GENERIC:
        return GENERIC[name].make(**GENERIC[name].kwargs)
    return getattr(jopt, name)(**OPTIMIZERS[name])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS) + sorted(GENERIC))
def test_state_sharded_like_params_after_init_and_update(name):
    mesh = _mesh()
    opt = _optimizer(name)
    host = _host_params()
    shardings = {k: NamedSharding(mesh, SPECS[k]) for k in host}
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k]) for k, v in host.items()}
    params = jax.device_put(host, shardings)

    if name in READS_PARAMS:
        with pytest.raises(ValueError, match="reads parameter values"):
            jd.init_sharded(opt, abstract)
        state = jd.init_sharded(opt, params)
    else:
        state = jd.init_sharded(opt, abstract)
        expected = jd.state_shardings(opt, abstract)
        assert jax.tree.structure(expected) == jax.tree.structure(state)
        assert jax.tree.map(lambda s: s.spec, expected) == jax.tree.map(lambda x: x.sharding.spec, state)
    _check_layout(state, params, mesh, per_param=name not in STATELESS)
    # Same values as a plain init on one device (bit for bit, but for a sum over sharded parameters).
    assert_trees_close(state, opt.init(host), **(TOL if name in REDUCES_AT_INIT else {"rtol": 0, "atol": 0}))
    # Plain jit(init) on sharded params (inside the mesh context that an explicit-axis mesh needs
    # when outputs do not depend on inputs) gives mirrored moments the parameter's sharding.
    with jax.set_mesh(mesh):
        plain = jax.jit(opt.init)(params)
    for s, p in _mirrors(plain, params):
        if s.shape == p.shape and p.ndim:
            assert s.sharding.is_equivalent_to(p.sharding, p.ndim)

    init_specs = _spec_tree(state)
    with jax.set_mesh(mesh):
        new_params, new_state = _run(opt, params, state, _loss, jax.device_put(X, jd.replicated(mesh)))
    _check_layout(new_state, new_params, mesh, per_param=name not in STATELESS)
    assert _spec_tree(new_state) == init_specs
    assert {k: _spec(v) for k, v in new_params.items()} == SPECS

    ref_params, ref_state = _run(opt, host, opt.init(host), _single_loss, X)
    assert_trees_close(new_params, ref_params, **TOL)
    assert_trees_close(
        _unique_part(new_state, name), _unique_part(ref_state, name), **STATE_TOL.get(name, TOL)
    )


def test_adafactor_factored_statistics_shard_along_kept_axis():
    mesh = _mesh()
    opt = jopt.adafactor(1e-2, min_dim_size_to_factor=8)
    abstract = {
        "w1": jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=NamedSharding(mesh, P("fsdp", None))),
        "w2": jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=NamedSharding(mesh, P(None, "fsdp"))),
    }
    factored = jd.init_sharded(opt, abstract)[0]
    # Row statistics reduce the largest axis (the sharded one here): replicated, shape (8,).
    # Column statistics keep the largest (sharded) axis: shape (16,), sharded over fsdp.
    for name in ("w1", "w2"):
        assert factored.v_row[name].shape == (8,) and factored.v_row[name].sharding.is_fully_replicated
        assert factored.v_col[name].shape == (16,) and factored.v_col[name].sharding.spec == P("fsdp")
    # Each device holds 1/8 of the sharded statistic.
    assert factored.v_col["w1"].addressable_shards[0].data.shape == (2,)


@pytest.mark.parametrize("name", ["adam", "adafactor"])
def test_state_shardings_on_auto_mesh(name):
    mesh = _mesh(AxisType.Auto)
    opt = getattr(jopt, name)(**OPTIMIZERS[name])
    host = _host_params()
    params = jax.device_put(host, {k: NamedSharding(mesh, SPECS[k]) for k in host})
    state = jd.init_sharded(opt, params)
    _check_layout(state, params, mesh)
    new_params, new_state = _run(opt, params, state, _single_loss, X)
    ref_params, _ = _run(opt, host, opt.init(host), _single_loss, X)
    assert_trees_close(new_params, ref_params, **TOL)
    for s, p in _mirrors(new_state, new_params):
        if s.shape == p.shape and p.ndim:
            assert s.sharding.is_equivalent_to(p.sharding, p.ndim)


def test_init_sharded_rejects_abstract_params_when_init_reads_values():
    mesh = _mesh()
    opt = jopt.chain(jopt.adam(1e-3), jopt.ema_params(0.9))  # keeps a copy of the parameters
    abstract = {"w": jax.ShapeDtypeStruct((8, 2), jnp.float32, sharding=NamedSharding(mesh, P("fsdp")))}
    with pytest.raises(ValueError, match="params"):
        jd.init_sharded(opt, abstract)
    params = {"w": jax.device_put(jnp.ones((8, 2)), NamedSharding(mesh, P("fsdp")))}
    state = jd.init_sharded(opt, params)
    for s, p in _mirrors(state, params):
        assert s.sharding.is_equivalent_to(p.sharding, p.ndim)


def test_state_shardings_needs_named_shardings():
    with pytest.raises(ValueError, match="params must carry NamedShardings"):
        jd.state_shardings(jopt.adam(1e-3), {"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


def _load_example(name):
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_parallel_2d_example_equals_single_device():
    """examples/model_parallel_2d.py: data(4) x model(2) tensor-parallel block, state sharded like params."""
    example = _load_example("model_parallel_2d")
    params, state, ref_params = example.run(steps=10, verbose=False)
    assert_trees_close(params, ref_params, **TOL)
    for k, spec in example.SPECS.items():
        assert params[k].sharding.is_equivalent_to(
            NamedSharding(params[k].sharding.mesh, spec), params[k].ndim
        )
        assert state[0].mu[k].sharding.is_equivalent_to(params[k].sharding, params[k].ndim)
        assert state[0].nu[k].sharding.is_equivalent_to(params[k].sharding, params[k].ndim)
    assert params["w1"].addressable_shards[0].data.shape == (example.D_IN, example.D_HIDDEN // 2)


def test_state_shardings_structural_fallback():
    """Code written for Auto meshes whose init cannot be typed on an explicit mesh: shardings by structure."""
    mesh = _mesh(AxisType.Auto)

    def init(params):
        w = params["w"]
        gram = w.T @ w  # contracts the sharded axis: ambiguous sharding on an explicit mesh
        return {"count": jnp.zeros([], jnp.int32), "precond": {"w": w @ gram, "b": params["b"] * 2}}

    tx = jopt.core.transformation(init, lambda u, s, p=None, **kw: (u, s))
    params = {
        "w": jax.device_put(jnp.ones((8, 2)), NamedSharding(mesh, P("fsdp"))),
        "b": jax.device_put(jnp.ones((16,)), NamedSharding(mesh, P("fsdp"))),
    }
    shardings = jd.state_shardings(tx, params)
    assert shardings["count"].is_fully_replicated
    assert shardings["precond"]["w"].spec == P("fsdp") and shardings["precond"]["b"].spec == P("fsdp")
    state = jd.init_sharded(tx, params)
    np.testing.assert_allclose(np.asarray(state["precond"]["w"]), 16.0)
    assert state["precond"]["w"].sharding.spec == P("fsdp")
