"""PSGD Kron (jopt.transforms.psgd, jopt.optimizers.kron) against psgd-jax and a NumPy transcription.

Fair comparison with psgd-jax (``psgd_jax.kron``, 0.2.9): its preconditioner
update is randomised, and jopt draws its random numbers from the same key
schedule (``fold_in(PRNGKey(5318008), count)``, then the same splits), so with
the default seed both use the same probes and rebalance on the same steps. Its
update decision (``counter >= 1 / p``) is deterministic. Everything else is the
same arithmetic in a different order (per-dimension products instead of one
einsum), so trajectories agree to rounding: 1e-9 relative in float64 and
2e-4 relative (1e-5 absolute) in float32 over 60 steps (float32 rounding, amplified by the
training dynamics). psgd-jax evaluates a probability schedule at ``count + 1``,
jopt (as every jopt schedule) at ``count``: psgd-jax is given the schedule
shifted by one step.

The NumPy transcription (written from Li's update rule, independent of both
implementations) builds each leaf's full Kronecker matrix
:math:`Q = \\bigotimes_i Q_i` (and solves with :math:`Q^\\top` for
:math:`B = Q^{-\\top} v`), so it checks the per-dimension algebra too; its
random probes are drawn with the documented key schedule.

psgd-jax 0.2.9 imports ``optax._src.clipping``, which optax 0.2.8 moved; the
module is aliased only while psgd-jax is imported. psgd-jax is a dev
dependency (``pip install -e ".[dev]"``): without it these tests fail.
"""

from __future__ import annotations

import functools
import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jopt
from jopt.optimizers.kron import kron
from jopt.transforms.psgd import precond_update_prob_schedule, scale_by_kron
from tests.reference import OptCase, assert_trees_close, mlp3d, quadratic, trajectory


def _import_psgd_kron():
    try:
        clipping = importlib.import_module("optax.transforms._clipping")
    except ImportError:
        return None
    added = "optax._src.clipping" not in sys.modules
    if added:
        sys.modules["optax._src.clipping"] = clipping
    try:
        return importlib.import_module("psgd_jax.kron")
    finally:
        if added:
            sys.modules.pop("optax._src.clipping", None)


psgd_kron = _import_psgd_kron()

STEPS = 60
SEED = 5318008
DAMPING = float(np.sqrt(np.finfo(np.float32).eps, dtype=np.float32))

CASES: list[OptCase] = [
    OptCase(
        "kron",
        kron,
        {
            "learning_rate": 0.03,
            "b1": 0.9,
            "weight_decay": 1e-4,
            "preconditioner_update_probability": 1.0,
            "preconditioner_lr": 0.1,
            "preconditioner_init_scale": 1.0,
        },
        converges_on=("quadratic", "rosenbrock"),
    ),
]


# --------------------------------------------------------------------------- NumPy transcription


def np_norm_lower_bound(m):
    """Li's lower bound of the spectral norm of a symmetric PSD matrix."""
    peak = np.max(np.abs(m))
    if peak == 0:
        return 0.0
    a = m / peak
    x = a[:, np.argmax(np.sum(a * a, axis=0))]
    y = x @ a
    return peak * np.linalg.norm((y / np.linalg.norm(y)) @ a.T)


def np_kron_matrix(factors, triangular):
    mats = [np.atleast_2d(q) if tri else np.diag(np.atleast_1d(q)) for q, tri in zip(factors, triangular)]
    return functools.reduce(np.kron, mats)


def np_fit(factors, triangular, h, v, lr):
    """One preconditioner update of one layer, from the full Kronecker matrix Q."""
    q_full = np_kron_matrix(factors, triangular)
    shape = np.shape(h) or (1,)
    a = (q_full @ np.ravel(h)).reshape(shape)
    # B = Q^-T v, with (Q_1 x ... x Q_k)^-T = Q_1^-T x ... x Q_k^-T (small inverses, one matrix product)
    inv_t = [
        np.linalg.inv(np.atleast_2d(q) if tri else np.diag(np.atleast_1d(q))).T
        for q, tri in zip(factors, triangular)
    ]
    b = (functools.reduce(np.kron, inv_t) @ np.ravel(v)).reshape(shape)
    tiny = np.finfo(np.float64).tiny
    new = []
    for i, (q, tri) in enumerate(zip(factors, triangular)):
        ua, ub = np.moveaxis(a, i, 0).reshape(shape[i], -1), np.moveaxis(b, i, 0).reshape(shape[i], -1)
        aa, bb = ua @ ua.T, ub @ ub.T
        if tri:
            new.append(q - lr * np.triu(aa - bb) / (np_norm_lower_bound(aa + bb) + tiny) @ q)
        else:
            da, db = np.diag(aa), np.diag(bb)
            new.append(
                q - (lr * (da - db) * np.ravel(q) / (np.max(np.abs(da + db)) + tiny)).reshape(np.shape(q))
            )
    return new


def np_precondition(factors, triangular, g):
    q_full = np_kron_matrix(factors, triangular)
    return (q_full.T @ q_full @ np.ravel(g)).reshape(np.shape(g))


def np_balance(factors):
    if len(factors) < 2:
        return factors
    norms = np.array([np.max(np.abs(q)) for q in factors])
    gmean = np.prod(norms) ** (1 / len(norms))
    return [q * gmean / n for q, n in zip(factors, norms)]


def np_triangular(shape, memory_save_mode=None, max_size=8192, min_ndim=2):
    if not shape:
        return [False]
    diag = [memory_save_mode == "all_diag"] * len(shape)
    if memory_save_mode == "one_diag":
        diag[max(range(len(shape)), key=lambda i: (shape[i], i))] = True
    return [not (n == 1 or n > max_size or len(shape) < min_ndim or d) for n, d in zip(shape, diag)]


def np_kron_trajectory(problem, steps, *, learning_rate, b1=0.9, weight_decay=0.0, probability=1.0,
                       preconditioner_lr=0.1, init_scale=1.0, memory_save_mode=None,
                       momentum_into_precond_update=True, scanned=(), draw_dtype=np.float64):  # fmt: skip
    """Kron in NumPy float64; gradients from jax (float64), probes from the documented key schedule."""
    params = jax.tree.map(lambda x: np.asarray(x, np.float64), problem.params)
    leaves, treedef = jax.tree.flatten(params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    is_scanned = [any(s in path for s in scanned) for path in paths]
    layers = [x.shape[0] if s else None for x, s in zip(leaves, is_scanned)]
    tri = [np_triangular(x.shape[1:] if s else x.shape, memory_save_mode) for x, s in zip(leaves, is_scanned)]

    def init(shape, t):
        if not shape:
            return [np.float64(init_scale)]
        s = init_scale ** (1 / len(shape))
        return [s * (np.eye(n) if k else np.ones(n)) for n, k in zip(shape, t)]

    qs = [
        [init(x.shape[1:], t) for _ in range(n)] if n else init(x.shape, t)
        for x, t, n in zip(leaves, tri, layers)
    ]
    mu = [np.zeros_like(x) for x in leaves]
    grad = jax.jit(jax.grad(problem.loss))
    counter, out = 0, []
    for t in range(steps):
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grad(treedef.unflatten(leaves)))]
        mu = [(1 - b1) * gi + b1 * m for gi, m in zip(g, mu)]
        m_hat = [m / (1 - b1 ** (t + 1)) for m in mu]
        p = float(probability(t)) if callable(probability) else probability
        counter += 1
        if counter >= 1 / p:
            counter = 0
            _, key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(SEED), t))
            key, balance_key = jax.random.split(key)
            if float(jax.random.uniform(balance_key)) < 0.01:
                qs = [[np_balance(f) for f in q] if n else np_balance(q) for q, n in zip(qs, layers)]
            _, probe_key = jax.random.split(key)
            fit_in = m_hat if momentum_into_precond_update else g
            for i, k in enumerate(jax.random.split(probe_key, len(leaves))):
                v = np.asarray(jax.random.normal(k, leaves[i].shape, draw_dtype), np.float64)
                h = fit_in[i] + DAMPING * np.mean(np.abs(fit_in[i])) * v
                lr = preconditioner_lr
                if layers[i]:
                    qs[i] = [np_fit(qs[i][j], tri[i], h[j], v[j], lr) for j in range(layers[i])]
                else:
                    qs[i] = np_fit(qs[i], tri[i], h, v, lr)
        new = []
        for x, m, q, n, k in zip(leaves, m_hat, qs, layers, tri):
            u = (
                np.stack([np_precondition(q[j], k, m[j]) for j in range(n)])
                if n
                else np_precondition(q, k, m)
            )
            u = u / max(1.0, np.sqrt(np.mean(u * u)) / 1.1)
            new.append(x - learning_rate * (u + weight_decay * x))
        leaves = new
        out.append(leaves)
    return treedef.unflatten([np.stack([o[i] for o in out]) for i in range(len(leaves))])


# --------------------------------------------------------------------------- runs

# p = 1 for 10 steps, then down to 0.2 (an update every 5th step) by step 26.
SCHEDULE = precond_update_prob_schedule(max_prob=1.0, min_prob=0.2, decay=0.1, flat_start=10)
# Each configuration: (problem, jopt/psgd-jax kwargs, extra kwargs of the NumPy transcription).
SCANNED = {"inp": {"w": False, "b": False}, "stack": {"w": True, "b": True}, "out": {"w": False, "b": False}}
CONFIGS = {
    "mlp3d": (mlp3d, {"learning_rate": 0.01, "preconditioner_update_probability": 1.0}, {}),
    "mlp3d_scanned": (
        mlp3d,
        {
            "learning_rate": 0.02,
            "b1": 0.5,
            "preconditioner_update_probability": 0.5,  # every 2nd step
            "scanned_layers": SCANNED,
            "lax_map_scanned_layers": True,
            "lax_map_batch_size": 2,
        },
        {"scanned": ("stack",)},
    ),
    "quadratic": (
        quadratic,
        {
            "learning_rate": 0.05,
            "b1": 0.5,
            "weight_decay": 0.01,
            "preconditioner_update_probability": SCHEDULE,
            "preconditioner_lr": 0.2,
            "preconditioner_init_scale": 2.0,
            "memory_save_mode": "one_diag",
            "momentum_into_precond_update": False,
        },
        {},
    ),
}


def _numpy_kwargs(kwargs, extra):
    renamed = {"preconditioner_update_probability": "probability", "preconditioner_init_scale": "init_scale"}
    out = {renamed.get(k, k): v for k, v in kwargs.items() if "scanned" not in k and "lax_map" not in k}
    return {**out, **extra}


def _problem(make, x64):
    prob = make()
    if x64:
        prob = prob._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), prob.params))
    return prob


@functools.cache
def _jopt_run(name, x64):
    make, kwargs, _ = CONFIGS[name]
    with jax.enable_x64(x64):
        return jax.tree.map(np.asarray, trajectory(kron(**kwargs), _problem(make, x64), STEPS))


def _psgd_run(name, x64):
    make, kwargs, _ = CONFIGS[name]
    with jax.enable_x64(x64):
        extra = {} if x64 else {"precond_dtype": jnp.float32}
        probability = kwargs["preconditioner_update_probability"]
        if callable(probability):  # psgd-jax calls it with count + 1, jopt with count
            extra["preconditioner_update_probability"] = lambda n: probability(n - 1)
        kwargs = {k: v for k, v in kwargs.items() if k not in extra}
        return trajectory(psgd_kron.kron(**kwargs, **extra), _problem(make, x64), STEPS)


def _numpy_run(name, draw_dtype):
    make, kwargs, extra = CONFIGS[name]
    with jax.enable_x64(True):
        return np_kron_trajectory(make(), STEPS, **_numpy_kwargs(kwargs, extra), draw_dtype=draw_dtype)


# --------------------------------------------------------------------------- against psgd-jax


@pytest.mark.parametrize("name", ["mlp3d_scanned", "quadratic"])
def test_float64_trajectory_matches_psgd_jax(name):
    assert_trees_close(_jopt_run(name, True), _psgd_run(name, True), rtol=1e-9, atol=1e-12)


def test_float32_trajectory_matches_psgd_jax():  # mlp3d in float32: against NumPy below (compile time)
    assert_trees_close(_jopt_run("quadratic", False), _psgd_run("quadratic", False), rtol=2e-4, atol=1e-5)


# --------------------------------------------------------------------------- against NumPy


@pytest.mark.parametrize("name", ["mlp3d_scanned", "quadratic"])
def test_float64_trajectory_matches_numpy(name):
    assert_trees_close(_jopt_run(name, True), _numpy_run(name, np.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp3d", "quadratic"])
def test_float32_trajectory_matches_numpy(name):
    assert_trees_close(_jopt_run(name, False), _numpy_run(name, np.float32), rtol=2e-4, atol=1e-5)


def test_array_hyperparameters_agree_with_python_numbers():
    make, kwargs, _ = CONFIGS["quadratic"]
    numeric = ("learning_rate", "b1", "weight_decay", "preconditioner_update_probability",
               "preconditioner_lr", "preconditioner_init_scale")  # fmt: skip
    arrays = {
        k: jnp.asarray(v, jnp.float32) if k in numeric and not callable(v) else v for k, v in kwargs.items()
    }
    ours = trajectory(kron(**arrays), make(), STEPS)
    assert_trees_close(
        ours, _jopt_run("quadratic", False), rtol=1e-4, atol=1e-6
    )  # float32 rounding of 1 - b1


# --------------------------------------------------------------------------- one preconditioner step

LEAVES = {"t": (2, 3, 4), "v": (5,), "s": ()}


def _one_step_setup(**kwargs):
    rng = np.random.default_rng(3)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in LEAVES.items()}
    grads = [{k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in LEAVES.items()} for _ in range(2)]
    tx = scale_by_kron(b1=0.0, preconditioner_update_probability=1.0, preconditioner_lr=0.3, **kwargs)
    return tx, params, grads


def _probes(count, like):
    """The documented key schedule: fold_in(seed, count) -> split -> split -> split(n_leaves)."""
    _, key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(SEED), count))
    _, probe_key = jax.random.split(jax.random.split(key)[0])
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(probe_key, len(leaves))
    return treedef.unflatten(
        [np.asarray(jax.random.normal(k, x.shape), np.float64) for k, x in zip(keys, leaves)]
    )


def test_preconditioner_step_matches_numpy_transcription():
    """Two steps from Q = I with b1 = 0: each factor update and the preconditioned gradient."""
    tx, params, grads = _one_step_setup(memory_save_mode="one_diag")
    tri = {"t": [True, True, False], "v": [False], "s": [False]}
    state = tx.init(params)
    assert [q.shape for q in state.Qs_preconditioners["t"]] == [(2, 2), (3, 3), (4,)]
    update = jax.jit(tx.update)
    for count, g in enumerate(grads):
        old = jax.tree.map(lambda x: np.asarray(x, np.float64), state.Qs_preconditioners)
        u, state = update(g, state)
        v = _probes(count, g)
        for k in LEAVES:
            gk = np.asarray(g[k], np.float64)
            h = gk + DAMPING * np.mean(np.abs(gk)) * v[k]
            expected = np_fit(old[k], tri[k], h, v[k], 0.3)
            for got, want in zip(state.Qs_preconditioners[k], expected):
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=f"{k} step {count}")
            pre = np_precondition(expected, tri[k], gk)
            pre = pre / max(1.0, np.sqrt(np.mean(pre**2)) / 1.1)
            np.testing.assert_allclose(u[k], pre, rtol=2e-5, atol=2e-6, err_msg=f"{k} step {count}")
    assert int(state.update_counter) == 0 and int(state.count) == 2


def test_zero_probability_never_fits_seed_selects_the_probes_and_hyperparameters_are_logged():
    params, g = {"w": jnp.ones((2, 3))}, {"w": jnp.arange(6.0).reshape(2, 3)}

    @jax.jit
    def first_step(probability, key, plr, lr):  # traced hyperparameters and key: one compile
        opt = kron(lr, preconditioner_update_probability=probability, preconditioner_lr=plr, seed=key)
        state = opt.update(g, opt.init(params), params)[1]
        return state[0].Qs_preconditioners["w"], state[0].update_counter, jopt.current_hyperparams(state)

    frozen, counter, logged = first_step(0.0, jax.random.PRNGKey(SEED), 0.1, 1e-3)
    assert int(counter) == 1
    for q in frozen:
        np.testing.assert_array_equal(q, np.eye(q.shape[0]))
    assert float(logged["preconditioner_lr"]) == pytest.approx(0.1)
    assert float(logged["learning_rate"]) == pytest.approx(1e-3)
    assert float(logged["preconditioner_update_probability"]) == 0.0
    default_key, _, _ = first_step(1.0, jax.random.PRNGKey(SEED), 0.1, 1e-3)
    other_key, _, _ = first_step(1.0, jax.random.PRNGKey(1), 0.1, 1e-3)
    assert not np.allclose(default_key[0], other_key[0])  # another seed, other probes
    gw = np.asarray(g["w"], np.float64)  # a key as seed: the documented schedule from that key
    v = _probes(0, g)["w"]
    expected = np_fit([np.eye(2), np.eye(3)], [True, True], gw + DAMPING * np.mean(np.abs(gw)) * v, v, 0.1)
    for got, want in zip(default_key, expected):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_factor_layout_options():
    params = {"big": jnp.zeros((3, 40)), "vec": jnp.zeros(6), "one": jnp.zeros((1, 5))}
    shapes = lambda tx: jax.tree.map(lambda q: q.shape, jax.eval_shape(tx.init, params).Qs_preconditioners)
    assert shapes(scale_by_kron()) == {"big": [(3, 3), (40, 40)], "one": [(1,), (5, 5)], "vec": [(6,)]}
    assert shapes(scale_by_kron(max_size_triangular=10))["big"] == [(3, 3), (40,)]
    assert shapes(scale_by_kron(max_skew_triangular=4.0))["big"] == [(3, 3), (40,)]  # 40 > 4 * 3
    assert shapes(scale_by_kron(memory_save_mode="all_diag"))["big"] == [(3,), (40,)]
    assert shapes(scale_by_kron(min_ndim_triangular=3))["big"] == [(3,), (40,)]
    assert shapes(scale_by_kron(min_ndim_triangular=1))["vec"] == [(6, 6)]
    state = jax.eval_shape(scale_by_kron(precond_dtype=jnp.bfloat16, mu_dtype=jnp.bfloat16).init, params)
    assert {q.dtype for q in jax.tree.leaves(state.Qs_preconditioners)} == {jnp.dtype(jnp.bfloat16)}
    assert state.mu["big"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: kron(b1=1.0), "b1 must be in"),
        (lambda: kron(learning_rate=-1.0), "learning_rate"),
        (lambda: kron(weight_decay=-0.1), "weight_decay"),
        (lambda: kron(preconditioner_update_probability=1.5), "preconditioner_update_probability must be in"),
        (lambda: kron(preconditioner_lr=-0.1), "preconditioner_lr must be in"),
        (lambda: kron(preconditioner_init_scale=0.0), "preconditioner_init_scale must be in"),
        (lambda: kron(memory_save_mode="some_diag"), "memory_save_mode"),
        (lambda: kron(max_size_triangular=-1), "max_size_triangular"),
        (lambda: kron(max_skew_triangular=-1.0), "max_skew_triangular"),
        (lambda: kron(precond_update_precision="fast"), "precond_update_precision"),
        (lambda: precond_update_prob_schedule(min_prob=2.0), "min_prob"),
    ],
)
def test_bad_values_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
