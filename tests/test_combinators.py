"""partition / masked / freeze, gradient accumulation, skipping non-finite steps, parameter averaging."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import assert_trees_close, mlp, quadratic, trajectory


def _adam(lr):
    """Adam built from transforms that exist (optax preconditioner, jopt learning rate)."""
    return jopt.chain(optax.scale_by_adam(), jopt.scale_by_learning_rate(lr))


def _layer_labels(params):
    return {name: ("slow" if name == "layer0" else "fast") for name in params}


def _nbytes(tree):
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


# --------------------------------------------------------------------------- partition / masked / freeze


def test_partition_per_layer_learning_rates_matches_optax():
    prob = mlp()
    ours = jopt.partition(
        {
            "slow": _adam(0.003),
            "fast": jopt.chain(
                jopt.clip_by_global_norm(0.05), optax.scale_by_adam(), jopt.scale_by_learning_rate(0.01)
            ),
        },
        _layer_labels,
    )
    ref = optax.partition(
        {"slow": optax.adam(0.003), "fast": optax.chain(optax.clip_by_global_norm(0.05), optax.adam(0.01))},
        _layer_labels,
    )
    assert_trees_close(trajectory(ours, prob, 120), trajectory(ref, prob, 120), rtol=1e-4, atol=1e-5)
    # Each group's state covers its own leaves only: Adam moments for layer0 in "slow".
    state = ours.init(prob.params)
    slow = state.inner_states["slow"]
    assert isinstance(slow, jopt.MaskedState)  # optax's layout: each group's state is a masked state
    alone = _adam(0.003).init(prob.params["layer0"])
    assert _nbytes(slow) == _nbytes(alone) and len(jax.tree.leaves(slow)) == len(jax.tree.leaves(alone))
    # mu and nu of layer0 only (w and b), not of the other layers
    assert _nbytes(slow.inner_state[0].mu) == _nbytes(prob.params["layer0"])


def test_partition_accepts_prefix_labels_and_rejects_unknown():
    params = {"enc": {"w": jnp.ones(3), "b": jnp.ones(1)}, "head": jnp.ones(2)}
    tx = jopt.partition(
        {"a": jopt.scale_by_learning_rate(1.0), "b": jopt.scale_by_learning_rate(0.5)},
        {"enc": "a", "head": "b"},
    )
    u, _ = tx.update(params, tx.init(params), params)
    np.testing.assert_allclose(u["enc"]["w"], -1.0)
    np.testing.assert_allclose(u["head"], -0.5)
    bad = jopt.partition({"a": jopt.identity()}, {"enc": "a", "head": "missing"})
    with pytest.raises(ValueError, match="missing"):
        bad.init(params)
    with pytest.raises(TypeError, match="static"):
        jax.jit(lambda m: jopt.masked(jopt.identity(), {"enc": m, "head": True}).init(params))(True)


def _value_recorder():
    """A loss-driven transform: scales the updates by the ``value`` it receives, records it."""

    def init(params):
        del params
        return jnp.zeros([])

    def update(updates, state, params=None, *, value, **extra_args):
        del params, state, extra_args
        return jax.tree.map(lambda u: u * value, updates), jnp.asarray(value, jnp.float32)

    return jopt.transformation(init, update, extra_args=("value",))


def test_combinators_forward_extra_args_only_to_transforms_declaring_them():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    labels = {"a": "loss", "b": "plain"}
    for tx in [
        jopt.partition({"loss": _value_recorder(), "plain": optax.scale(2.0)}, labels),
        jopt.masked(_value_recorder(), {"a": True, "b": False}),
        jopt.selective_transform(_value_recorder(), freeze_mask={"a": False, "b": True}),
    ]:
        assert tx.extra_args == frozenset({"value"})
        # Undeclared extra arguments are ignored (optax's rule); declared ones reach the member.
        u, s = tx.update(params, tx.init(params), params, value=3.0, step_tag=7)
        np.testing.assert_allclose(u["a"], 3.0)
        assert float(jax.tree.leaves(s)[0]) == 3.0
    # A misspelling of a declared name is reported, and the member that needs it does not get it.
    with pytest.warns(UserWarning, match="did you mean 'value'"), pytest.raises(TypeError, match="value"):
        tx.update(params, tx.init(params), params, valeu=3.0)


def test_masked_matches_optax_and_holds_state_for_selected_leaves_only():
    prob = mlp()

    def mask(p):
        return jax.tree.map(lambda x: x.ndim > 1, p)

    ours = jopt.chain(jopt.masked(jopt.clip_by_global_norm(0.05), mask), jopt.scale_by_learning_rate(0.05))
    ref = optax.chain(optax.masked(optax.clip_by_global_norm(0.05), mask), optax.sgd(0.05))
    everything = optax.chain(optax.clip_by_global_norm(0.05), optax.sgd(0.05))
    ours_t, ref_t = trajectory(ours, prob, 120), trajectory(ref, prob, 120)
    assert_trees_close(ours_t, ref_t)
    assert not np.allclose(ref_t["layer0"]["b"], trajectory(everything, prob, 120)["layer0"]["b"])
    adam_masked = jopt.masked(optax.scale_by_adam(), mask)
    state = adam_masked.init(prob.params)
    weights_only = {k: v["w"] for k, v in prob.params.items()}
    assert _nbytes(state) == _nbytes(optax.scale_by_adam().init(weights_only))


def test_selective_transform_gives_zero_updates_and_no_state_for_frozen_params():
    prob = mlp()
    frozen = {"layer0": True, "layer1": {"w": True, "b": False}, "layer2": False}
    tx = jopt.selective_transform(_adam(0.02), freeze_mask=frozen)
    ours = trajectory(tx, prob, 120)
    # Frozen parameters are bit-for-bit unchanged at every step.
    for path in [("layer0", "w"), ("layer0", "b"), ("layer1", "w")]:
        leaf = ours[path[0]][path[1]]
        np.testing.assert_array_equal(leaf, np.broadcast_to(prob.params[path[0]][path[1]], leaf.shape))
    # Trainable ones follow optax's selective_transform.
    ref = trajectory(optax.selective_transform(optax.adam(0.02), freeze_mask=frozen), prob, 120)
    assert_trees_close(ours, ref, rtol=1e-5, atol=1e-6)
    # No optimizer state for frozen parameters: same bytes as Adam on the trainable leaves alone.
    state = tx.init(prob.params)
    trainable = {"layer1": {"b": prob.params["layer1"]["b"]}, "layer2": prob.params["layer2"]}
    assert _nbytes(state) == _nbytes(_adam(0.02).init(trainable))
    assert _nbytes(state) < _nbytes(_adam(0.02).init(prob.params)) / 3
    mu = state.inner_states["train"].inner_state[0].mu
    assert isinstance(mu["layer0"], jopt.MaskedNode) and jax.tree.leaves(mu["layer0"]) == []
    # An optax reference freeze keeps full-size moments for frozen leaves (for comparison).
    assert _nbytes(optax.chain(optax.freeze(frozen), optax.adam(0.02)).init(prob.params)) > _nbytes(state)


# --------------------------------------------------------------------------- accumulation


def _regression(n=64, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = jnp.asarray(x @ rng.normal(size=(d,)) + 0.1 * rng.normal(size=n), jnp.float32)
    params = {"w": jnp.zeros(d, jnp.float32), "b": jnp.zeros((), jnp.float32)}

    def loss(p, xb, yb):
        return jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2)

    return params, loss, x, y


def _micro_batch_run(tx, steps, batch, pass_value=False):
    """``steps`` calls on consecutive micro-batches of size ``batch``; params after each call."""
    params, loss, x, y = _regression()
    n_batches = x.shape[0] // batch

    @jax.jit
    def run(params):
        def step(carry, i):
            p, s = carry
            j = (i % n_batches) * batch
            xb, yb = jax.lax.dynamic_slice_in_dim(x, j, batch), jax.lax.dynamic_slice_in_dim(y, j, batch)
            value, g = jax.value_and_grad(loss)(p, xb, yb)
            u, s = tx.update(g, s, p, **({"value": value} if pass_value else {}))
            p = jax.tree.map(lambda a, b: a + b, p, u)
            return (p, s), p

        (_, s), ps = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
        return ps, s

    return run(params)


@pytest.mark.parametrize("every_k", [4, "schedule"])
def test_accumulation_matches_optax_multisteps(every_k):
    k = (lambda gs: jnp.where(gs < 10, 2, 5)) if every_k == "schedule" else every_k
    ours, state = _micro_batch_run(jopt.accumulate_gradients(_adam(0.05), k), 240, batch=8)
    ref, ref_state = _micro_batch_run(optax.MultiSteps(optax.adam(0.05), k), 240, batch=8)
    assert_trees_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert int(state.gradient_step) == int(ref_state.gradient_step)
    assert int(state.mini_step) == int(ref_state.mini_step)
    # Parameters only move on every k-th call.
    moved = np.any(np.diff(np.asarray(ours["w"]), axis=0) != 0, axis=1)
    expected = 60 if every_k == 4 else 10 + (240 - 20) // 5
    assert moved.sum() == expected


def test_accumulated_micro_batches_equal_one_large_batch_sgd_step():
    k, b = 4, 8
    accumulated, _ = _micro_batch_run(
        jopt.accumulate_gradients(jopt.scale_by_learning_rate(0.1), k), steps=8 * k, batch=b
    )
    large, _ = _micro_batch_run(jopt.scale_by_learning_rate(0.1), steps=8, batch=k * b)
    # Micro-batches j*k .. j*k+k-1 of size b are exactly large batch j of size k*b.
    assert_trees_close(jax.tree.map(lambda x: x[k - 1 :: k], accumulated), large, rtol=1e-5, atol=1e-6)


def test_inner_update_runs_only_on_emitting_steps():
    calls = []

    def init(params):
        return jopt.EmptyState()

    def update(updates, state, params=None, **extra_args):
        jax.debug.callback(lambda: calls.append(1))
        return updates, state

    counter = jopt.transformation(init, update)
    _micro_batch_run(jopt.accumulate_gradients(counter, 3), steps=30, batch=8)
    jax.effects_barrier()
    assert len(calls) == 10


def test_accumulation_every_k_is_traceable_and_forwards_value_on_emit():
    traces = []

    @jax.jit
    def final(k):
        traces.append(1)
        ps, s = _micro_batch_run(jopt.accumulate_gradients(_adam(0.05), k), 24, batch=8)
        return jax.tree.map(lambda x: x[-1], ps), s.hyperparams["every_k"]

    for k in (2, 3):
        traced, used = final(jnp.int32(k))
        static, _ = _micro_batch_run(jopt.accumulate_gradients(_adam(0.05), k), 24, batch=8)
        assert_trees_close(traced, jax.tree.map(lambda x: x[-1], static))
        assert int(used) == k
    assert len(traces) == 1
    batched = jax.vmap(lambda k: final(k)[0])(jnp.array([2, 3], jnp.int32))
    for i, k in enumerate((2, 3)):
        static, _ = _micro_batch_run(jopt.accumulate_gradients(_adam(0.05), k), 24, batch=8)
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), jax.tree.map(lambda x: x[-1], static))
    ps, s = _micro_batch_run(jopt.accumulate_gradients(_value_recorder(), 3), 6, batch=8, pass_value=True)
    _, loss, x, y = _regression()
    assert bool(jopt.accumulation_emitted(s))
    # The loss of the emitting call (call 5: micro-batch 5 at the parameters after call 4) reached the inner.
    last_loss = loss(jax.tree.map(lambda v: v[4], ps), x[40:48], y[40:48])
    np.testing.assert_allclose(float(s.inner_opt_state), float(last_loss), rtol=1e-6)
    with pytest.raises(ValueError, match="every_k"):
        jopt.accumulate_gradients(_adam(0.1), 0)


# --------------------------------------------------------------------------- skip_non_finite


def _grad_sequence(steps, bad_steps):
    rng = np.random.default_rng(5)
    g = {
        "a": rng.normal(size=(steps, 3)).astype(np.float32),
        "b": rng.normal(size=(steps, 2, 2)).astype(np.float32),
    }
    for i, kind in bad_steps.items():
        g["a" if i % 2 else "b"][i].flat[0] = kind
    return jax.tree.map(jnp.asarray, g)


def _run_on_sequence(tx, grads):
    params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}

    @jax.jit
    def run():
        def step(s, g):
            u, s = tx.update(g, s, params)
            return s, u

        return jax.lax.scan(step, tx.init(params), grads)

    return run()


def test_skip_non_finite_matches_optax_apply_if_finite():
    bad = {5: np.nan, 17: np.inf, 18: -np.inf, 40: np.nan, 41: np.nan, 97: np.nan, 98: np.nan, 99: np.nan}
    grads = _grad_sequence(100, bad)
    state, ours = _run_on_sequence(jopt.skip_non_finite(_adam(0.1), max_consecutive_errors=2), grads)
    ref_state, ref = _run_on_sequence(optax.apply_if_finite(optax.adam(0.1), max_consecutive_errors=2), grads)
    assert_trees_close(ours, ref)  # NaN == NaN here: the third consecutive NaN at step 99 is applied
    assert int(state.total_skips) == int(ref_state.total_notfinite) == 8
    assert int(state.consecutive_skips) == int(ref_state.notfinite_count) == 3
    assert np.isnan(ours["a"][99, 0]) and np.all(np.isfinite(ours["a"][:99]))
    for i in [5, 17, 18, 40, 41, 97, 98]:
        assert all(np.all(np.asarray(u[i]) == 0) for u in ours.values())


def test_skip_non_finite_always_skips_and_leaves_inner_state_unchanged():
    grads = _grad_sequence(30, {3: np.nan, 4: np.nan, 5: np.nan, 6: np.nan, 20: np.inf})
    finite_only = jax.tree.map(lambda x: x[np.array([i not in (3, 4, 5, 6, 20) for i in range(30)])], grads)
    state, ours = _run_on_sequence(jopt.skip_non_finite(_adam(0.1)), grads)
    clean_state, clean = _run_on_sequence(_adam(0.1), finite_only)
    # The inner optimizer sees exactly the finite gradients, in order.
    assert_trees_close(state.inner_state, clean_state, rtol=0, atol=0)
    kept = jax.tree.map(lambda x: x[np.array([i not in (3, 4, 5, 6, 20) for i in range(30)])], ours)
    assert_trees_close(kept, clean, rtol=0, atol=0)
    assert int(state.total_skips) == 5 and int(state.notfinite_count) == 0 and bool(state.last_finite)
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        jopt.skip_non_finite(_adam(0.1), max_consecutive_errors=-1)


def test_skip_non_finite_keeps_training_finite():
    prob = quadratic()
    poisoned = prob._replace(loss=lambda p: prob.loss(p) * jnp.where(p["x"][0] > 0.5, jnp.nan, 1.0))
    ps = trajectory(jopt.skip_non_finite(_adam(0.1)), poisoned, 50)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(ps))


# --------------------------------------------------------------------------- averaging


def _run_with_state(tx, prob, steps):
    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(prob.loss)(p), s, p)
            p = jopt.apply_updates(p, u)
            return (p, s), p

        (_, s), ps = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return ps, s

    return run(prob.params)


def test_ema_and_polyak_params_against_numpy():
    prob = mlp()
    decay = lambda t: jnp.minimum(0.95, (1.0 + t) / (10.0 + t))  # noqa: E731 (warm-up EMA)
    plain, _ = _run_with_state(_adam(0.02), prob, 100)
    for make in ("ema", "polyak"):
        avg_tx = jopt.ema_params(decay) if make == "ema" else jopt.polyak_params()
        ps, state = _run_with_state(jopt.chain(_adam(0.02), avg_tx), prob, 100)
        assert_trees_close(ps, plain, rtol=0, atol=0)  # updates pass through unchanged
        for path in [("layer0", "w"), ("layer2", "b")]:
            iterates = np.concatenate(
                [np.asarray(prob.params[path[0]][path[1]])[None], np.asarray(ps[path[0]][path[1]])]
            )
            if make == "ema":
                avg = iterates[0].astype(np.float64)
                for t in range(1, len(iterates)):
                    beta = min(0.95, t / (9.0 + t))
                    avg = beta * avg + (1 - beta) * iterates[t]
            else:
                avg = iterates.astype(np.float64).mean(axis=0)
            np.testing.assert_allclose(
                jopt.averaged_params(state)[path[0]][path[1]], avg, rtol=1e-5, atol=1e-6
            )


def test_ema_update_helper_and_state_lookup():
    avg = {"w": jnp.zeros(3, jnp.bfloat16).astype(jnp.float32)}
    ref = np.zeros(3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.normal(size=3).astype(np.float32)
        avg = jax.jit(jopt.ema_update)(avg, {"w": jnp.asarray(p, jnp.bfloat16)}, jnp.float32(0.9))
        ref = 0.9 * ref + 0.1 * p.astype(jnp.bfloat16).astype(np.float64)
    np.testing.assert_allclose(avg["w"], ref, rtol=1e-5, atol=1e-6)
    params = {"w": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(1, jnp.bfloat16)}
    nested = jopt.partition(
        {"x": jopt.chain(_adam(0.1), jopt.ema_params(0.99)), "y": jopt.identity()}, {"w": "x", "b": "y"}
    )
    state = nested.init(params)
    assert jopt.averaged_params(state)["w"].dtype == jnp.float32
    with pytest.raises(ValueError, match="no ema_params"):
        jopt.averaged_params(_adam(0.1).init(params))
    two = jopt.chain(jopt.ema_params(0.9), jopt.polyak_params()).init(params)
    with pytest.raises(ValueError, match="2 averages"):
        jopt.averaged_params(two)
    with pytest.raises(ValueError, match="decay"):
        jopt.ema_params(1.5)
