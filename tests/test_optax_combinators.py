"""optax's combinators and wrappers in jopt: same names and signatures, bit-equal float32 results.

Each test runs a jopt wrapper and optax's wrapper of the same name around the
same inner optimizer (jopt's inner against optax's inner) on the small MLP of
``tests.reference`` for a few steps, and compares the updates and every state
field optax has (jopt's states may carry extra fields) with exact equality.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import mlp

PROB = mlp()
GRAD = jax.jit(jax.grad(PROB.loss))
FAST_GRAD = jax.jit(lambda p: jax.grad(PROB.loss)(p.fast))


def _is_namedtuple(x) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def assert_state_matches(ours, ref, path="state"):
    """Every field of optax's state ``ref`` exists in ``ours`` and is bit-equal (jopt may add fields)."""
    if _is_namedtuple(ref):
        assert _is_namedtuple(ours), f"{path}: {type(ours).__name__} is not a NamedTuple"
        for field in ref._fields:
            assert field in ours._fields, f"{path}: jopt's {type(ours).__name__} lacks {field!r}"
            assert_state_matches(getattr(ours, field), getattr(ref, field), f"{path}.{field}")
    elif isinstance(ref, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(ref), f"{path}: {ours!r} vs {ref!r}"
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_state_matches(a, b, f"{path}[{i}]")
    elif isinstance(ref, dict):
        assert isinstance(ours, dict) and set(ours) == set(ref), f"{path}: keys {set(ours)} vs {set(ref)}"
        for k in ref:
            assert_state_matches(ours[k], ref[k], f"{path}[{k!r}]")
    elif ref is None:
        assert ours is None or jax.tree.leaves(ours) == [], path
    else:
        a, b = np.asarray(ours), np.asarray(ref)
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} vs {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=path)


def assert_trees_equal(ours, ref, what="updates"):
    """Same key paths (container classes may differ, e.g. jopt's and optax's LookaheadParams), same bits."""
    ours, ref = jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree_util.tree_flatten_with_path(ref)[0]
    assert [jax.tree_util.keystr(k) for k, _ in ours] == [jax.tree_util.keystr(k) for k, _ in ref], what
    for (path, a), (_, b) in zip(ours, ref):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype, f"{what}{jax.tree_util.keystr(path)}: {a.dtype} vs {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=what + jax.tree_util.keystr(path))


def run(tx, steps=5, *, params=None, grad_of=None, grads_hook=None, state_hook=None, extra=None):
    """``steps`` jitted updates on the MLP; returns [(updates, state)] after each step."""
    params = PROB.params if params is None else params
    grad_of = grad_of or GRAD
    step = jax.jit(lambda g, s, p, kw: tx.update(g, s, p, **kw))
    state, out = tx.init(params), []
    for i in range(steps):
        g = grad_of(params)
        g = grads_hook(i, g) if grads_hook else g
        # The hook writes into a copy of the containers, so recorded states stay as returned.
        state = state_hook(i, jax.tree.map(lambda x: x, state)) if state_hook else state
        updates, state = step(g, state, params, extra(i) if extra else {})
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        out.append((updates, state))
    return out


def compare(ours, ref, *, ref_params=None, **kwargs):
    """Run both and compare updates and states at every step."""
    ref_kwargs = kwargs if ref_params is None else {**kwargs, "params": ref_params}
    ours_out, ref_out = run(ours, **kwargs), run(ref, **ref_kwargs)
    for i, ((u, s), (ru, rs)) in enumerate(zip(ours_out, ref_out)):
        assert_trees_equal(u, ru, f"updates at step {i}")
        assert_state_matches(s, rs, f"state at step {i}")
    return ours_out, ref_out


def _weights(p):
    return jax.tree.map(lambda x: x.ndim > 1, p)


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    "name",
    [
        "multi_transform",
        "partition",
        "masked",
        "MultiSteps",
        "apply_every",
        "apply_if_finite",
        "skip_not_finite",
        "skip_large_updates",
        "inject_hyperparams",
        "inject_stateful_hyperparams",
        "selective_transform",
        "freeze",
        "conditionally_transform",
        "conditionally_mask",
        "lookahead",
        "snapshot",
        "monitor",
        "measure_with_ema",
        "flatten",
    ],
)
def test_signature_matches_optax(name):
    ours, ref = inspect.signature(getattr(jopt, name)), inspect.signature(getattr(optax, name))
    ref_params = [(p.name, p.kind, p.default) for p in ref.parameters.values()]
    our_params = [(p.name, p.kind, p.default) for p in ours.parameters.values()]
    if name == "MultiSteps":  # documented: accumulator_dtype=None means "at least float32"
        ref_params[-1] = ref_params[-1][:2] + (None,)
    if name == "freeze":  # documented: the deprecated keyword of jopt's former form
        assert our_params[-1][0] == "frozen"
        our_params = our_params[:-1]
    assert our_params == ref_params
    for state in ["MultiTransformState", "MaskedState", "MaskedNode", "MultiStepsState", "LookaheadParams"]:
        assert hasattr(jopt, state)


# --------------------------------------------------------------------------- inject_hyperparams


def _write_hyperparams(i, state):
    if i == 2:
        state.hyperparams["learning_rate"] = 0.03
    if i == 3:
        state.hyperparams["b1"] = jnp.asarray(0.5)
    return state


def test_inject_hyperparams_adam_with_writes_between_steps_matches_optax():
    ours = jopt.inject_hyperparams(jopt.adam)(learning_rate=1e-2)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)
    written, _ = compare(ours, ref, steps=5, state_hook=_write_hyperparams)
    s = written[-1][1]
    assert isinstance(s, jopt.InjectStatefulHyperparamsState)
    assert s.hyperparams["learning_rate"].dtype == jnp.float32 and float(s.hyperparams["b1"]) == 0.5
    # The writes are used: a different update than without them, from the step after the first write.
    plain = run(ours, steps=5)
    assert np.array_equal(written[1][0]["layer0"]["w"], plain[1][0]["layer0"]["w"])
    assert not np.array_equal(written[2][0]["layer0"]["w"], plain[2][0]["layer0"]["w"])


def test_inject_hyperparams_schedules_are_evaluated_each_step_as_in_optax():
    schedule = optax.linear_schedule(1e-2, 1e-3, 4)

    def write_scheduled(i, state):  # writing a scheduled entry has no effect, in both
        state.hyperparams["learning_rate"] = 10.0
        return state

    ours = jopt.inject_hyperparams(jopt.adam)(learning_rate=schedule, b1=0.8)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=0.8)
    states = [s for _, s in compare(ours, ref, steps=6, state_hook=write_scheduled)[0]]
    lrs = [float(s.hyperparams["learning_rate"]) for s in states]
    np.testing.assert_allclose(lrs, [schedule(i) for i in range(6)], rtol=1e-6)
    assert int(states[-1].hyperparams_states["learning_rate"].count) == 6
    with pytest.warns(DeprecationWarning):
        stateful = jopt.inject_stateful_hyperparams(jopt.adam)(learning_rate=schedule)
    with pytest.warns(DeprecationWarning):
        stateful_ref = optax.inject_stateful_hyperparams(optax.adam)(learning_rate=schedule)
    compare(stateful, stateful_ref, steps=3)


def test_inject_hyperparams_static_args_dtype_and_vmap():
    with pytest.raises(ValueError, match="static_args"):
        jopt.inject_hyperparams(jopt.adam, static_args="nope")
    # bfloat16 parameters: jopt keeps float32 hyperparameters; optax rounds b2=0.999 to 1.0.
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PROB.params)
    ours = jopt.inject_hyperparams(jopt.adam)(learning_rate=1e-2).init(p16)
    ref = optax.inject_hyperparams(optax.adam)(learning_rate=1e-2).init(p16)
    assert ours.hyperparams["b2"].dtype == jnp.float32 and float(ours.hyperparams["b2"]) == np.float32(0.999)
    assert ref.hyperparams["b2"].dtype == jnp.bfloat16 and float(ref.hyperparams["b2"]) == 1.0
    # An explicit hyperparam_dtype is honoured.
    low = jopt.inject_hyperparams(jopt.sgd, hyperparam_dtype=jnp.bfloat16)(learning_rate=1e-2)
    assert low.init(PROB.params).hyperparams["learning_rate"].dtype == jnp.bfloat16
    # The learning rate in the state is data: vmapping over it equals a loop.
    tx = jopt.inject_hyperparams(jopt.sgd)(learning_rate=0.1, momentum=0.9)
    g = jax.grad(PROB.loss)(PROB.params)

    def one(lr):
        s = tx.init(PROB.params)
        s.hyperparams["learning_rate"] = lr
        return tx.update(g, s, PROB.params)[0]

    lrs = jnp.array([0.1, 0.01])
    batched = jax.jit(jax.vmap(one))(lrs)
    for i in range(2):
        assert_trees_equal(jax.tree.map(lambda x, i=i: x[i], batched), one(lrs[i]))


# --------------------------------------------------------------------------- multi_transform / masked


def _labels(p):
    return {k: ("adam" if k != "layer1" else "sgd") for k in p}


@pytest.mark.parametrize("labels", ["pytree", "callable"])
def test_multi_transform_matches_optax(labels):
    param_labels = _labels(PROB.params) if labels == "pytree" else _labels
    ours = jopt.multi_transform({"adam": jopt.adam(1e-2), "sgd": jopt.sgd(0.1, momentum=0.9)}, param_labels)
    ref = optax.multi_transform({"adam": optax.adam(1e-2), "sgd": optax.sgd(0.1, momentum=0.9)}, param_labels)
    compare(ours, ref)
    state = ours.init(PROB.params)
    assert isinstance(state, jopt.MultiTransformState)
    assert isinstance(state.inner_states["adam"], jopt.MaskedState)
    assert isinstance(state.inner_states["adam"].inner_state[0].mu["layer1"], jopt.MaskedNode)


def test_masked_matches_optax_with_mask_compatible_extra_args():
    compare(jopt.masked(jopt.adam(1e-2), _weights), optax.masked(optax.adam(1e-2), _weights))

    def scale_by_extra():  # multiplies the updates by the extra argument ``factors`` (a params-shaped tree)
        def update(updates, state, params=None, *, factors, **extra_args):
            return jax.tree.map(lambda u, f: u * f, updates, factors), state

        return jopt.transformation(lambda p: jopt.EmptyState(), update, extra_args=("factors",))

    factors = jax.tree.map(lambda x: jnp.full_like(x, 3.0), PROB.params)
    for flag in (False, True):
        tx = jopt.masked(scale_by_extra(), _weights, mask_compatible_extra_args=flag)
        if flag:
            u, _ = tx.update(PROB.params, tx.init(PROB.params), PROB.params, factors=factors)
            np.testing.assert_array_equal(u["layer0"]["w"], 3.0 * PROB.params["layer0"]["w"])
            np.testing.assert_array_equal(u["layer0"]["b"], PROB.params["layer0"]["b"])
        else:  # the unmasked tree does not match the masked updates' structure
            with pytest.raises(ValueError):
                tx.update(PROB.params, tx.init(PROB.params), PROB.params, factors=factors)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class CallableMask:
    """A pytree of bools that is also callable, like an equinox module with ``__call__``."""

    w: bool = dataclasses.field(metadata={"static": False}, default=True)
    b: bool = dataclasses.field(metadata={"static": False}, default=False)

    def __call__(self, x):
        raise AssertionError("a callable pytree mask must not be called")


def test_masked_treats_a_callable_pytree_mask_as_a_pytree():
    """Regression: jopt called any callable mask; a pytree that happens to be callable is a mask tree."""
    params = CallableMask(w=jnp.ones(2), b=jnp.ones(2))
    mask = CallableMask(w=True, b=False)
    for ours, ref in [
        (jopt.masked(jopt.scale(2.0), mask), optax.masked(optax.scale(2.0), mask)),
        (jopt.freeze(mask), optax.freeze(mask)),
        (jopt.partition({True: jopt.scale(2.0), False: jopt.scale(5.0)}, mask), None),
    ]:
        u, _ = ours.update(params, ours.init(params), params)
        if ref is not None:
            ru, _ = ref.update(params, ref.init(params), params)
            assert_trees_equal(u, ru)
        assert float(u.w[0]) in (2.0, 0.0) and float(u.b[0]) in (1.0, 5.0)
    # A plain function is still called (with the parameters in init, the updates in update).
    seen = []
    tx = jopt.masked(jopt.scale(2.0), lambda t: seen.append(t) or CallableMask(True, False))
    tx.update(params, tx.init(params))
    assert len(seen) == 2


# --------------------------------------------------------------------------- MultiSteps / apply_every


@pytest.mark.parametrize("every_k", ["int", "schedule"])
def test_multisteps_matches_optax(every_k):
    k = 3 if every_k == "int" else (lambda step: jnp.where(step < 2, 2, 3))
    ours = jopt.MultiSteps(jopt.adam(1e-2), every_k_schedule=k)
    ref = optax.MultiSteps(optax.adam(1e-2), every_k_schedule=k)
    ours_out, ref_out = compare(ours, ref, steps=10)
    states, ref_states = [s for _, s in ours_out], [s for _, s in ref_out]
    assert [bool(ours.has_updated(s)) for s in states] == [bool(ref.has_updated(s)) for s in ref_states]
    assert sum(bool(ours.has_updated(s)) for s in states) == (3 if every_k == "int" else 4)
    # gradient_transformation() and accumulate_gradients are the same transformation.
    compare(jopt.accumulate_gradients(jopt.adam(1e-2), k), ref.gradient_transformation(), steps=7)


def test_multisteps_sum_and_skip_functions_match_optax():
    ours = jopt.MultiSteps(jopt.sgd(0.1), 2, use_grad_mean=False)
    compare(ours, optax.MultiSteps(optax.sgd(0.1), 2, use_grad_mean=False), steps=4)

    def poison(i, g):  # NaN gradients at steps 1 and 4, one huge one at step 6
        scale = jnp.nan if i in (1, 4) else (1e6 if i == 6 else 1.0)
        return jax.tree.map(lambda x: x * scale, g)

    for skip in [jopt.skip_not_finite, functools.partial(jopt.skip_large_updates, max_squared_norm=100.0)]:
        ref_skip = (
            optax.skip_not_finite
            if skip is jopt.skip_not_finite
            else functools.partial(optax.skip_large_updates, max_squared_norm=100.0)
        )
        ours = jopt.MultiSteps(jopt.adam(1e-2), 2, should_skip_update_fn=skip)
        ref = optax.MultiSteps(optax.adam(1e-2), 2, should_skip_update_fn=ref_skip)
        final = compare(ours, ref, steps=8, grads_hook=poison)[0][-1][1]
        # NaNs are skipped by both; the huge finite gradient only by skip_large_updates.
        assert int(final.gradient_step) == (3 if skip is jopt.skip_not_finite else 2)


def test_apply_every_matches_optax():
    ours = jopt.chain(jopt.apply_every(3), jopt.sgd(0.1))
    ref = optax.chain(optax.apply_every(3), optax.sgd(0.1))
    moved = [np.any(np.asarray(u["layer0"]["w"]) != 0) for u, _ in compare(ours, ref, steps=7)[0]]
    assert moved == [False, False, True, False, False, True, False]
    # k is data: vmapping over it equals a loop.
    g = {"w": jnp.arange(3.0)}

    def four_calls(k):
        tx = jopt.apply_every(k)
        s, out = tx.init(g), []
        for _ in range(4):
            u, s = tx.update(g, s)
            out.append(u["w"])
        return jnp.stack(out)

    batched = jax.jit(jax.vmap(four_calls))(jnp.array([2, 4]))
    for i, k in enumerate((2, 4)):
        np.testing.assert_array_equal(batched[i], four_calls(k))


# --------------------------------------------------------------------------- conditionals


def test_apply_if_finite_matches_optax():
    def poison(i, g):
        return jax.tree.map(lambda x: x * (jnp.nan if i in (1, 3, 4, 5) else 1.0), g)

    ours = jopt.apply_if_finite(jopt.adam(1e-2), max_consecutive_errors=2)
    ref = optax.apply_if_finite(optax.adam(1e-2), max_consecutive_errors=2)
    final = compare(ours, ref, steps=6, grads_hook=poison)[0][-1]
    assert int(final[1].total_notfinite) == 4 and int(final[1].notfinite_count) == 3
    assert np.isnan(np.asarray(final[0]["layer0"]["w"])).all()  # the third NaN in a row is applied


@pytest.mark.parametrize("kind", ["conditionally_transform", "conditionally_mask"])
def test_conditionally_transform_and_mask_match_optax(kind):
    ours = getattr(jopt, kind)(jopt.adam(1e-2), lambda step: step % 3 != 1)
    ref = getattr(optax, kind)(optax.adam(1e-2), lambda step: step % 3 != 1)
    compare(ours, ref, steps=6)

    def cond(step, *, value):
        return value > 0

    ours = getattr(jopt, kind)(jopt.sgd(0.1), cond, forward_extra_args=True)
    ref = getattr(optax, kind)(optax.sgd(0.1), cond, forward_extra_args=True)
    assert "value" in ours.extra_args
    compare(ours, ref, steps=4, extra=lambda i: {"value": jnp.asarray(1.0 if i % 2 else -1.0)})


# --------------------------------------------------------------------------- freezing


def test_selective_transform_and_freeze_match_optax():
    frozen = {"layer0": True, "layer1": {"w": True, "b": False}, "layer2": False}
    ours = jopt.selective_transform(jopt.adam(1e-2), freeze_mask=frozen)
    ref = optax.selective_transform(optax.adam(1e-2), freeze_mask=frozen)
    compare(ours, ref)
    compare(
        jopt.chain(jopt.freeze(frozen), jopt.adam(1e-2)), optax.chain(optax.freeze(frozen), optax.adam(1e-2))
    )
    compare(jopt.freeze(True), optax.freeze(True), steps=2)
    with pytest.warns(DeprecationWarning, match="selective_transform"):
        old_form = jopt.freeze(jopt.adam(1e-2), frozen=frozen)
    compare(old_form, ref, steps=2)


# --------------------------------------------------------------------------- lookahead


@pytest.mark.parametrize("reset_state", [False, True])
def test_lookahead_matches_optax(reset_state):
    params = jopt.LookaheadParams.init_synced(PROB.params)
    kwargs = dict(params=params, grad_of=FAST_GRAD, steps=7)
    ours = jopt.lookahead(jopt.adam(1e-2), sync_period=3, slow_step_size=0.5, reset_state=reset_state)
    ref = optax.lookahead(optax.adam(1e-2), sync_period=3, slow_step_size=0.5, reset_state=reset_state)
    compare(ours, ref, ref_params=optax.LookaheadParams.init_synced(PROB.params), **kwargs)
    # slow_step_size and sync_period are data: vmapping over them equals a loop (one program each,
    # so up to float32 rounding of differently fused programs).
    g = jax.grad(PROB.loss)(PROB.params)

    def three_steps(alpha, period):
        tx = jopt.lookahead(jopt.sgd(0.1), period, alpha)
        p, s = params, tx.init(params)
        for _ in range(3):
            u, s = tx.update(g, s, p)
            p = jopt.apply_updates(p, u)
        return p.slow

    alphas, periods = jnp.array([0.5, 0.8]), jnp.array([2, 3])
    batched = jax.jit(jax.vmap(three_steps))(alphas, periods)
    for i in range(2):
        looped = three_steps(float(alphas[i]), int(periods[i]))
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(looped)):
            np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7)
    # A schedule for slow_step_size is evaluated at the step count and logged.
    small = jopt.LookaheadParams.init_synced({"w": jnp.ones(3)})
    scheduled, constant = (
        jopt.lookahead(jopt.sgd(0.1), 2, lambda t: 0.5),
        jopt.lookahead(jopt.sgd(0.1), 2, 0.5),
    )
    s1, s2 = scheduled.init(small), constant.init(small)
    for _ in range(3):
        u1, s1 = scheduled.update(small.fast, s1, small)
        u2, s2 = constant.update(small.fast, s2, small)
        assert_trees_equal(u1, u2)
    assert int(s1.count) == 3 and float(s1.hyperparams["slow_step_size"]) == 0.5 and s2.hyperparams == {}
    with pytest.raises(ValueError, match="sync_period"):
        jopt.lookahead(jopt.sgd(0.1), 0, 0.5)


# --------------------------------------------------------------------------- monitoring, flatten


def test_snapshot_monitor_and_flatten_match_optax():
    ours = jopt.chain(jopt.adam(1e-2), jopt.snapshot("norm", optax.tree.norm), jopt.scale(0.5))
    ref = optax.chain(optax.adam(1e-2), optax.snapshot("norm", optax.tree.norm), optax.scale(0.5))
    compare(ours, ref, steps=3)
    ours = jopt.chain(
        jopt.sgd(0.1),
        jopt.monitor({"norm": optax.tree.norm, "ema": jopt.measure_with_ema(optax.tree.norm, 0.9)}),
    )
    ref = optax.chain(
        optax.sgd(0.1),
        optax.monitor({"norm": optax.tree.norm, "ema": optax.measure_with_ema(optax.tree.norm, 0.9)}),
    )
    ours_out, _ = compare(ours, ref, steps=3)
    # jopt's initial measurements have their final structure (optax starts from an empty dict).
    assert jax.tree.structure(ours.init(PROB.params)) == jax.tree.structure(ours_out[0][1])
    compare(jopt.flatten(jopt.adam(1e-2)), optax.flatten(optax.adam(1e-2)), steps=3)
