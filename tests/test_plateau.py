"""Reduce-on-plateau: the transform vs optax.contrib, the stateful schedule vs NumPy, traced arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from jopt.schedules import reduce_on_plateau, scale_by_plateau
from tests.reference import quadratic, trajectory

F32 = np.float32


def _losses():
    """Improves, plateaus (with noise), improves again, plateaus, then a noisy slow decline."""
    rng = np.random.default_rng(0)
    parts = [
        np.linspace(1.0, 0.5, 8),
        0.5 + 0.002 * rng.random(14),
        np.linspace(0.49, 0.2, 6),
        np.full(12, 0.2),
        0.2 - 0.0005 * np.arange(20) + 0.01 * rng.random(20),
    ]
    return np.concatenate(parts).astype(F32)


LOSSES = _losses()
PARAMS = {"w": jnp.ones(3), "b": jnp.ones((2, 2))}
GRADS = jax.tree.map(lambda x: jnp.full_like(x, 2.0), PARAMS)
FIELDS = ("scale", "best_value", "plateau_count", "cooldown_count", "count", "avg_value")


def run(tx, losses=LOSSES):
    """States and updates after each loss, from one scan."""

    def step(state, loss):
        updates, state = tx.update(GRADS, state, PARAMS, value=loss)
        return state, (state, updates)

    _, (states, updates) = jax.lax.scan(step, tx.init(PARAMS), jnp.asarray(losses))
    return states, updates


def np_plateau(
    losses, factor=0.1, patience=10, rtol=1e-4, atol=0.0, cooldown=0, accumulation_size=1, min_scale=0.0
):
    """NumPy (float32) transcription of the plateau rule; the scale after each loss."""
    scale, best, plateau, cool, count, avg = F32(1), F32(np.inf), 0, 0, 0, F32(0)
    scales = []
    for loss in losses:
        avg = F32((F32(count) * avg + F32(loss)) / F32(count + 1))
        count += 1
        if count >= accumulation_size:
            # best - rtol * |best| - atol, in optax's arithmetic (1 -/+ rtol in double precision)
            shrunk = F32(1 - rtol) * best if best >= 0 else F32(1 + rtol) * best
            if avg < shrunk - F32(atol):
                best, plateau = avg, 0
            else:
                plateau += 1
            if cool > 0:
                plateau, cool = 0, cool - 1
            elif plateau >= patience:
                scale, plateau, cool = max(F32(scale * F32(factor)), F32(min_scale)), 0, cooldown
            count, avg = 0, F32(0)
        scales.append(scale)
    return np.array(scales, F32)


CONFIGS = [
    dict(factor=0.5, patience=3),
    dict(factor=0.5, patience=2, cooldown=3),
    dict(factor=0.1, patience=2, accumulation_size=4),
    dict(factor=0.3, patience=1, min_scale=0.05),
    dict(factor=0.5, patience=2, rtol=0.0, atol=0.02),
    dict(factor=0.8, patience=4, rtol=0.05, cooldown=1, accumulation_size=2),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_scale_by_plateau_matches_optax_state_at_every_step(cfg):
    ours, our_updates = jax.jit(lambda: run(scale_by_plateau(**cfg)))()
    theirs, their_updates = jax.jit(lambda: run(optax.contrib.reduce_on_plateau(**cfg)))()
    for field in FIELDS:  # optax's bits (positive losses: the same threshold arithmetic)
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field), err_msg=field)
    for ours_u, theirs_u in zip(jax.tree.leaves(our_updates), jax.tree.leaves(their_updates), strict=True):
        np.testing.assert_array_equal(ours_u, theirs_u)
    # The loss sequence really exercises the rule: the scale was reduced at least twice.
    assert len(np.unique(np.asarray(ours.scale))) >= 3
    np.testing.assert_allclose(ours.scale, np_plateau(LOSSES, **cfg), rtol=1e-6)
    np.testing.assert_array_equal(ours.hyperparams["plateau_scale"], ours.scale)


@pytest.mark.parametrize("make", [scale_by_plateau, lambda **kw: reduce_on_plateau(1.0, **kw)])
def test_loss_stuck_at_a_negative_value_is_a_plateau(make):
    """A loss stuck at -1 is a plateau exactly like one stuck at +1 (the relative test uses |best|).

    optax's threshold (1 - rtol) * best lies above a negative best, so there a constant -1 counts
    as an improvement every time and the scale never drops.
    """
    cfg = dict(factor=0.5, patience=2, rtol=1e-4)
    if make is scale_by_plateau:
        tx = scale_by_plateau(**cfg)
    else:
        tx = jopt.scale_by_learning_rate(make(**cfg))
    stuck = np.ones(9, F32)
    scales = {}
    for sign in (1.0, -1.0):
        states, updates = jax.jit(lambda losses: run(tx, losses))(sign * stuck)
        scales[sign] = np.abs(np.asarray(updates["w"][:, 0])) / 2.0  # |update| = 2 * scale (* lr = 1)
        if make is scale_by_plateau:
            np.testing.assert_array_equal(states.best_value[-1], sign)
    np.testing.assert_array_equal(scales[-1.0], scales[1.0])
    np.testing.assert_array_equal(scales[-1.0], [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625])


@pytest.mark.parametrize("shift", [-1.0, -0.35])
def test_negative_and_sign_changing_losses_follow_the_relative_rule(shift):
    """Improvements are measured relative to |best| on both sides of zero."""
    cfg = dict(factor=0.5, patience=2, rtol=0.01, atol=0.0)
    losses = (LOSSES + shift).astype(F32)  # all negative, or crossing zero
    states, _ = jax.jit(lambda: run(scale_by_plateau(**cfg), losses))()
    np.testing.assert_array_equal(states.scale, np_plateau(losses, **cfg))
    assert len(np.unique(np.asarray(states.scale))) >= 3
    # steady relative improvements larger than rtol are never a plateau, small ones always are
    for step, expect_reduced in ((0.02, False), (0.002, True)):
        declining = -((1.0 + step) ** np.arange(12, dtype=np.float64))
        states, _ = jax.jit(lambda d=declining: run(scale_by_plateau(**cfg), d.astype(F32)))()
        assert (float(states.scale[-1]) < 1.0) == expect_reduced, step


@pytest.mark.parametrize("cfg", CONFIGS[:4], ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_stateful_schedule_reduces_learning_rate_inside_chain(cfg):
    lr = 0.05
    tx = jopt.chain(jopt.identity(), jopt.scale_by_learning_rate(reduce_on_plateau(lr, **cfg)))
    expected_lr = lr * np_plateau(LOSSES, **cfg)
    state = tx.init(PARAMS)
    np.testing.assert_allclose(jopt.current_hyperparams(state)["learning_rate"], lr)
    update = jax.jit(lambda s, loss: tx.update(GRADS, s, PARAMS, value=loss))
    for t, loss in enumerate(LOSSES):
        updates, state = update(state, loss)
        np.testing.assert_allclose(
            jopt.current_hyperparams(state)["learning_rate"], expected_lr[t], rtol=1e-6
        )
        np.testing.assert_allclose(updates["w"], -2.0 * expected_lr[t] * np.ones(3), rtol=1e-6)
    assert expected_lr[-1] < lr  # the run did reduce the rate


def test_adam_with_plateau_learning_rate_matches_optax_chain():
    prob = quadratic()
    kwargs = dict(factor=0.5, patience=3, rtol=1e-3)
    ours = trajectory(jopt.adam(reduce_on_plateau(0.3, **kwargs)), prob, 150, pass_value=True)
    theirs = optax.chain(optax.adam(0.3), optax.contrib.reduce_on_plateau(**kwargs))
    ref = trajectory(theirs, prob, 150, pass_value=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), ours, ref)


def test_plateau_on_scheduled_base_rate():
    base = jopt.schedules.linear(0.1, 0.01, 30)
    tx = jopt.scale_by_learning_rate(reduce_on_plateau(base, factor=0.5, patience=2))
    states, _ = jax.jit(lambda: run(tx))()
    lrs = np.asarray(states.hyperparams["learning_rate"])
    expected = np.asarray(jax.vmap(base)(jnp.arange(len(LOSSES)))) * np_plateau(
        LOSSES, factor=0.5, patience=2
    )
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    first = jopt.scale_by_learning_rate(reduce_on_plateau(base)).init(PARAMS)
    np.testing.assert_allclose(jopt.current_hyperparams(first)["learning_rate"], 0.1)


def test_updates_keep_dtype():
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    tx = scale_by_plateau(factor=0.5, patience=1)
    state = tx.init(params)
    for loss in (1.0, 1.0, 1.0):
        updates, state = tx.update(params, state, params, value=loss)
    assert updates["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(updates["w"].astype(jnp.float32), 0.25)


# --------------------------------------------------------------------------- traced arguments

SWEEPS = {
    "factor": [0.1, 0.5, 0.9],
    "patience": [1, 2, 5],
    "cooldown": [0, 2, 4],
    "accumulation_size": [1, 2, 3],
    "min_scale": [0.0, 0.2, 0.6],
    "rtol": [0.0, 1e-3, 0.05],
    "atol": [0.001, 0.1],
}
BASE = dict(factor=0.5, patience=2, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("arg", list(SWEEPS))
def test_vmap_over_each_argument_equals_python_loop(arg):
    sweep = SWEEPS[arg]

    def both(v):
        kw = {**BASE, arg: v}
        states, _ = run(scale_by_plateau(**kw))
        lr_states, lr_updates = run(jopt.scale_by_learning_rate(reduce_on_plateau(0.1, **kw)))
        return states, lr_states.hyperparams["learning_rate"], lr_updates["w"]

    batched = jax.jit(jax.vmap(both))(jnp.asarray(sweep))
    for i, v in enumerate(sweep):
        states, lrs, updates = jax.jit(lambda v=v: both(v))()
        for field in FIELDS:
            np.testing.assert_allclose(getattr(batched[0], field)[i], getattr(states, field), err_msg=field)
        np.testing.assert_allclose(batched[1][i], lrs, rtol=1e-7)
        np.testing.assert_allclose(batched[2][i], updates, rtol=1e-7)
        np.testing.assert_allclose(states.scale, np_plateau(LOSSES, **{**BASE, arg: v}), rtol=1e-6)
    # the sweep changes the outcome (otherwise the test would prove little)
    assert len({tuple(np.asarray(s)) for s in batched[0].scale}) > 1


def test_optax_fails_with_traced_factor_and_patience_but_jopt_does_not():
    factors = jnp.array([0.1, 0.5])
    with pytest.raises(TypeError):  # jax's ConcretizationTypeError family
        jax.vmap(lambda f: run(optax.contrib.reduce_on_plateau(factor=f))[0].scale)(factors)
    ours = jax.vmap(lambda f, p: run(scale_by_plateau(factor=f, patience=p))[0].scale)(
        factors, jnp.array([2, 3])
    )
    for i, (f, p) in enumerate([(0.1, 2), (0.5, 3)]):
        theirs = run(optax.contrib.reduce_on_plateau(factor=f, patience=p))[0].scale
        np.testing.assert_allclose(ours[i], theirs, rtol=1e-6)


def test_jit_compiles_once_for_different_patience_values():
    traces = []

    @jax.jit
    def final_lr(patience, factor):
        traces.append(1)
        states, _ = run(jopt.scale_by_learning_rate(reduce_on_plateau(1.0, patience=patience, factor=factor)))
        return states.hyperparams["learning_rate"][-1]

    for patience in (1, 2, 3, 7):
        got = final_lr(jnp.int32(patience), jnp.float32(0.5))
        np.testing.assert_allclose(got, np_plateau(LOSSES, factor=0.5, patience=patience)[-1], rtol=1e-6)
    assert len(traces) == 1


# --------------------------------------------------------------------------- errors


def test_missing_value_raises_type_error_naming_value():
    tx = scale_by_plateau()
    state = tx.init(PARAMS)
    with pytest.raises(TypeError, match="`value`"):
        tx.update(GRADS, state, PARAMS)
    chained = jopt.chain(jopt.identity(), jopt.scale_by_learning_rate(reduce_on_plateau(0.1)))
    with pytest.raises(TypeError, match="`value`"):
        chained.update(GRADS, chained.init(PARAMS), PARAMS)
    opt = jopt.adam(reduce_on_plateau(1e-3))
    with pytest.raises(TypeError, match="`value`"):
        opt.update(GRADS, opt.init(PARAMS), PARAMS)
    # a misspelt extra argument is passed on (as optax does) with a warning; `value` is still missing
    with pytest.warns(UserWarning, match="did you mean 'value'"), pytest.raises(TypeError, match="`value`"):
        tx.update(GRADS, state, PARAMS, valeu=1.0)


def test_value_must_be_a_scalar():
    tx = scale_by_plateau()
    with pytest.raises(ValueError, match="scalar"):
        tx.update(GRADS, tx.init(PARAMS), PARAMS, value=jnp.ones(3))


def test_stateful_schedule_protocol():
    sched = reduce_on_plateau(0.1, patience=3)
    assert isinstance(sched, jopt.transforms.scaling.StatefulSchedule)
    assert sched.extra_args == frozenset({"value"})
    assert sched.initial_value == 0.1
    lr, state = sched.update(sched.init(), jnp.int32(0), value=1.0)
    np.testing.assert_allclose(lr, 0.1)
    np.testing.assert_allclose(state.best_value, 1.0)
    assert "patience=3" in repr(sched)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(factor=1.0), r"factor must be in \(0, 1\)"),
        (dict(factor=0.0), r"factor must be in \(0, 1\)"),
        (dict(patience=0), r"patience must be in \[1, inf"),
        (dict(patience=2.5), r"patience must be an integer"),
        (dict(cooldown=-1), r"cooldown must be in \[0, inf"),
        (dict(accumulation_size=0), r"accumulation_size must be in \[1, inf"),
        (dict(rtol=1.5), r"rtol must be in \[0, 1\]"),
        (dict(atol=-0.1), r"atol must be in \[0, inf"),
        (dict(rtol=0.0, atol=0.0), r"at least one of rtol and atol"),
        (dict(min_scale=-0.1), r"min_scale must be in \[0, 1\]"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match="scale_by_plateau: " + match):
        scale_by_plateau(**kwargs)
    with pytest.raises(ValueError, match="reduce_on_plateau: " + match):
        reduce_on_plateau(0.1, **kwargs)


def test_bad_learning_rate_raises_value_error():
    with pytest.raises(ValueError, match="learning_rate"):
        reduce_on_plateau(-0.1)
