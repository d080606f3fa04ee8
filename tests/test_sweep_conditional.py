"""Conditional search spaces: branches with their own sub-spaces (jopt.sweep.conditional)."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt import sweep
from jopt.sweep.bayes import from_unit, propose, to_unit
from jopt.sweep.conditional import BranchKey
from jopt.sweep.history import decode_config, encode_config
from jopt.sweep.space import Hyperparams, SearchSpaceError
from tests.sweep_helpers import DATA, _loss

STEPS = 6


def branch_space(**extra):
    """adam: {learning_rate (shared), b1}; sgd: {learning_rate (shared), momentum}."""
    lr = sweep.loguniform(1e-3, 3e-1)
    return sweep.Space(
        optimizer=sweep.choice(
            {
                "adam": {"learning_rate": lr, "b1": sweep.uniform(0.5, 0.95)},
                "sgd": {"learning_rate": lr, "momentum": sweep.uniform(0.0, 0.9)},
            }
        ),
        **extra,
    )


def _transform(hp):
    """The optimizer of the branch: reads only the branch's names."""
    if hp["optimizer"] == "adam":
        inner = jopt.scale_by_adam(b1=hp["b1"])
    else:
        inner = jopt.trace(decay=hp["momentum"])
    return jopt.chain(inner, jopt.scale_by_learning_rate(hp["learning_rate"]))


def make_task() -> sweep.Task:
    def init(hp, key):
        params = {"w": 0.1 * jax.random.normal(key, (8, 3)), "b": jnp.zeros(3)}
        return params, _transform(hp).init(params)

    def step(hp, state, key):
        params, opt_state = state
        idx = jax.random.randint(key, (16,), 0, DATA.x_train.shape[0])
        loss, g = jax.value_and_grad(_loss)(params, DATA.x_train[idx], DATA.y_train[idx])
        u, opt_state = _transform(hp).update(g, opt_state, params)
        return (jopt.apply_updates(params, u), opt_state), {"loss": loss}

    def evaluate(hp, state):
        return _loss(state[0], DATA.x_val, DATA.y_val)

    return sweep.Task(init, step, evaluate)


TASK = make_task()
SPACE = branch_space()
# the same configurations in a plain space: the branch a static choice, every name a range
PLAIN = sweep.Space(
    optimizer=sweep.choice(["adam", "sgd"], static=True),
    learning_rate=sweep.loguniform(1e-3, 3e-1),
    b1=sweep.uniform(0.5, 0.95),
    momentum=sweep.uniform(0.0, 0.9),
)


def _active_ok(result, space=SPACE):
    for t in result.trials:
        branch = t.hyperparams["optimizer"]
        own = {"adam": "b1", "sgd": "momentum"}[branch]
        assert space.active_names(t.hyperparams) == ["optimizer", "learning_rate", own]
        assert set(space.active_config(t.hyperparams)) == {"optimizer", "learning_rate", own}


@pytest.fixture(scope="module")
def grid_result():
    return sweep.run(TASK, SPACE, method="grid", grid_points=2, steps=STEPS, eval_every=3, seed=1)


def test_grid_covers_each_branch_with_one_group_per_branch(grid_result):
    r = grid_result
    assert len(r.trials) == 8  # 2 branches x (2 learning rates x 2 own values)
    assert sorted(t.hyperparams["optimizer"] for t in r.trials) == ["adam"] * 4 + ["sgd"] * 4
    assert r.stats["groups"] == 2
    assert r.stats["compiles"] <= 2 * 2  # one init and one segment program per branch
    _active_ok(r)
    assert all(t.status == "completed" and np.isfinite(t.objective) for t in r.trials)


@pytest.mark.filterwarnings("ignore:the task never reads")  # the plain space's other-branch names
def test_trial_equals_the_same_configuration_in_a_plain_space(grid_result):
    for t in (grid_result.trials[1], grid_result.trials[6]):
        config = SPACE.validate_config(t.hyperparams)  # results hold the active names: add placeholders
        plain = sweep.run(TASK, PLAIN, [config], trial_ids=[t.trial], steps=STEPS, eval_every=3, seed=1)
        np.testing.assert_allclose(plain.trials[0].objective, t.objective, rtol=1e-6)


def test_sobol_samples_both_branches_with_placeholders():
    r = sweep.run(TASK, SPACE, 6, method="sobol", steps=STEPS, eval_every=3, seed=2)
    assert {t.hyperparams["optimizer"] for t in r.trials} == {"adam", "sgd"}
    assert r.stats["groups"] == 2
    _active_ok(r)
    for t in r.trials:  # results show the active names only; the program got the placeholders
        inactive = set(SPACE) - set(SPACE.active_names(t.hyperparams))
        assert inactive and not inactive & set(t.hyperparams)
        full = SPACE.validate_config(t.hyperparams)
        assert all(full[n] == SPACE.placeholder(n) for n in inactive)


def test_qualified_names_are_read_by_their_short_name():
    # different learning-rate ranges per branch: "adam.learning_rate" and "sgd.learning_rate",
    # which the task reads as hp["learning_rate"]
    space = sweep.Space(
        optimizer=sweep.choice(
            {
                "adam": {"learning_rate": sweep.loguniform(1e-3, 1e-2), "b1": sweep.uniform(0.5, 0.95)},
                "sgd": {"learning_rate": sweep.loguniform(1e-1, 3e-1), "momentum": sweep.uniform(0.0, 0.9)},
            }
        )
    )
    assert space.aliases == {"learning_rate": ("adam.learning_rate", "sgd.learning_rate")}
    r = sweep.run(TASK, space, 6, method="random", steps=STEPS, eval_every=3, seed=3)
    assert {t.hyperparams["optimizer"] for t in r.trials} == {"adam", "sgd"}
    for t in r.trials:
        branch = t.hyperparams["optimizer"]
        own = {"adam": "b1", "sgd": "momentum"}[branch]
        active = space.active_config(t.hyperparams)
        assert list(active) == ["optimizer", f"{branch}.learning_rate", own]
        low, high = {"adam": (1e-3, 1e-2), "sgd": (1e-1, 3e-1)}[branch]
        assert low <= active[f"{branch}.learning_rate"] <= high
    firsts = {t.hyperparams["optimizer"]: t for t in reversed(r.trials)}
    for branch, t in firsts.items():  # the same trial in the plain space
        own = {"adam": "b1", "sgd": "momentum"}[branch]
        active = space.active_config(t.hyperparams)
        plain_cfg = {"optimizer": branch, "learning_rate": active[f"{branch}.learning_rate"],
                     "b1": 0.7, "momentum": 0.4, own: active[own]}  # fmt: skip
        with pytest.warns(UserWarning, match="never reads"):  # the plain space's other branch
            plain = sweep.run(
                TASK, PLAIN, [plain_cfg], trial_ids=[t.trial], steps=STEPS, eval_every=3, seed=3
            )
        np.testing.assert_allclose(plain.trials[0].objective, t.objective, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:the task never reads")  # check_task of one group: see the report
def test_bayesian_over_branches():
    r = sweep.bayesian(TASK, SPACE, 6, batch=2, initial=4, steps=STEPS, eval_every=3, seed=0,
                       num_candidates=64, fit_steps=20, restarts=1)  # fmt: skip
    assert len(r.trials) == 6 and r.stats["rounds"] >= 2
    assert r.stats["groups"] == len({t.hyperparams["optimizer"] for t in r.trials})
    _active_ok(r)


def test_names_validation_and_placeholders():
    space = sweep.Space(
        opt=sweep.choice(
            {
                "adam": {"lr": sweep.loguniform(1e-4, 1e-2), "b1": sweep.uniform(0.8, 0.99)},
                "sgd": {"lr": sweep.loguniform(1e-3, 1.0), "nesterov": True},
                "none": None,
            }
        ),
        width=sweep.choice([4, 8], static=True),
    )
    assert list(space) == ["opt", "adam.lr", "sgd.lr", "b1", "nesterov", "width"]
    assert space.static_names == ("opt", "nesterov", "width")
    assert space.condition_of("b1") == ("opt", ("adam",)) and space.condition_of("width") is None
    cfg = space.validate_config({"opt": "sgd", "lr": 0.5, "width": 4})  # short name, placeholders
    assert isinstance(cfg["opt"], BranchKey) and cfg["sgd.lr"] == 0.5 and cfg["b1"] == space.placeholder("b1")
    assert space.active_config(cfg) == {"opt": "sgd", "sgd.lr": 0.5, "nesterov": True, "width": 4}
    assert space.validate_config(cfg) == cfg  # a full configuration (placeholders) is accepted
    assert space.active_names({"opt": "none", "width": 8}) == ["opt", "width"]
    with pytest.raises(SearchSpaceError, match=r"b1=0.9 is inactive with opt='sgd'.*\['adam'\]"):
        space.validate_config({"opt": "sgd", "lr": 0.5, "b1": 0.9, "width": 4})
    with pytest.raises(SearchSpaceError, match=r"opt='rmsprop' is not one of the branches"):
        space.validate_config({"opt": "rmsprop", "width": 4})
    with pytest.raises(SearchSpaceError, match=r"lacks hyperparameter 'sgd.lr'"):
        space.validate_config({"opt": "sgd", "width": 4})
    with pytest.raises(SearchSpaceError, match=r"'lr' is not a hyperparameter of branch opt='none'"):
        space.validate_config({"opt": "none", "lr": 0.1, "width": 4})
    with pytest.raises(SearchSpaceError, match=r"gives both 'lr' and 'adam.lr'"):
        space.validate_config({"opt": "adam", "lr": 0.1, "adam.lr": 0.1, "b1": 0.9, "width": 4})
    with pytest.raises(SearchSpaceError, match="not in the space"):
        space.validate_config({"opt": "adam", "lr": 0.001, "b1": 0.9, "width": 4, "foo": 1})
    # JSON round trip (checkpoints) and pickling keep the branch marker
    enc = encode_config(space, cfg)
    assert isinstance(decode_config(space, enc)["opt"], BranchKey)
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and isinstance(back["opt"], BranchKey) and back["opt"].inactive == cfg["opt"].inactive


def test_hyperparams_hide_inactive_names_and_alias_short_names():
    space = sweep.Space(
        opt=sweep.choice({"adam": {"lr": sweep.uniform(0.1, 0.2)}, "sgd": {"lr": sweep.uniform(1.0, 2.0)}})
    )
    hp = Hyperparams(space.validate_config({"opt": "sgd", "lr": 1.5}))
    assert hp["lr"] == 1.5 and hp["sgd.lr"] == 1.5 and list(hp) == ["opt", "sgd.lr"] and len(hp) == 2
    assert "adam.lr" not in hp and hp.accessed == {"sgd.lr"}
    with pytest.raises(KeyError, match=r"'adam.lr' is inactive with opt='sgd'"):
        hp["adam.lr"]


def test_reading_another_branch_fails_before_compiling():
    def init(hp, key):
        return {"w": jnp.zeros(()) + hp["momentum"]}  # momentum is only sgd's

    task = sweep.Task(init, lambda hp, s, k: (s, {"loss": s["w"]}), lambda hp, s: s["w"])
    with pytest.raises(SearchSpaceError, match=r"task.init: .*'momentum' is inactive with optimizer='adam'"):
        sweep.run(task, SPACE, [{"optimizer": "adam", "learning_rate": 0.01, "b1": 0.9}], steps=2)


@pytest.mark.parametrize(
    "branches, match",
    [
        ({}, r"opt: a choice of branches needs at least one branch"),
        ({1: {}}, r"opt: branch keys must be identifier strings, got 1"),
        ({"a": [1, 2]}, r"opt\['a'\]: a branch's sub-space must be a dict"),
        ({"a": {"x": sweep.uniform(1.0, 0.0)}}, r"opt\['a'\].x: empty or inverted range"),
        ({"a": {"x": sweep.uniform}}, r"opt\['a'\].x: got uniform itself"),
        ({"a": {"fold": 1}}, r"opt\['a'\].fold: the name 'fold' is reserved"),
        ({"a": {"x": sweep.choice({"b": {}})}}, r"opt\['a'\].x: conditional choices cannot nest"),
        ({"a": {"y": sweep.uniform(0.0, 1.0)}}, r"opt: the name 'y' is already in the space"),
        (
            {"a": {"y": sweep.uniform(0.0, 1.0)}, "b": {"y": sweep.uniform(0.0, 2.0)}},
            r"opt: the short name 'y' of \['a.y', 'b.y'\] is already in the space",
        ),
        (
            {"a": {"x": sweep.uniform(0.0, 1.0)}, "b": {"x": sweep.integer(0, 3)}},
            r"opt: 'x' is declared by branches \['a', 'b'\] with different kinds",
        ),
    ],
)
def test_bad_conditional_specs_name_the_dimension(branches, match):
    with pytest.raises(ValueError, match=match):
        sweep.Space(y=sweep.uniform(0.0, 1.0), opt=sweep.choice(branches))


def test_bad_static_flag():
    with pytest.raises(ValueError, match=r"opt: a choice of branches is static"):
        sweep.Space(opt=sweep.choice({"a": None}, static=False))


def test_samplers_without_engine():
    space = branch_space(width=sweep.choice([1, 2], static=True))
    grid = sweep.sample(space, "grid", grid_points=3)
    assert len(grid) == 2 * (3 * 3 + 3 * 3)
    for method in ("random", "sobol", "halton"):
        configs = sweep.sample(space, method, 16, seed=0)
        assert {c["optimizer"] for c in configs} == {"adam", "sgd"}
        assert all(space.validate_config(c) == c for c in configs)
    # the GP encoding: inactive coordinates are constant; decoding restores placeholders
    x = to_unit(space, configs)
    assert np.allclose(to_unit(space, from_unit(space, x)), x)
    new = propose(space, configs, [c["learning_rate"] for c in configs], k=3, seed=0,
                  num_candidates=64, fit_steps=20, restarts=1)  # fmt: skip
    assert len(new) == 3 and all(space.validate_config(c) == c for c in new)


def test_optuna_suggests_the_branch_then_only_its_names():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    r = sweep.optuna_search(TASK, SPACE, 6, batch=3, study=study, steps=STEPS, eval_every=3, progress=False)
    assert {t.hyperparams["optimizer"] for t in r.trials} == {"adam", "sgd"}
    for t in study.trials:  # Optuna saw the conditional structure: only the chosen branch's names
        assert set(t.params) == set(SPACE.active_names(t.params))
    for t in r.trials:
        assert set(t.hyperparams) == set(SPACE.active_names(t.hyperparams))
    configs = [SPACE.validate_config(t.hyperparams) for t in r.trials]
    same = sweep.run(TASK, SPACE, configs, trial_ids=[t.trial for t in r.trials], steps=STEPS, eval_every=3,
                     progress=False)  # fmt: skip
    for a, b in zip(r.trials, same.trials, strict=True):
        np.testing.assert_allclose(a.objective, b.objective, rtol=1e-6)
