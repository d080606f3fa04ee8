"""MARS, cautious updates and cautious weight decay against NumPy transcriptions of the papers.

None of these is in optax. Each rule is transcribed below in plain NumPy from
the paper / the authors' code (MARS: Yuan et al. 2024 and github AGI-Arena/MARS,
with its denominator written as the authors do, ``(sqrt(v) / sqrt(1 - b2^t) + eps)
(1 - b1^t)``; cautious: Liang et al. 2024, Algorithm 1; CWD: Chen et al. 2025,
Eq. 2). The gradients come from the problems' JAX losses at the reference's own
parameters. Over 60 steps on the quadratic and ``mlp3d``:

* float64 (jopt under x64) agrees with NumPy to 1e-10 relative;
* float32 agrees to a stated tolerance on the quadratic.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt.core import chain
from jopt.optimizers.adam_family import adamw
from jopt.optimizers.momentum_variants import cautious_adamw, cautious_lion, mars, mars_lion
from jopt.transforms.cautious import CautiousState, add_cautious_decayed_weights, cautious
from jopt.transforms.moments import scale_by_adam
from jopt.transforms.scaling import scale_by_learning_rate
from jopt.transforms.variance_reduction import ScaleByMarsState, mars_corrected_gradient, scale_by_mars
from tests.reference import OptCase, assert_trees_close, mlp3d, quadratic, trajectory

STEPS = 60

_MARS = dict(learning_rate=0.02, b1=0.9, b2=0.99, eps=1e-8, gamma=0.05, weight_decay=1e-3, max_norm=1.0)
_MARS_LION = dict(learning_rate=3e-3, b1=0.9, gamma=0.05, weight_decay=1e-3, max_norm=1.0)
_ADAMW = dict(learning_rate=0.02, b1=0.85, b2=0.995, eps=1e-7, eps_root=1e-9, weight_decay=1e-3)
_LION = dict(learning_rate=3e-3, b1=0.85, b2=0.98, weight_decay=1e-3)


def _cautious_of_adamw(**kwargs):
    return cautious(adamw(**kwargs))


CASES: list[OptCase] = [
    OptCase("mars", mars, _MARS),
    OptCase("mars_lion", mars_lion, _MARS_LION, converge_kwargs={**_MARS_LION, "learning_rate": 0.01}),
    OptCase("cautious_wrapper_adamw", _cautious_of_adamw, _ADAMW),
    OptCase("cautious_adamw", cautious_adamw, _ADAMW),
    OptCase("cautious_lion", cautious_lion, _LION, converge_kwargs={**_LION, "learning_rate": 0.01}),
]

# --------------------------------------------------------------------------- NumPy transcriptions
# A rule is (init(leaves) -> state, step(leaves, grads, state, t) -> (leaves, state)), t from 1.


def _np_mars(learning_rate, b1, b2, eps, gamma, weight_decay, max_norm, lion=False):
    def init(ps):
        return [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]

    def step(ps, gs, state, t):
        ms, vs, lasts = state
        out = []
        for i, (p, g) in enumerate(zip(ps, gs)):
            c = (g - lasts[i]) * (gamma * (b1 / (1.0 - b1))) + g
            norm = np.linalg.norm(c)
            if max_norm is not None and norm > max_norm:
                c = c / norm * max_norm
            ms[i] = b1 * ms[i] + (1 - b1) * c
            if lion:
                direction = np.sign(ms[i])
            else:
                vs[i] = b2 * vs[i] + (1 - b2) * c * c
                denom = (np.sqrt(vs[i]) / np.sqrt(1 - b2**t) + eps) * (1 - b1**t)
                direction = ms[i] / denom
            out.append(p - learning_rate * (weight_decay * p + direction))
            lasts[i] = g
        return out, (ms, vs, lasts)

    return init, step


def _adam_direction(m, v, g, b1, b2, eps, eps_root, t):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return m, v, (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t) + eps_root) + eps)


def _np_mask(u, g, rescale):
    """Paper: phi = 1(u * g > 0); u * phi * d / (nnz(phi) + 1) (or / max(mean(phi), 1e-3))."""
    phi = (u * g > 0).astype(u.dtype)
    if rescale == "paper":
        return u * phi * (phi.size / (phi.sum() + 1))
    return u * phi / max(phi.mean(), 1e-3)


def _np_cautious_adam(
    learning_rate, b1, b2, eps, eps_root, weight_decay, *, where, cwd=False, rescale="paper"
):
    """``where="direction"``: the paper's C-AdamW; ``"update"``: cautious() around a whole AdamW."""

    def init(ps):
        return [np.zeros_like(p) for p in ps], [np.zeros_like(p) for p in ps]

    def step(ps, gs, state, t):
        ms, vs = state
        out = []
        for i, (p, g) in enumerate(zip(ps, gs)):
            ms[i], vs[i], u = _adam_direction(ms[i], vs[i], g, b1, b2, eps, eps_root, t)
            if where == "update":  # the whole step -lr (u + wd p), kept where it descends
                out.append(p + _np_mask(learning_rate * (u + weight_decay * p), g, rescale) * -1)
                continue
            if where == "direction":
                u = _np_mask(u, g, rescale)
            decay = weight_decay * p * ((u * p >= 0) if cwd else 1.0)
            out.append(p - learning_rate * (u + decay))
        return out, (ms, vs)

    return init, step


def _np_cautious_lion(learning_rate, b1, b2, weight_decay):
    def init(ps):
        return [np.zeros_like(p) for p in ps]

    def step(ps, gs, ms, t):
        out = []
        for i, (p, g) in enumerate(zip(ps, gs)):
            u = _np_mask(np.sign(b1 * ms[i] + (1 - b1) * g), g, "paper")
            ms[i] = b2 * ms[i] + (1 - b2) * g
            out.append(p - learning_rate * (u + weight_decay * p))
        return out, ms

    return init, step


@functools.cache
def _np_trajectory(rule_name: str, problem_name: str):
    """The NumPy rule's float64 parameters after each step (gradients from JAX under x64)."""
    init, step = REFERENCES[rule_name]()
    with jax.enable_x64(True):
        problem = {"quadratic": quadratic, "mlp3d": mlp3d}[problem_name]()
        leaves, treedef = jax.tree.flatten(problem.params)
        grad = jax.jit(jax.grad(problem.loss))
        ps = [np.asarray(x, np.float64) for x in leaves]
        state = init(ps)
        history = []
        for t in range(1, STEPS + 1):
            g = grad(jax.tree.unflatten(treedef, [jnp.asarray(p) for p in ps]))
            ps, state = step(ps, [np.asarray(x, np.float64) for x in jax.tree.leaves(g)], state, t)
            history.append(ps)
    return jax.tree.unflatten(treedef, [np.stack(col) for col in zip(*history)])


# name -> (NumPy rule factory, jopt optimizer factory)
_CWD = dict(_ADAMW, weight_decay=0.05)
REFERENCES = {
    "mars": lambda: _np_mars(**_MARS),
    "mars_no_clip": lambda: _np_mars(**{**_MARS, "max_norm": None, "gamma": 0.2}),
    "mars_lion": lambda: _np_mars(**_MARS_LION, b2=0.0, eps=0.0, lion=True),
    "cautious_wrapper_adamw": lambda: _np_cautious_adam(**_ADAMW, where="update"),
    "cautious_wrapper_adamw_mean": lambda: _np_cautious_adam(**_ADAMW, where="update", rescale="mean"),
    "cautious_adamw": lambda: _np_cautious_adam(**_ADAMW, where="direction"),
    "cautious_adamw_cwd_mean": lambda: _np_cautious_adam(**_CWD, where="direction", cwd=True, rescale="mean"),
    "adamw_cwd": lambda: _np_cautious_adam(**_CWD, where=None, cwd=True),
    "cautious_lion": lambda: _np_cautious_lion(**_LION),
    "adamw": lambda: _np_cautious_adam(**_ADAMW, where=None),  # no mask: plain AdamW
    "adamw_strong_decay": lambda: _np_cautious_adam(**_CWD, where=None),
}


def _adamw_cwd(learning_rate, b1, b2, eps, eps_root, weight_decay):
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        add_cautious_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )


OURS = {
    "mars": lambda: mars(**_MARS),
    "mars_no_clip": lambda: mars(**{**_MARS, "max_norm": None, "gamma": 0.2}),
    "mars_lion": lambda: mars_lion(**_MARS_LION),
    "cautious_wrapper_adamw": lambda: cautious(adamw(**_ADAMW)),
    "cautious_wrapper_adamw_mean": lambda: cautious(adamw(**_ADAMW), rescale="mean"),
    "cautious_adamw": lambda: cautious_adamw(**_ADAMW),
    "cautious_adamw_cwd_mean": lambda: cautious_adamw(**_CWD, cautious_weight_decay=True, rescale="mean"),
    "adamw_cwd": lambda: _adamw_cwd(**_CWD),
    "cautious_lion": lambda: cautious_lion(**_LION),
}

# float64 on both problems for the main rules, on the quadratic for the options.
FLOAT64 = [(n, "quadratic") for n in sorted(OURS)] + [
    (n, "mlp3d") for n in ("mars", "mars_lion", "cautious_adamw", "cautious_wrapper_adamw", "cautious_lion")
]


@pytest.mark.parametrize("name, problem", FLOAT64, ids=[f"{n}-{p}" for n, p in FLOAT64])
def test_float64_trajectory_matches_numpy_transcription(name, problem):
    expected = _np_trajectory(name, problem)
    with jax.enable_x64(True):
        prob = {"quadratic": quadratic, "mlp3d": mlp3d}[problem]()
        prob = prob._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), prob.params))
        ours = trajectory(OURS[name](), prob, STEPS)
        assert jax.tree.leaves(ours)[0].dtype == jnp.float64
    assert_trees_close(ours, expected, rtol=1e-10, atol=1e-12, err_msg=name)


# float32 against the float64 transcription. Adam-type directions: ~1e-6 relative per step.
# Sign-based ones (Lion, masks) are exact until a coordinate's sign input nears zero; on the
# quadratic none does within 60 steps, so the same tolerance holds.
F32 = [
    "mars",
    "mars_lion",
    "cautious_wrapper_adamw",
    "cautious_adamw",
    "cautious_adamw_cwd_mean",
    "cautious_lion",
]


@pytest.mark.parametrize("name", F32)
def test_float32_trajectory_matches_numpy_transcription(name):
    ours = trajectory(OURS[name](), quadratic(), STEPS)
    assert_trees_close(ours, _np_trajectory(name, "quadratic"), rtol=2e-5, atol=2e-6, err_msg=name)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("problem", ["quadratic", "mlp3d"])
def test_the_references_exercise_the_masks(problem):
    # The comparisons above would prove little if no coordinate were ever masked.
    def moved(a, b):
        return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    adamw_np = _np_trajectory("adamw", problem)
    assert moved(_np_trajectory("cautious_adamw", problem), adamw_np) > 1e-3
    assert moved(_np_trajectory("cautious_wrapper_adamw", problem), adamw_np) > 1e-3
    cwd = _np_trajectory("adamw_cwd", problem)
    assert moved(cwd, _np_trajectory("adamw_strong_decay", problem)) > 1e-4


def test_mars_exact_variant_uses_previous_grads_argument():
    # Exact MARS: the previous parameters' gradient on the current batch replaces the stored one.
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    tx = scale_by_mars(b1=0.9, gamma=0.5, max_norm=None)
    state = tx.init(params)
    g1, g2, g_prev_on_batch2 = (jnp.array(v) for v in ([0.2, -0.1, 0.3], [0.1, 0.1, -0.2], [0.3, 0.0, 0.1]))
    _, state = tx.update({"w": g1}, state, params)
    np.testing.assert_array_equal(state.last_grad["w"], g1)
    _, approx = tx.update({"w": g2}, state, params)
    _, exact = tx.update({"w": g2}, state, params, previous_grads={"w": g_prev_on_batch2})
    for s, prev in ((approx, g1), (exact, g_prev_on_batch2)):
        c = np.asarray(g2) + 0.5 * 0.9 / 0.1 * (np.asarray(g2) - np.asarray(prev))
        m = 0.9 * (0.1 * np.asarray(g1) * (1 + 0.5 * 9)) + 0.1 * c  # first c_1 = g1 (1 + 4.5)
        np.testing.assert_allclose(s.mu["w"], m, rtol=1e-6)
    assert isinstance(exact, ScaleByMarsState)


def test_mars_clipping_bounds_each_leafs_corrected_gradient():
    grads = {"a": jnp.array([30.0, 40.0]), "b": jnp.array([0.3, 0.4])}
    zeros = jax.tree.map(jnp.zeros_like, grads)
    c = mars_corrected_gradient(grads, zeros, 0.9, 0.0, 2.0)
    np.testing.assert_allclose(c["a"], [1.2, 1.6], rtol=1e-6)  # norm 50 -> 2
    np.testing.assert_array_equal(c["b"], grads["b"])  # norm 0.5 < 2: unchanged
    # gamma = 0 without clipping is plain AdamW
    prob = quadratic()
    plain = trajectory(mars(0.02, gamma=0.0, max_norm=None, weight_decay=1e-3), prob, 30)
    reference = trajectory(adamw(0.02, b1=0.95, b2=0.99, eps=1e-8, weight_decay=1e-3), prob, 30)
    assert_trees_close(plain, reference, rtol=1e-6, atol=1e-7)


def test_cautious_masks_disagreeing_coordinates_and_keeps_inner_state():
    params = {"w": jnp.zeros(4)}
    opt = cautious(adamw(0.1, weight_decay=0.0), rescale="none")
    state = opt.init(params)
    assert isinstance(state, CautiousState)
    _, state = opt.update({"w": jnp.array([1.0, 1.0, -1.0, -1.0])}, state, params)
    u, state = opt.update({"w": jnp.array([1.0, -0.01, -1.0, 0.01])}, state, params)
    # momentum still points along the first gradient on coordinates 1 and 3: dropped there
    assert float(u["w"][0]) < 0 and float(u["w"][2]) > 0
    np.testing.assert_array_equal(np.asarray(u["w"])[[1, 3]], 0.0)
    assert int(state.inner_state[0].count) == 2
    with pytest.raises(ValueError, match="rescale must be one of"):
        cautious(adamw(0.1), rescale="median")


def test_cautious_weight_decay_only_where_update_and_parameter_agree():
    params = {"w": jnp.array([1.0, 1.0, -1.0, -1.0])}
    tx = add_cautious_decayed_weights(0.5)
    u, _ = tx.update({"w": jnp.array([0.2, -0.2, 0.2, -0.2])}, tx.init(params), params)
    np.testing.assert_allclose(u["w"], [0.7, -0.2, 0.2, -0.7], rtol=1e-6)
    masked = add_cautious_decayed_weights(0.5, mask={"w": False})
    u, _ = masked.update({"w": jnp.array([0.2, -0.2, 0.2, -0.2])}, masked.init(params), params)
    np.testing.assert_array_equal(u["w"], jnp.array([0.2, -0.2, 0.2, -0.2]))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: mars(0.01, gamma=-0.1), "gamma must be in"),
        (lambda: mars(0.01, b1=1.0), "b1 must be in"),
        (lambda: mars(0.01, max_norm=0.0), "max_norm must be in"),
        (lambda: mars_lion(0.01, b1=-0.5), "b1 must be in"),
        (lambda: cautious_adamw(0.01, b2=1.5), "b2 must be in"),
        (lambda: cautious_lion(0.01, weight_decay=-1.0), "weight_decay must be in"),
        (lambda: add_cautious_decayed_weights(-0.1), "weight_decay must be in"),
    ],
)
def test_bad_values_raise_value_error_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()
