"""Protocol, chain, extra-argument checking, hyperparameter validation and logging."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt
from tests.reference import assert_trees_close, quadratic, trajectory


def test_chain_of_scale_and_lr_matches_optax_sgd():
    prob = quadratic()
    ours = trajectory(jopt.chain(jopt.scale(1.0), jopt.scale_by_learning_rate(0.1)), prob)
    ref = trajectory(optax.sgd(0.1), prob)
    assert_trees_close(ours, ref)


def test_named_chain_state_is_keyed():
    tx = jopt.named_chain(("decay", jopt.add_decayed_weights(0.1)), ("lr", jopt.scale_by_learning_rate(0.5)))
    state = tx.init({"w": jnp.ones(2)})
    assert set(state) == {"decay", "lr"}
    with pytest.raises(ValueError, match="unique"):
        jopt.named_chain(("a", jopt.identity()), ("a", jopt.identity()))


def test_typo_in_extra_argument_warns_against_the_chains_own_names():
    tx = jopt.chain(jopt.identity(), jopt.scale_by_learning_rate(jopt.reduce_on_plateau(0.1)))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    with pytest.warns(UserWarning, match="did you mean 'value'"), pytest.raises(TypeError, match="value"):
        tx.update(params, state, params, valeu=1.0)  # warns, then the plateau asks for the loss
    # The declared name passes without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tx.update(params, state, params, value=1.0)


def test_unknown_extra_arguments_are_ignored_like_optax():
    # optax code passes extra keyword arguments freely; a transform that declares none ignores them,
    # whatever other transforms were built earlier in the process.
    jopt.scale_by_learning_rate(jopt.reduce_on_plateau(0.1))
    tx = jopt.adam(0.1)
    params = {"w": jnp.ones(2)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        u, _ = tx.update(params, tx.init(params), params, valeu=1.0, grad=params, whatever=3)
    np.testing.assert_allclose(u["w"], -0.1 * jnp.ones(2), rtol=1e-5)


def test_stateless_transforms_accept_none_state_like_optax():
    u = {"w": jnp.full(4, 2.0)}
    ours, _ = jopt.clip_by_global_norm(1.0).update(u, None)
    ref, _ = optax.clip_by_global_norm(1.0).update(u, None)
    np.testing.assert_array_equal(ours["w"], ref["w"])


def test_transformation_unpacks_as_init_update_pair():
    init, update = jopt.adam(0.1)
    params = {"w": jnp.ones(2)}
    u, _ = update(params, init(params), params)
    assert u["w"].shape == (2,)
    assert jopt.sgd(0.1).extra_args == frozenset()
    assert "value" in jopt.sgd(jopt.reduce_on_plateau(0.1)).extra_args


def test_extra_args_class_follows_optax():
    # jopt-built transforms are GradientTransformationExtraArgs; a bare pair written by hand is not until
    # wrapped, as in optax (optax's base_test::test_isinstance).
    bare = jopt.GradientTransformation(lambda p: {}, lambda u, s, p=None: (u, s))
    assert not isinstance(bare, jopt.GradientTransformationExtraArgs)
    assert isinstance(jopt.adam(0.1), jopt.GradientTransformationExtraArgs)
    assert isinstance(jopt.chain(bare, bare), jopt.GradientTransformationExtraArgs)
    wrapped = jopt.with_extra_args_support(bare)
    assert isinstance(wrapped, jopt.GradientTransformationExtraArgs)
    assert wrapped.update({"w": 1.0}, {}, ignored="x")[0] == {"w": 1.0}


def test_hand_written_extra_args_member_gets_its_arguments_in_combinators():
    # update(..., *, arg, **kw): the required keyword-only `arg` reaches it through chain and partition,
    # and (having **kw) so does every other extra argument; a member without **kw gets only its names.
    seen = []

    def update_with_arg(updates, state, params=None, *, arg, **extra):
        seen.append((arg, sorted(extra)))
        return updates, state

    def update_no_kwargs(updates, state, params=None, *, arg):
        seen.append((arg, []))
        return updates, state

    with_arg = jopt.GradientTransformationExtraArgs(lambda p: (), update_with_arg)
    strict = jopt.GradientTransformation(lambda p: (), update_no_kwargs)
    params = ({"u": jnp.ones(1)}, {"v": jnp.ones(1)})
    for tx in (
        jopt.chain(jopt.sgd(0.1), with_arg, strict),
        jopt.partition({"a": strict, "b": with_arg}, ("a", "b")),
    ):
        seen.clear()
        tx.update(params, tx.init(params), arg=1, other=2)
        assert sorted(seen) == [(1, []), (1, ["other"])]
        with pytest.raises(TypeError, match="arg"):
            tx.update(params, tx.init(params))


def test_stateless_builder_transforms_ignore_the_state_they_are_given_like_optax():
    # optax's add_decayed_weights ignores its state; jopt's starts from its initial state instead.
    w = {"w": jnp.ones(2)}
    u, _ = jopt.add_decayed_weights(0.1).update(w, 0, w)
    np.testing.assert_array_equal(u["w"], optax.add_decayed_weights(0.1).update(w, 0, w)[0]["w"])


def test_optax_transform_inside_jopt_chain_and_back():
    prob = quadratic()
    ours = trajectory(jopt.chain(optax.scale_by_adam(), jopt.scale_by_learning_rate(0.05)), prob)
    mixed = trajectory(optax.chain(jopt.chain(optax.scale_by_adam()), optax.scale(-0.05)), prob)
    ref = trajectory(optax.adam(0.05), prob)
    assert_trees_close(ours, ref)
    assert_trees_close(mixed, ref)


def test_learning_rate_readable_from_state_and_schedule_counts():
    tx = jopt.chain(jopt.identity(), jopt.scale_by_learning_rate(lambda t: 0.1 / (1.0 + t)))
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(params, state, params)
    np.testing.assert_allclose(jopt.current_hyperparams(state)["learning_rate"], 0.1 / 3.0, rtol=1e-6)


def test_duplicate_hyperparam_names_are_qualified():
    tx = jopt.chain(jopt.scale(jnp.asarray(2.0)), jopt.scale(jnp.asarray(3.0)))
    hp = jopt.current_hyperparams(tx.init({"w": jnp.ones(1)}))
    assert set(hp) == {"0/step_size", "1/step_size"}


@pytest.mark.parametrize("bad", [-0.1, float("nan"), np.array([0.1, -1.0])])
def test_bad_learning_rate_raises_value_error_naming_argument(bad):
    with pytest.raises(ValueError, match="learning_rate"):
        jopt.scale_by_learning_rate(bad)


def test_traced_learning_rate_is_not_validated_and_vmaps():
    params = {"w": jnp.ones(3)}

    def step(lr):
        tx = jopt.scale_by_learning_rate(lr)
        u, _ = tx.update(params, tx.init(params), params)
        return u["w"]

    lrs = jnp.array([0.0, 0.1, 1.0])
    np.testing.assert_allclose(jax.vmap(step)(lrs), -lrs[:, None] * jnp.ones((3, 3)))


def test_apply_updates_keeps_dtype_and_skips_none():
    params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2)}
    new = jopt.apply_updates(params, {"a": jnp.full(2, 0.5, jnp.float32), "b": None})
    assert new["a"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(new["b"], params["b"])
    np.testing.assert_allclose(new["a"].astype(jnp.float32), 1.5)


def test_apply_updates_keeps_none_parameter_leaves():
    # Regression: a None parameter leaf (e.g. an absent bias) used to crash apply_updates.
    new = jopt.apply_updates({"w": jnp.ones(2), "bias": None}, {"w": jnp.ones(2), "bias": None})
    assert new["bias"] is None
    np.testing.assert_array_equal(new["w"], 2.0)
    assert jax.tree.structure(new, is_leaf=lambda x: x is None) == jax.tree.structure(
        optax.apply_updates({"w": jnp.ones(2), "bias": None}, {"w": jnp.ones(2), "bias": None}),
        is_leaf=lambda x: x is None,
    )


@pytest.mark.parametrize("bad", ["0.001", b"0.1", ["0.1"]])
def test_string_learning_rate_raises_value_error_naming_it(bad):
    # Regression: jopt.adam("0.001") gave a JAX TypeError from inside the update.
    with pytest.raises(ValueError, match="learning_rate must be a number"):
        jopt.adam(bad)


def test_decoupled_weight_decay_with_mask():
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    tx = jopt.add_decayed_weights(0.5, mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
    u, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    np.testing.assert_allclose(u["w"], 0.5)
    np.testing.assert_allclose(u["b"], 0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        jopt.add_decayed_weights(-1.0)


def test_constant_hyperparams_cost_no_state_leaves():
    """Python-number hyperparameters are not stored: the state has no more leaves than optax's + 1."""
    import optax

    params = {f"p{i}": jnp.ones((4, 4)) for i in range(5)}
    sched_j = jopt.schedules.warmup_cosine_decay(0.0, 1e-3, 10, 100)
    sched_o = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
    ours = jopt.chain(jopt.clip_by_global_norm(1.0), jopt.adamw(sched_j, weight_decay=1e-4))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched_o, weight_decay=1e-4))
    n_ours = len(jax.tree.leaves(ours.init(params)))
    n_theirs = len(jax.tree.leaves(theirs.init(params)))
    assert n_ours <= n_theirs + 1  # + the logged learning rate
    # arrays (e.g. a sweep's traced values) are stored and readable
    opt = jopt.adamw(1e-3, b1=jnp.float32(0.8))
    state = opt.init(params)
    assert set(jopt.current_hyperparams(state)) == {"b1", "learning_rate"}
    _, state = opt.update(params, state, params)
    np.testing.assert_allclose(jopt.current_hyperparams(state)["b1"], 0.8)
