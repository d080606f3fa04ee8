"""Bayesian optimization: the JAX GP against a NumPy transcription of GP regression, its fit, the
unit-cube encoding, batch proposals on cheap synthetic objectives, and short end-to-end runs of
``bayesian`` on the tiny softmax-regression task and on a task that diverges for large steps.

Float tolerance: the GP runs in float32; against the float64 NumPy reference, posterior means,
variances and the log marginal likelihood agree to rtol 1e-3 / atol 1e-4 on well-conditioned data.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from jopt import sweep
from jopt.sweep import gp
from jopt.sweep.bayes import _targets, bayesian, from_unit, propose, to_unit, unit_columns, warp
from tests.sweep_helpers import SPACE, CompileCounter, make_task

CANDIDATES = 256  # small candidate sets keep the tests fast


# ----------------------------------------------------------------------------- NumPy reference


def np_matern52(a, b, ls, s):
    d = (a[:, None, :] - b[None, :, :]) / ls
    r = np.sqrt(np.sum(d**2, -1))
    return s * (1 + math.sqrt(5) * r + 5 / 3 * r**2) * np.exp(-math.sqrt(5) * r)


def np_posterior(x, y, xs, ls, s, noise):
    k = np_matern52(x, x, ls, s) + noise * np.eye(len(x))
    ks = np_matern52(xs, x, ls, s)
    mean = ks @ np.linalg.solve(k, y)
    cov = np_matern52(xs, xs, ls, s) - ks @ np.linalg.solve(k, ks.T)
    _, logdet = np.linalg.slogdet(k)
    lml = -0.5 * y @ np.linalg.solve(k, y) - 0.5 * logdet - 0.5 * len(x) * math.log(2 * math.pi)
    return mean, cov, lml


def np_map_objective(log_theta, x, y):
    """-(log marginal likelihood + log prior) / n, as gp.fit minimizes it (float64)."""
    d = x.shape[1]
    ls, s, noise = np.exp(log_theta[:d]), np.exp(log_theta[d]), np.exp(log_theta[d + 1])
    lml = np_posterior(x, y, x[:1], ls, s, noise)[2]
    mu = np.array([gp.PRIORS["lengthscale"][0]] * d + [gp.PRIORS["signal"][0], gp.PRIORS["noise"][0]])
    sd = np.array([gp.PRIORS["lengthscale"][1]] * d + [gp.PRIORS["signal"][1], gp.PRIORS["noise"][1]])
    return -(lml - 0.5 * np.sum(((log_theta - mu) / sd) ** 2)) / len(y)


def forrester(x):
    """Forrester et al. (2008): global minimum -6.0207 at x = 0.75725 on [0, 1], a local one near 0.14."""
    return (6 * x - 2) ** 2 * np.sin(12 * x - 4)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((9, 2))
    y = np.sin(5 * x[:, 0]) + 0.5 * x[:, 1] ** 2
    return x, (y - y.mean()) / y.std()


# ----------------------------------------------------------------------------- the GP


def test_posterior_and_likelihood_match_numpy(data):
    x, y = data
    xs = np.random.default_rng(1).random((6, 2))
    ls, s, noise = np.array([0.3, 0.8]), 1.7, 1e-2
    params = gp.GPParams(jnp.asarray(ls, jnp.float32), jnp.float32(s), jnp.float32(noise))
    mean, var = gp.posterior(params, x, y, xs)
    ref_mean, ref_cov, ref_lml = np_posterior(x, y, xs, ls, s, noise)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(var, np.diag(ref_cov), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(gp.log_marginal_likelihood(params, x, y), ref_lml, rtol=1e-4)
    k = gp.matern52(jnp.asarray(x, jnp.float32), jnp.asarray(xs, jnp.float32), params.lengthscales, s)
    np.testing.assert_allclose(k, np_matern52(x, xs, ls, s), rtol=1e-5, atol=1e-6)
    # padding with masked rows changes nothing
    xp, yp, mask = gp.pad(x, y)
    assert xp.shape == (16, 2)
    np.testing.assert_allclose(gp.posterior(params, xp, yp, xs, mask)[0], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gp.posterior(params, xp, yp, xs, mask)[1], var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gp.log_marginal_likelihood(params, xp, yp, mask), ref_lml, rtol=1e-4)


def test_likelihood_gradient_matches_autodiff(data):
    x, y = data
    xp, yp, mask = gp.pad(x, y)
    log_theta = jnp.log(jnp.asarray([0.3, 0.8, 1.7, 1e-2]))

    def lml(lt):
        return gp.log_marginal_likelihood(
            gp.GPParams(jnp.exp(lt[:2]), jnp.exp(lt[2]), jnp.exp(lt[3])), xp, yp, mask
        )

    params = gp.GPParams(jnp.exp(log_theta[:2]), jnp.exp(log_theta[2]), jnp.exp(log_theta[3]))
    np.testing.assert_allclose(
        gp.lml_gradient(params, xp, yp, mask), jax.grad(lml)(log_theta), rtol=1e-3, atol=1e-3
    )


def test_joint_samples_have_the_posterior_moments(data):
    x, y = data
    xs = np.array([[0.1, 0.9], [0.15, 0.85], [0.9, 0.1]])  # two correlated points, one far away
    params = gp.GPParams(jnp.asarray([0.3, 0.8]), jnp.float32(1.7), jnp.float32(1e-2))
    n = 20000
    f = np.asarray(gp.posterior_samples(params, x, y, xs, jax.random.key(0), n), np.float64)
    ref_mean, ref_cov, _ = np_posterior(x, y, xs, np.array([0.3, 0.8]), 1.7, 1e-2)
    sd = np.sqrt(np.diag(ref_cov))
    np.testing.assert_allclose(f.mean(0), ref_mean, atol=float(5 * sd.max() / math.sqrt(n)))
    np.testing.assert_allclose(np.cov(f.T), ref_cov, atol=0.05 * float(ref_cov.max()))
    assert np.corrcoef(f.T)[0, 1] > 0.5  # joint, not independent, samples
    again = gp.posterior_samples(params, x, y, xs, jax.random.key(0), n)
    np.testing.assert_array_equal(np.asarray(again), f.astype(np.float32))


def test_fit_reaches_the_map_optimum_and_finds_irrelevant_dimensions():
    rng = np.random.default_rng(3)
    x = rng.random((20, 2))
    y, _, _ = gp.standardize(np.sin(6 * x[:, 0]))  # depends on x0 only
    params = gp.fit(x, y, key=jax.random.key(0))
    ls = np.asarray(params.lengthscales)
    assert ls[1] > 5 * ls[0]
    ours = np_map_objective(
        np.log(np.concatenate([np.ravel(np.asarray(p, np.float64)) for p in params])), x, y
    )
    lo, hi = (np.log(np.asarray(gp._per_parameter(gp.BOUNDS, i, 2))) for i in (0, 1))
    best = min(
        minimize(np_map_objective, start, args=(x, y), method="L-BFGS-B", bounds=list(zip(lo, hi))).fun
        for start in (
            np.log([0.3, 0.3, 1.0, 1e-2]),
            np.log([1.0, 5.0, 2.0, 1e-3]),
            np.log([0.1, 1.0, 0.5, 1e-1]),
        )
    )
    assert ours <= best + 2e-3
    again = gp.fit(x, y, key=jax.random.key(0))
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_gp_posterior_mean_recovers_the_1d_optimum():
    x = np.linspace(0, 1, 12)[:, None]
    y, _, _ = gp.standardize(forrester(x[:, 0]))
    params = gp.fit(x, y, key=jax.random.key(0))
    grid = np.linspace(0, 1, 2001)[:, None]
    mean, _ = gp.posterior(params, x, y, grid)
    assert abs(grid[int(np.argmin(mean)), 0] - 0.75725) < 0.02


# ----------------------------------------------------------------------------- encoding


MIXED = sweep.Space(
    lr=sweep.loguniform(1e-4, 1e-1),
    b1=sweep.uniform(0.8, 0.99),
    layers=sweep.integer(1, 4),
    width=sweep.integer(8, 512, log=True),
    momentum=sweep.choice([0.0, 0.9]),
    act=sweep.choice(["relu", "gelu", "tanh"], static=True),
    batch_size=32,
)


def test_unit_encoding_round_trip():
    assert unit_columns(MIXED) == {
        "lr": slice(0, 1), "b1": slice(1, 2), "layers": slice(2, 3), "width": slice(3, 4),
        "momentum": slice(4, 6), "act": slice(6, 9),
    }  # fmt: skip
    configs = sweep.sample(MIXED, "random", 50, seed=0)
    u = to_unit(MIXED, configs)
    assert u.shape == (50, 9) and u.min() >= 0 and u.max() <= 1
    back = from_unit(MIXED, u)
    for a, b in zip(configs, back):
        assert {k: v for k, v in a.items() if k not in ("lr", "b1")} == {
            k: v for k, v in b.items() if k not in ("lr", "b1")
        }
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-9) and b["b1"] == pytest.approx(a["b1"], rel=1e-9)
    np.testing.assert_allclose(to_unit(MIXED, back), u, atol=1e-12)
    # log-uniform dimensions are encoded in log space; integers at the centre of their bin
    mid = to_unit(MIXED, [dict(configs[0], lr=10**-2.5, layers=1)])[0]
    assert mid[0] == pytest.approx(0.5) and mid[2] == pytest.approx(0.125)


def test_unsupported_dimension_and_empty_space_raise():
    class Weird(sweep.space.Dimension):
        def from_unit(self, u):
            return u

    with pytest.raises(ValueError, match="weird: Bayesian search supports"):
        unit_columns(sweep.Space(weird=Weird()))
    with pytest.raises(ValueError, match="at least one non-fixed"):
        unit_columns(sweep.Space(a=1))
    with pytest.raises(ValueError, match="not one of the choices"):
        to_unit(MIXED, [dict(sweep.sample(MIXED, "random", 1)[0], act="elu")])


# ----------------------------------------------------------------------------- proposals


def bo_loop(space, fn, initial, rounds, k, seed=0, **kwargs):
    configs = sweep.sample(space, "sobol", initial, seed=seed)
    values = [fn(c) for c in configs]
    for r in range(rounds):
        new = propose(space, configs, values, k, seed=(seed, r), num_candidates=CANDIDATES, **kwargs)
        configs, values = configs + new, values + [fn(c) for c in new]
    return configs, values


@pytest.mark.parametrize("mode, acquisition", [("min", "thompson"), ("max", "ei")])
def test_bo_finds_the_1d_optimum(mode, acquisition):
    space = sweep.Space(x=sweep.uniform(0.0, 1.0))
    sign = 1.0 if mode == "min" else -1.0
    configs, values = bo_loop(
        space, lambda c: sign * forrester(c["x"]), 4, 5, 2, mode=mode, acquisition=acquisition
    )
    best = configs[int(np.argmin(sign * np.asarray(values)))]
    assert abs(best["x"] - 0.75725) < 0.02


def test_bo_finds_the_2d_optimum_region_and_beats_random_search():
    space = sweep.Space(lr=sweep.loguniform(1e-4, 1e-1), b=sweep.uniform(0.0, 1.0))

    def fn(c):
        u, v = math.log10(c["lr"]) + 2.5, c["b"] - 0.7
        return u**2 + 4 * v**2 + u * v

    for seed in (0, 1):
        configs, values = bo_loop(space, fn, 6, 5, 2, seed=seed)
        best = configs[int(np.argmin(values))]
        assert abs(math.log10(best["lr"]) + 2.5) < 0.25 and abs(best["b"] - 0.7) < 0.1
        random_best = min(fn(c) for c in sweep.sample(space, "random", len(configs), seed=seed))
        assert min(values) < random_best


def test_batch_proposals_are_distinct_new_and_deterministic():
    observed = sweep.sample(MIXED, "sobol", 6, seed=0)
    values = [math.log10(c["lr"]) ** 2 + c["layers"] for c in observed]
    new = propose(MIXED, observed, values, 8, seed=3, num_candidates=CANDIDATES)
    keys = [tuple(sorted(c.items())) for c in new]
    assert len(new) == 8 and len(set(keys)) == 8
    assert not set(keys) & {tuple(sorted(c.items())) for c in observed}
    for c in new:
        assert MIXED.validate_config(c) == c
        assert c["layers"] in range(1, 5) and isinstance(c["layers"], int) and 8 <= c["width"] <= 512
        assert c["act"] in ("relu", "gelu", "tanh") and c["momentum"] in (0.0, 0.9)
    assert propose(MIXED, observed, values, 8, seed=3, num_candidates=CANDIDATES) == new
    assert propose(MIXED, observed, values, 8, seed=4, num_candidates=CANDIDATES) != new


@pytest.mark.parametrize("acquisition", ["thompson", "ei"])
def test_small_discrete_space_proposes_unseen_values_first(acquisition):
    space = sweep.Space(n=sweep.integer(1, 3))
    seen = [{"n": 1}, {"n": 2}]
    kw = {"num_candidates": CANDIDATES, "acquisition": acquisition}
    assert propose(space, seen, [0.0, 1.0], 1, **kw) == [{"n": 3}]
    three = propose(space, seen, [0.0, 1.0], 3, **kw)
    assert sorted(c["n"] for c in three) == [1, 2, 3]  # distinct even when repeats are needed


def test_diverged_objectives_are_clipped_to_the_worst():
    np.testing.assert_array_equal(_targets([1.0, np.inf, 3.0, np.nan], "min"), [1.0, 3.0, 3.0, 3.0])
    np.testing.assert_array_equal(_targets([1.0, -np.inf, 3.0], "max"), [-1.0, -1.0, -3.0])
    np.testing.assert_array_equal(_targets([np.nan, np.inf], "min"), [0.0, 0.0])
    space = sweep.Space(x=sweep.uniform(0.0, 1.0))
    seen = [{"x": v} for v in (0.1, 0.4, 0.6, 0.9)]
    new = propose(space, seen, [0.5, 0.1, np.inf, np.nan], 2, num_candidates=CANDIDATES)
    assert len(new) == 2 and all(0.0 <= c["x"] <= 1.0 for c in new)


def test_warp_keeps_the_good_half_and_ignores_how_bad_the_bad_half_is():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(11)
    z = warp(y)
    assert np.all(np.diff(z[np.argsort(y)]) > 0)  # strictly monotone
    good = y <= np.median(y)
    slope = np.polyfit(y[good], z[good], 1)[0]
    np.testing.assert_allclose(z[good], slope * (y[good] - np.median(y)), atol=1e-12)  # affine, 0 at median
    worse = y.copy()
    worse[~good] = 1e30 * (1 + y[~good] - y.min())  # same order, absurd magnitudes
    np.testing.assert_allclose(warp(worse), z, atol=1e-12)
    np.testing.assert_array_equal(warp(np.array([2.0, 2.0, 2.0])), [0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k \\(batch\\) must be an int >= 1"),
        ({"k": 2, "acquisition": "ucb"}, "acquisition must be one of"),
        ({"k": 2, "num_candidates": 8}, "num_candidates must be an int >="),
        ({"k": 2, "mode": "avg"}, "mode must be"),
    ],
)
def test_propose_rejects_bad_arguments(kwargs, match):
    space = sweep.Space(x=sweep.uniform(0.0, 1.0))
    with pytest.raises(ValueError, match=match):
        propose(space, [{"x": 0.1}, {"x": 0.5}], [1.0, 2.0], **kwargs)


def test_propose_needs_two_observations():
    with pytest.raises(ValueError, match="at least 2 observed"):
        propose(sweep.Space(x=sweep.uniform(0.0, 1.0)), [{"x": 0.1}], [1.0], 1)


# ----------------------------------------------------------------------------- the loop


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch": 0}, "batch must be a positive int"),
        ({"initial": 1}, "initial must be an int >= 2"),
        ({"trials": 3, "initial": 4}, "trials must be an int >= initial=4"),
        ({"trials": 1, "initial": None}, "trials must be an int >= 2"),
        ({"max_parallel": 0}, "max_parallel must be None or a positive int"),
        ({"folds": 1}, "folds must be None or an int >= 2"),
        ({"acquisition": "pi"}, "acquisition must be one of"),
        ({"num_candidates": 4}, "num_candidates must be an int >="),
        ({"mode": "best"}, "mode must be"),
        ({"steps": 0}, "steps must be a positive int"),
    ],
)
def test_bayesian_rejects_bad_configuration_before_compiling(kwargs, match):
    args = {"trials": 8, "batch": 2, "initial": 4, "steps": 4, "progress": False, **kwargs}
    with CompileCounter() as counter, pytest.raises(ValueError, match=match):
        bayesian(make_task(), SPACE, **args)
    assert counter.count == 0


@pytest.fixture(scope="module")
def task():
    return make_task()


@pytest.fixture(scope="module")
def bo_result(task):
    return bayesian(
        task, SPACE, 10, batch=2, initial=4, steps=10, eval_every=5, devices=1, seed=0,
        num_candidates=CANDIDATES, progress=False,
    )  # fmt: skip


def test_bayesian_end_to_end(task, bo_result):
    r = bo_result
    assert [t.trial for t in r.trials] == list(range(10))
    assert r.stats["trial_round"] == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3] and r.stats["rounds"] == 4
    assert all(t.status == "completed" and t.steps_trained == 10 for t in r.trials)
    keys = {tuple(sorted(t.hyperparams.items())) for t in r.trials}
    assert len(keys) == 10
    for t in r.trials:
        assert SPACE.validate_config(t.hyperparams) == t.hyperparams
        assert 1e-3 <= t.hyperparams["learning_rate"] <= 3e-1 and 0.5 <= t.hyperparams["b1"] <= 0.95
    # chunks sized for batch=2: one program pair serves the initial design and every round
    assert r.stats["compiles"] == 2 and r.stats["chunk_sizes"] == {"-": [2]}
    assert r.stats["utilization"] == 1.0 and r.stats["chunks"] == 5
    assert len(r.stats["gp"]) == 3 and set(r.stats["gp"][0]["lengthscales"]) == set(SPACE)
    assert set(r.states) == {r.best.trial} and set(r.params()) == {"w", "b"}
    # the initial design and its keys are those of a plain Sobol sweep with the same seed
    plain = sweep.run(
        task, SPACE, 4, steps=10, eval_every=5, method="sobol", seed=0, devices=1, progress=False
    )
    for a, b in zip(plain.trials, r.trials[:4]):
        assert a.hyperparams == b.hyperparams and a.history.keys() == b.history.keys()
        for name in a.history:  # chunks of 4 there, of 2 here: float32 rounding of batched matmuls
            np.testing.assert_allclose(a.history[name], b.history[name], rtol=1e-5, err_msg=name)


def test_bayesian_is_deterministic(task, bo_result):
    again = bayesian(
        task, SPACE, 10, batch=2, initial=4, steps=10, eval_every=5, devices=1, seed=0,
        num_candidates=CANDIDATES, progress=False,
    )  # fmt: skip
    assert again.stats["compiles"] == 0
    assert [t.hyperparams for t in again.trials] == [t.hyperparams for t in bo_result.trials]
    assert [t.history for t in again.trials] == [t.history for t in bo_result.trials]


def test_bayesian_memory_budget_splits_chunks_with_the_same_results(task, bo_result):
    per_member = sweep.run(task, SPACE, 1, steps=10, eval_every=5, devices=1, progress=False).stats[
        "bytes_per_member"
    ]
    r = bayesian(
        task, SPACE, 6, batch=2, initial=4, steps=10, eval_every=5, devices=1, seed=0,
        num_candidates=CANDIDATES, progress=False, memory_budget=int(1.5 * per_member),
    )  # fmt: skip
    assert r.stats["chunk_sizes"] == {"-": [1]}  # one trial per chunk fits the budget
    # the initial design is trained in chunks of one instead of two: same results
    for a, b in zip(r.trials[:4], bo_result.trials[:4]):
        assert a.hyperparams == b.hyperparams
        assert a.history.keys() == b.history.keys()
        for name in a.history:
            np.testing.assert_allclose(a.history[name], b.history[name], rtol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="memory_budget=1 is too small for one trial"):
        bayesian(task, SPACE, 6, batch=2, initial=4, steps=10, devices=1, progress=False, memory_budget=1)


def quadratic_task():
    """Gradient descent on w^2 from w = 1: w <- (1 - 2 lr) w. Diverges (inf) for large lr,
    reaches 0 at lr = 0.5; the static ``shift`` is added to the objective."""

    def init(hp, key):
        return jnp.float32(1.0)

    def step(hp, w, key):
        return w - hp["lr"] * 2 * w, {"loss": w**2}

    def evaluate(hp, w):
        return w**2 + hp["shift"]

    return sweep.Task(init, step, evaluate, params=lambda w: w)


def test_bayesian_with_diverging_trials_and_static_choices():
    space = sweep.Space(lr=sweep.loguniform(1e-3, 1e4), shift=sweep.choice([0.0, 1.0], static=True))
    calls = []

    def callback(rnd, res):
        calls.append((rnd, len(res.trials)))

    r = bayesian(
        quadratic_task(), space, 12, batch=2, initial=4, steps=10, seed=1, acquisition="ei", devices=1,
        num_candidates=CANDIDATES, progress=False, callback=callback,
    )  # fmt: skip
    assert [t.trial for t in r.trials] == list(range(12))
    # one call per round, in order, once its trials (and all earlier ones) have finished; rounds
    # are proposed as slots free up (two static groups: a round's trials may train in two chunks)
    rounds = r.stats["trial_round"]
    assert [c[0] for c in calls] == list(range(r.stats["rounds"])) and calls[-1][1] == 12
    assert all(n >= rounds.index(rnd) + rounds.count(rnd) for rnd, n in calls)
    assert rounds[:4] == [0] * 4 and all(rounds.count(x) <= 2 for x in set(rounds) - {0})
    assert any(t.status == "diverged" for t in r.trials)
    assert all(np.isfinite(g["signal_variance"]) and np.isfinite(g["noise_variance"]) for g in r.stats["gp"])
    best = r.best
    assert best.hyperparams["shift"] == 0.0 and best.objective < 1e-3
    assert 0.2 < best.hyperparams["lr"] < 0.8


def test_callback_can_stop_the_search_and_sharded_rounds_share_one_program():
    space = {"lr": sweep.loguniform(1e-3, 1.0), "shift": 0.0}  # a plain dict works too
    r = bayesian(
        quadratic_task(), space, 20, batch=2, initial=4, steps=5, num_candidates=CANDIDATES,
        progress=False, callback=lambda rnd, res: rnd >= 2,
    )  # fmt: skip
    assert len(r.trials) == 8 and r.stats["trial_round"] == [0, 0, 0, 0, 1, 1, 2, 2]
    # 8 devices: the initial design (4) and every round (2) pad to one chunk of 8 -- one program pair
    assert r.stats["devices"] == 8 and r.stats["chunk_sizes"] == {"0.0": [8]}
    assert r.stats["compiles"] <= 2
