"""optax's utilities in jopt: tree maths, numerics, projections and small transforms.

Every function is compared with optax's function of the same name on small
float32 pytrees (the same random keys where randomness is involved) with exact
equality, and its signature with optax's. Where it makes sense the function is
also run under ``jax.jit`` / ``jax.vmap``, and bad concrete input must raise a
``ValueError`` naming the argument.
"""

from __future__ import annotations

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

RNG = np.random.default_rng(0)


def f32(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


A = {"w": f32(3, 4), "b": f32(4), "s": {"t": f32(2, 2)}}
B = {"w": f32(3, 4), "b": f32(4), "s": {"t": f32(2, 2)}}
C = {"w": f32(3, 4), "b": f32(4), "s": {"t": f32(2, 2)}}
CPLX = {"z": f32(3) + 1j * f32(3), "r": f32(2)}


def assert_trees_equal(ours, ref, what=""):
    assert jax.tree.structure(ours) == jax.tree.structure(ref), what
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} vs {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=what)


def params_of(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


# --------------------------------------------------------------------------- names and signatures

TREE_NAMES = sorted(n for n in dir(optax.tree) if not n.startswith("_"))
TREE_UTILS_NAMES = sorted(n for n in optax.tree_utils.__dict__ if n.startswith("tree_")) + ["NamedTupleKey"]
TOP_LEVEL = [
    "centralize",
    "add_noise",
    "zero_nans",
    "keep_params_nonnegative",
    "normalize_by_update_norm",
    "set_to_zero",
    "stateless_with_tree_map",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_gradient",
    "incremental_update",
    "periodic_update",
    "tree_map_params",
    "global_norm",
    "safe_norm",
    "safe_root_mean_squares",
    "safe_int32_increment",
    "safe_increment",
    "bias_correction",
    "update_moment",
    "update_moment_per_elem_norm",
    "update_infinity_moment",
]
PROJECTIONS = sorted(n for n in dir(optax.projections) if n.startswith("projection_"))


@pytest.mark.parametrize("name", TREE_NAMES)
def test_tree_signature(name):
    assert params_of(getattr(jopt.tree, name)) == params_of(getattr(optax.tree, name))


@pytest.mark.parametrize("name", TREE_UTILS_NAMES)
def test_tree_utils_names_are_the_tree_functions(name):
    ours = getattr(jopt.tree_utils, name)
    if name == "NamedTupleKey":
        assert ours is jopt.tree.NamedTupleKey
        return
    assert ours is getattr(jopt.tree, name.removeprefix("tree_"))
    assert params_of(ours) == params_of(getattr(optax.tree_utils, name))


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_signature(name):
    assert params_of(getattr(jopt, name)) == params_of(getattr(optax, name))


def test_stateless_signature():
    assert params_of(jopt.stateless) == params_of(optax.stateless)


@pytest.mark.parametrize("name", PROJECTIONS)
def test_projection_signature(name):
    assert params_of(getattr(jopt.projections, name)) == params_of(getattr(optax.projections, name))


def test_helpers_share_implementations():
    t = jopt.tree
    assert t.tree_zeros_like is t.zeros_like and t.tree_select is t.where
    assert t.tree_cast is t.cast and t.tree_cast_like is t.cast_like
    assert t.tree_bias_correction is t.bias_correction is jopt.bias_correction
    assert t.tree_global_norm is t.global_norm is jopt.global_norm
    assert t.safe_increment is jopt.safe_increment is jopt.safe_int32_increment
    assert jopt.tree_map_params is t.map_params and jopt.update_moment is t.update_moment
    with pytest.warns(DeprecationWarning):
        assert jopt.tree_utils.tree_l1_norm(A) == t.norm(A, ord=1)


# --------------------------------------------------------------------------- tree maths

BINARY = [
    ("add", (A, B)),
    ("add", (A, B, C)),
    ("sub", (A, B)),
    ("mul", (A, B)),
    ("div", (A, B)),
    ("scale", (0.3, A)),
    ("scale", (jnp.float32(-1.7), A)),
    ("add_scale", (A, 0.3, B)),
    ("add_scale", (A, jnp.float32(2.5), B)),
    ("vdot", (A, B)),
    ("vdot", (CPLX, CPLX)),
    ("sum", (A,)),
    ("sum", (A, True)),
    ("max", (A,)),
    ("min", ({"a": A["w"], "empty": jnp.zeros((0,))},)),
    ("conj", (CPLX,)),
    ("real", (CPLX,)),
    ("norm", (A,)),
    ("norm", (CPLX,)),
    ("norm", (A, 1)),
    ("norm", (A, "inf")),
    ("norm", (A, jnp.inf, True)),
    ("norm", (CPLX, 2, True)),
    ("batch_shape", (A, (2, 1))),
    ("zeros_like", (A,)),
    ("ones_like", (A, jnp.int32)),
    ("full_like", (A, 0.5)),
    ("clip", (A, -0.5, 0.25)),
    ("clip", (A, None, 0.0)),
    ("where", (jnp.array(True), A, B)),
    ("cast", (A, jnp.bfloat16)),
    ("cast_like", (A, {"w": jnp.ones(1, jnp.int32), "b": 1.0, "s": {"t": jnp.ones(1, jnp.bfloat16)}})),
    ("update_moment", (A, B, 0.9, 1)),
    ("update_moment", (A, B, 0.999, 2)),
    ("update_moment", (CPLX, CPLX, 0.9, 2)),
    ("update_moment", (A, B, jnp.float32(0.8), 2)),
    ("update_moment_per_elem_norm", (A, B, 0.999, 2)),
    ("update_moment_per_elem_norm", (CPLX, jopt.tree.real(CPLX), 0.999, 2)),
    ("update_moment_per_elem_norm", (CPLX, jopt.tree.real(CPLX), 0.5, 3)),
    ("update_infinity_moment", (A, B, 0.999, 1e-8)),
    ("bias_correction", (A, 0.999, jnp.asarray(7))),
    ("bias_correction", (A, jnp.float32(0.9), jnp.asarray(3))),
]


@pytest.mark.parametrize(("name", "args"), BINARY, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BINARY)])
def test_tree_function_equals_optax(name, args):
    assert_trees_equal(getattr(jopt.tree, name)(*args), getattr(optax.tree, name)(*args), name)


def test_tree_functions_with_none_leaves():
    x, y = {"a": A["w"], "n": None}, {"a": B["w"], "n": None}
    for name, args in [("add_scale", (x, 0.5, y)), ("update_moment", (x, y, 0.9, 2))]:
        assert_trees_equal(getattr(jopt.tree, name)(*args), getattr(optax.tree, name)(*args), name)
    assert_trees_equal(
        jopt.tree.update_infinity_moment(x, y, 0.9, 0.1), optax.tree.update_infinity_moment(x, y, 0.9, 0.1)
    )


def test_python_number_leaves():
    tree = (1.0, {"k1": 1.0, "k2": (1.0, 1.0)}, 1.0)
    other = (1.0, {"k1": 2.0, "k2": (3.0, 4.0)}, 5.0)
    assert float(jopt.tree.vdot(tree, other)) == float(optax.tree.vdot(tree, other)) == 15.0
    assert_trees_equal(jopt.tree.norm(other), optax.tree.norm(other))
    assert jopt.tree.size(A) == optax.tree.size(A) == 20


def test_allclose_and_dtype():
    assert bool(jopt.tree.allclose(A, A)) and not bool(jopt.tree.allclose(A, B))
    mixed = {"a": jnp.ones(1, jnp.float16), "b": jnp.ones(1), "c": jnp.ones(1, jnp.int32)}
    for handler in ["promote", "highest", "lowest"]:
        assert jopt.tree.dtype(mixed, handler) == optax.tree.dtype(mixed, handler)
    assert jopt.tree.dtype(A) == optax.tree.dtype(A) and jopt.tree.dtype({}) == optax.tree.dtype({})
    with pytest.raises(ValueError, match="Expected dtype=float16"):
        jopt.tree.dtype(mixed)
    with pytest.raises(ValueError, match="not ordered"):
        jopt.tree.dtype({"a": jnp.ones(1, jnp.bfloat16), "b": jnp.ones(1, jnp.float16)}, "highest")
    with pytest.raises(ValueError, match="mixed_dtype_handler"):
        jopt.tree.dtype(A, "largest")


def test_tree_errors():
    with pytest.raises(ValueError, match="ord"):
        jopt.tree.norm(A, ord=3)
    with pytest.raises(ValueError, match="equal shapes"):
        jopt.tree.vdot(jnp.ones(3), jnp.ones((3, 1)))


def test_tree_moment_is_the_moment_kernel():
    """jopt's helper keeps its behaviour: update_moment for real leaves, modulus powers for complex."""
    for order in (1, 2):
        assert_trees_equal(
            jopt.tree.tree_moment(A, B, 0.999, order), optax.tree.update_moment(A, B, 0.999, order)
        )
    m = jopt.tree.real(CPLX)
    ref = optax.tree.update_moment_per_elem_norm(CPLX, m, 0.9, 2)
    as_complex = jax.tree.map(lambda r, g: r.astype(g.dtype), ref, CPLX)  # complex g: complex moments
    assert_trees_equal(jopt.tree.tree_moment(CPLX, m, 0.9, 2), as_complex)
    assert_trees_equal(
        jopt.tree.tree_moment(CPLX, CPLX, 0.9, 1), optax.tree.update_moment(CPLX, CPLX, 0.9, 1)
    )
    assert_trees_equal(jopt.tree.tree_scale(A, 0.3), optax.tree.scale(0.3, A))


def test_bf16_leaves_keep_float32_hyperparameters():
    """Deliberate difference from optax: moments of bf16 leaves are computed (and returned) in float32."""
    g = jax.tree.map(lambda x: x.astype(jnp.bfloat16), A)
    ours = jopt.tree.update_moment(g, g, 0.999, 2)
    assert {x.dtype for x in jax.tree.leaves(ours)} == {jnp.dtype(jnp.float32)}
    ref = optax.tree.update_moment(jopt.tree.cast(g, jnp.float32), jopt.tree.cast(g, jnp.float32), 0.999, 2)
    assert_trees_equal(ours, ref)
    assert jopt.tree.scale(jnp.float32(0.5), g)["w"].dtype == jnp.bfloat16


def test_tree_maths_under_jit_and_vmap():
    decays = jnp.array([0.5, 0.9, 0.999], jnp.float32)
    got = jax.vmap(lambda d: jopt.tree.update_moment(A, B, d, 2))(decays)
    ref = jax.vmap(lambda d: optax.tree.update_moment(A, B, d, 2))(decays)
    assert_trees_equal(got, ref)
    batched = jopt.tree.batch_shape(A, (3,))
    assert_trees_equal(jax.jit(jax.vmap(jopt.tree.norm))(batched), jax.vmap(optax.tree.norm)(batched))
    # Under jit XLA may fuse x + s*y into an FMA: compare jitted with jitted.
    assert_trees_equal(jax.jit(jopt.tree.add_scale)(A, 0.3, B), jax.jit(optax.tree.add_scale)(A, 0.3, B))


# --------------------------------------------------------------------------- random trees


def test_random_trees_equal_optax():
    key = jax.random.key(3)
    assert_trees_equal(jopt.tree.random_like(key, A), optax.tree.random_like(key, A))
    assert_trees_equal(
        jopt.tree.random_like(key, A, jax.random.uniform, jnp.bfloat16),
        optax.tree.random_like(key, A, jax.random.uniform, jnp.bfloat16),
    )
    sampler = lambda k, shape, dtype: jax.random.rademacher(k, shape, jnp.int32).astype(dtype)
    assert_trees_equal(jopt.tree.random_like(key, A, sampler), optax.tree.random_like(key, A, sampler))
    ours, ref = jopt.tree.split_key_like(key, A), optax.tree.split_key_like(key, A)
    assert_trees_equal(jopt.tree.unwrap_random_key_data(ours), optax.tree.unwrap_random_key_data(ref))


# --------------------------------------------------------------------------- state lookup


def _optax_state():
    opt = optax.chain(
        optax.inject_hyperparams(optax.sgd)(learning_rate=1.0),
        optax.chain(optax.adam(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=1e-4)),
    )
    return opt.init({"w": jnp.ones(3), "b": jnp.zeros(2)})


def _readable(found):
    return [(jax.tree_util.keystr(p), jax.tree.map(np.asarray, v)) for p, v in found]


@pytest.mark.parametrize("key", ["learning_rate", "count", "mu", "ScaleByAdamState", "missing"])
def test_get_all_with_path_equals_optax(key):
    state = _optax_state()
    ours, ref = jopt.tree.get_all_with_path(state, key), optax.tree.get_all_with_path(state, key)
    assert [jax.tree_util.keystr(p) for p, _ in ours] == [jax.tree_util.keystr(p) for p, _ in ref]
    assert_trees_equal([v for _, v in ours], [v for _, v in ref], key)
    only_arrays = lambda path, value: isinstance(value, jax.Array)
    ours, ref = (
        jopt.tree.get_all_with_path(state, key, only_arrays),
        optax.tree.get_all_with_path(state, key, only_arrays),
    )
    assert [jax.tree_util.keystr(p) for p, _ in ours] == [jax.tree_util.keystr(p) for p, _ in ref]


def test_get_and_set_equal_optax():
    state = _optax_state()
    in_adam = lambda path, value: (
        isinstance(path[-1], jopt.tree.NamedTupleKey) and path[-1].tuple_name == "ScaleByAdamState"
    )
    in_adam_ref = lambda path, value: (
        isinstance(path[-1], optax.tree_utils.NamedTupleKey) and path[-1].tuple_name == "ScaleByAdamState"
    )
    with pytest.raises(KeyError):
        jopt.tree.get(state, "count")
    assert jopt.tree.get(state, "apple", default=7) == 7
    assert_trees_equal(
        jopt.tree.get(state, "mu", filtering=lambda p, v: len(p) == 3),
        optax.tree.get(state, "mu", filtering=lambda p, v: len(p) == 3),
    )
    new = jnp.asarray(5, jnp.int32)
    assert_trees_equal(jopt.tree.set(state, count=new), optax.tree.set(state, count=new))
    assert_trees_equal(
        jopt.tree.set(state, in_adam, count=new), optax.tree.set(state, in_adam_ref, count=new)
    )
    lr = {"learning_rate": jnp.asarray(0.5)}
    assert_trees_equal(jopt.tree.set(state, **lr), optax.tree.set(state, **lr))
    with pytest.raises(KeyError, match="nothing matches 'apple'"):
        jopt.tree.set(state, apple=1)


def test_map_params_equals_optax():
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    opt = optax.adamw(1e-3)
    state = opt.init(params)
    specs = {"w": "row", "b": "col"}
    for kwargs in [{}, {"transform_non_params": lambda _: None}]:
        ours = jopt.tree.map_params(opt, lambda p, s: s, state, specs, **kwargs)
        ref = optax.tree.map_params(opt, lambda p, s: s, state, specs, **kwargs)
        assert jax.tree.map(str, ours) == jax.tree.map(str, ref)
    jstate = jopt.adam(0.1).init(params)
    zeroed = jopt.tree_map_params(
        jopt.adam(0.1).init, jnp.zeros_like, jopt.tree.set(jstate, mu=jopt.tree.ones_like(params))
    )
    assert_trees_equal(zeroed[0].mu, jopt.tree.zeros_like(params))


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize(
    ("x", "kwargs"),
    [
        (f32(5), {}),
        (jnp.zeros(4), {}),
        (f32(3, 4), {"ord": 1}),
        (f32(3, 4), {"axis": 1, "keepdims": True}),
        (f32(3, 4), {"ord": jnp.inf, "axis": 0}),
        (jnp.zeros((2, 3)), {"axis": (0, 1)}),
    ],
)
def test_safe_norm_equals_optax(x, kwargs):
    assert_trees_equal(jopt.safe_norm(x, 0.1, **kwargs), optax.safe_norm(x, 0.1, **kwargs))
    grad = lambda f: jax.grad(lambda v: jnp.sum(f(v, 0.1, **kwargs)))(x)
    assert_trees_equal(grad(jopt.safe_norm), grad(optax.safe_norm))


@pytest.mark.parametrize("x", [f32(5), jnp.zeros(3), f32(2, 2) + 1j * f32(2, 2)])
def test_safe_rms_equals_optax(x):
    assert_trees_equal(jopt.safe_root_mean_squares(x, 0.2), optax.safe_root_mean_squares(x, 0.2))
    if not jnp.iscomplexobj(x):
        g = lambda f: jax.grad(lambda v: f(v, 0.2))(x)
        assert_trees_equal(g(jopt.safe_root_mean_squares), g(optax.safe_root_mean_squares))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.float32, jnp.uint32])
def test_safe_increment_equals_optax(dtype):
    top = jnp.iinfo(dtype).max if jnp.issubdtype(dtype, jnp.integer) else jnp.finfo(dtype).max
    for c in [jnp.asarray(0, dtype), jnp.asarray(top, dtype)]:
        assert_trees_equal(jopt.safe_increment(c), optax.safe_increment(c))
    counts = jnp.asarray([0, 5, top], dtype)
    assert_trees_equal(jax.vmap(jopt.safe_increment)(counts), jax.vmap(optax.safe_increment)(counts))


def test_global_norm_equals_optax():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for tree in [A, CPLX, {}]:
            assert_trees_equal(jopt.global_norm(tree), optax.global_norm(tree))


def test_numerics_errors():
    with pytest.raises(ValueError, match="min_norm must be in"):
        jopt.safe_norm(jnp.ones(2), -1.0)
    with pytest.raises(ValueError, match="min_rms must be in"):
        jopt.safe_root_mean_squares(jnp.ones(2), -1.0)
    with pytest.raises(ValueError, match="integer or floating"):
        jopt.safe_increment(jnp.asarray(True))


# --------------------------------------------------------------------------- projections

P = {"w": f32(4) * 2, "b": f32(3)}
PROJECTION_CASES = [
    ("projection_non_negative", (P,)),
    ("projection_box", (P, {"w": -0.5, "b": -1.0}, {"w": 0.5, "b": 0.2})),
    ("projection_box", (P["w"], -0.5, 0.5)),
    ("projection_hypercube", (P["w"],)),
    ("projection_hypercube", (P["w"], 0.3)),
    ("projection_simplex", (P,)),
    ("projection_simplex", ({"w": jnp.array([2.5, 3.2]), "b": 0.5}, 3.0)),
    ("projection_l1_sphere", (P, 2.0)),
    ("projection_l1_ball", (P,)),
    ("projection_l1_ball", (jopt.tree.scale(0.01, P),)),
    ("projection_l2_sphere", (P, 0.5)),
    ("projection_l2_ball", (P,)),
    ("projection_l2_ball", (jopt.tree.scale(0.01, P), 2.0)),
    ("projection_linf_ball", (P, 0.7)),
    ("projection_vector", (P, jopt.tree.ones_like(P))),
    ("projection_hyperplane", (P, jopt.tree.ones_like(P), 1.5)),
    ("projection_halfspace", (P, jopt.tree.ones_like(P), -3.0)),
    ("projection_halfspace", (P, jopt.tree.ones_like(P), 30.0)),
]


@pytest.mark.parametrize(
    ("name", "args"), PROJECTION_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PROJECTION_CASES)]
)
def test_projection_equals_optax(name, args):
    assert_trees_equal(getattr(jopt.projections, name)(*args), getattr(optax.projections, name)(*args), name)


def test_projections_under_vmap_jit_and_jvp():
    scales = jnp.array([0.5, 1.0, 4.0], jnp.float32)
    for name in ["projection_l1_ball", "projection_l2_ball"]:
        ours_fn, ref_fn = getattr(jopt.projections, name), getattr(optax.projections, name)
        ours = jax.jit(jax.vmap(lambda s, f=ours_fn: f(P, s)))(scales)
        ref = jax.jit(jax.vmap(lambda s, f=ref_fn: f(P, s)))(scales)
        assert_trees_equal(ours, ref, name)
    x = P["w"]
    assert_trees_equal(
        jax.jacfwd(jopt.projections.projection_simplex)(x),
        jax.jacfwd(optax.projections.projection_simplex)(x),
    )
    # A scalar bound applies to every leaf (optax's projection_box needs a tree there).
    assert_trees_equal(jopt.projections.projection_hypercube(P), jax.tree.map(lambda v: jnp.clip(v, 0, 1), P))


def test_projection_errors():
    with pytest.raises(ValueError, match="scale must be in"):
        jopt.projections.projection_simplex(P, 0.0)
    with pytest.raises(ValueError, match="scale must be in"):
        jopt.projections.projection_l2_ball(P, -1.0)
    with pytest.raises(ValueError, match="lower must not exceed upper"):
        jopt.projections.projection_box(P["w"], 1.0, 0.0)


# --------------------------------------------------------------------------- transforms


def run_both(ours, ref, grads, params=None, steps=3):
    """``steps`` updates of both transforms; updates (and optax's state fields) must be bit-equal."""
    s1, s2 = (
        ours.init(params if params is not None else grads),
        ref.init(params if params is not None else grads),
    )
    for i in range(steps):
        g = jopt.tree.scale(1.0 + i, grads)
        u1, s1 = ours.update(g, s1, params)
        u2, s2 = ref.update(g, s2, params)
        assert_trees_equal(u1, u2, f"step {i}")
    return s1, s2


TRANSFORMS = [
    ("centralize", (), False),
    ("set_to_zero", (), False),
    ("zero_nans", (), False),
    ("keep_params_nonnegative", (), True),
    ("normalize_by_update_norm", (), False),
    ("normalize_by_update_norm", (-0.5, 1e-3), False),
    ("scale_by_param_block_norm", (), True),
    ("scale_by_param_block_norm", (0.5,), True),
    ("scale_by_param_block_rms", (), True),
    ("scale_by_param_block_rms", (2.0,), True),
]


@pytest.mark.parametrize(
    ("name", "args", "needs_params"), TRANSFORMS, ids=[f"{n}-{i}" for i, (n, *_) in enumerate(TRANSFORMS)]
)
def test_transform_equals_optax(name, args, needs_params):
    grads = dict(A, nan=jnp.array([1.0, jnp.nan]))
    params = jax.tree.map(jnp.abs, B) | {"nan": jnp.array([0.0, 2.0])}
    params["b"] = params["b"].at[0].set(0.0)
    if name == "keep_params_nonnegative":
        grads = jax.tree.map(lambda g: -jnp.abs(g), A)
        params = jax.tree.map(jnp.abs, B)
    elif name != "zero_nans":
        grads = A
        params = B
    s1, s2 = run_both(
        getattr(jopt, name)(*args), getattr(optax, name)(*args), grads, params if needs_params else None
    )
    if name == "zero_nans":
        assert_trees_equal(s1.found_nan, s2.found_nan)
    if needs_params:
        tx = getattr(jopt, name)(*args)
        with pytest.raises(ValueError, match="needs params"):
            tx.update(A, tx.init(A))


def test_stateless_with_tree_map_equals_optax():
    f = lambda u, p: 2.0 * u if p is None else u * p
    for params in [None, B]:
        run_both(jopt.stateless_with_tree_map(f), optax.stateless_with_tree_map(f), A, params)


def test_normalization_vmaps_over_hyperparameters():
    factors = jnp.array([-1.0, 0.5, 2.0], jnp.float32)

    def ours(s):
        tx = jopt.normalize_by_update_norm(scale_factor=s)
        return tx.update(A, tx.init(A))[0]

    def ref(s):
        tx = optax.normalize_by_update_norm(scale_factor=s)
        return tx.update(A, tx.init(A))[0]

    assert_trees_equal(jax.jit(jax.vmap(ours))(factors), jax.jit(jax.vmap(ref))(factors))
    floors = jnp.array([1e-3, 10.0], jnp.float32)
    block = lambda m, mod: mod.scale_by_param_block_rms(m).update(
        A, mod.scale_by_param_block_rms(m).init(B), B
    )[0]
    assert_trees_equal(
        jax.vmap(lambda m: block(m, jopt))(floors), jax.vmap(lambda m: block(m, optax))(floors)
    )


def test_transform_errors():
    with pytest.raises(ValueError, match="eps must be in"):
        jopt.normalize_by_update_norm(eps=-1.0)
    with pytest.raises(ValueError, match="min_scale must be in"):
        jopt.scale_by_param_block_norm(-1.0)


# --------------------------------------------------------------------------- add_noise


@pytest.mark.parametrize("key", [7, jax.random.key(7), jax.random.PRNGKey(7)], ids=["seed", "typed", "raw"])
def test_add_noise_equals_optax(key):
    # optax takes a seed or a typed key; jopt also takes raw uint32 key data (wrapped).
    ref_key = jax.random.wrap_key_data(key) if getattr(key, "dtype", None) == jnp.uint32 else key
    s1, s2 = run_both(jopt.add_noise(0.01, 0.55, key), optax.add_noise(0.01, 0.55, ref_key), A, steps=4)
    assert_trees_equal(s1.count, s2.count)
    assert_trees_equal(jax.random.key_data(s1.rng_key), jax.random.key_data(s2.rng_key))


def test_add_noise_default_key_and_seed():
    with pytest.warns(UserWarning, match="key"):
        ours = jopt.add_noise(0.1, 0.5)
    with pytest.warns(UserWarning):
        ref = optax.add_noise(0.1, 0.5)
    run_both(ours, ref, A, steps=2)
    with pytest.warns(DeprecationWarning):
        ours = jopt.add_noise(0.1, 0.5, seed=3)
    run_both(ours, optax.add_noise(0.1, 0.5, key=3), A, steps=2)
    with pytest.raises(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        jopt.add_noise(0.1, 0.5, key=1, seed=2)
    with pytest.raises(ValueError, match="eta"):
        jopt.add_noise(-0.1, 0.5, key=0)


def test_add_noise_vmaps_over_eta_and_seed():
    etas = jnp.array([0.0, 0.01, 1.0], jnp.float32)
    seeds = jnp.array([0, 1, 2], jnp.uint32)
    g = {"w": A["w"]}

    def step(mod, eta, seed):
        tx = mod.add_noise(eta, 0.55, seed)
        return tx.update(g, tx.init(g))[0]

    ours = jax.jit(jax.vmap(lambda e, k: step(jopt, e, k)))(etas, seeds)
    assert_trees_equal(ours, jax.jit(jax.vmap(lambda e, k: step(optax, e, k)))(etas, seeds))
    assert_trees_equal(jax.tree.map(lambda x: x[0], ours), g)


# --------------------------------------------------------------------------- per-example clipping

GRADS = {"w": f32(5, 3, 2), "b": f32(5, 2)}
GRADS_INT = [jnp.array([[0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]


@pytest.mark.parametrize("clip", [0.0, 0.8, 2.5, jnp.inf])
def test_per_example_global_norm_clip_equals_optax(clip):
    for grads in [GRADS, GRADS_INT]:
        assert_trees_equal(
            jopt.per_example_global_norm_clip(grads, clip), optax.per_example_global_norm_clip(grads, clip)
        )


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("clip", [0.0, 1.3, jnp.inf])
def test_per_example_layer_norm_clip_equals_optax(clip, uniform):
    for grads in [GRADS, GRADS_INT]:
        ours = jopt.per_example_layer_norm_clip(grads, clip, uniform)
        assert_trees_equal(ours, optax.per_example_layer_norm_clip(grads, clip, uniform))


def test_per_example_clipping_vmap_and_errors():
    clips = jnp.array([0.1, 1.0, 10.0], jnp.float32)
    assert_trees_equal(
        jax.jit(jax.vmap(lambda c: jopt.per_example_global_norm_clip(GRADS, c)))(clips),
        jax.vmap(lambda c: optax.per_example_global_norm_clip(GRADS, c))(clips),
    )
    with pytest.raises(ValueError, match="leading batch axis"):
        jopt.per_example_global_norm_clip({"w": jnp.ones((3, 2)), "b": jnp.ones((4,))}, 1.0)
    with pytest.raises(ValueError, match="leading batch axis"):
        jopt.per_example_layer_norm_clip([jnp.ones(())], 1.0)
    with pytest.raises(ValueError, match="l2_norm_clip must be in"):
        jopt.per_example_global_norm_clip(GRADS, -1.0)


# ------------------------------------------------------------- gradient scaling and target updates


@pytest.mark.parametrize("scale", [1.0, 0.0, 0.5, -1.0, jnp.float32(0.25)])
def test_scale_gradient_equals_optax(scale):
    loss = lambda scaler, p: jnp.sum(jnp.sin(scaler(p, scale)["w"]) * p["b"][0])
    ours, ref = (
        jax.grad(lambda p: loss(jopt.scale_gradient, p))(A),
        jax.grad(lambda p: loss(optax.scale_gradient, p))(A),
    )
    assert_trees_equal(ours, ref)
    assert_trees_equal(jopt.scale_gradient(A, scale), A)


def test_scale_gradient_vmaps_over_scale():
    scales = jnp.array([0.0, 0.5, -2.0], jnp.float32)
    grad = lambda s: jax.grad(lambda x: jnp.sum(jopt.scale_gradient(x, s) ** 2))(A["b"])
    np.testing.assert_array_equal(jax.vmap(grad)(scales), scales[:, None] * 2 * A["b"][None])
    with pytest.raises(ValueError, match="scale must be"):
        jopt.scale_gradient(A, float("nan"))


@pytest.mark.parametrize("step_size", [0.0, 0.01, 0.5, jnp.float32(0.3)])
def test_incremental_update_equals_optax(step_size):
    new, old = dict(A, n=None), dict(B, n=None)
    assert_trees_equal(
        jopt.incremental_update(new, old, step_size), optax.incremental_update(new, old, step_size)
    )


def test_periodic_update_equals_optax_and_vmaps():
    for steps in [0, 3, 10]:
        assert_trees_equal(jopt.periodic_update(A, B, steps, 5), optax.periodic_update(A, B, steps, 5))
    steps = jnp.arange(4)
    ours = jax.jit(jax.vmap(lambda t: jopt.periodic_update(A, B, t, 2)))(steps)
    assert_trees_equal(ours, jax.vmap(lambda t: optax.periodic_update(A, B, t, 2))(steps))
    taus = jnp.array([0.1, 0.9], jnp.float32)
    ours = jax.vmap(lambda s: jopt.incremental_update(A, B, s))(taus)
    assert_trees_equal(ours, jax.vmap(lambda s: optax.incremental_update(A, B, s))(taus))


def test_target_update_errors():
    with pytest.raises(ValueError, match="step_size must be in"):
        jopt.incremental_update(A, B, 1.5)
    with pytest.raises(ValueError, match="update_period must be in"):
        jopt.periodic_update(A, B, 3, 0)
