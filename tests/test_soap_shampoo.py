"""SOAP (Vyas et al., 2024) and Shampoo (Gupta et al., 2018; Anil et al., 2020) against NumPy transcriptions.

Neither optimizer is in optax. ``NumpySoap`` and ``NumpyShampoo`` below are plain
NumPy transcriptions of the papers' update rules (SOAP's details — the first call
only builds the bases, the QR refresh sorts the columns and reorders the second
moment — from the authors' reference code), with their own blocking, merging and
unfolding code. jopt runs as one jitted ``lax.scan`` (``tests.reference.trajectory``);
float64 runs agree with the float64 references to 1e-9 relative, float32 runs with
the float64 references to the tolerances stated at each test.

SOAP's eigenbasis is not unique in the null space of a rank-deficient factor (any
non-square gradient gives one at the first call: ``out/w`` (8, 2) of ``mlp3d`` has
an 8x8 :math:`L` of rank 2), and ``eigh``'s choice there depends on rounding. jopt
fixes it canonically (:func:`jopt.transforms.kronecker.eigenbasis`) and shifts the
QR power iteration slightly; the reference transcribes both, so it computes every
basis itself.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jopt.optimizers.kronecker import shampoo, soap
from jopt.transforms import kronecker as kr
from jopt.transforms.kronecker_shampoo import scale_by_shampoo
from jopt.transforms.kronecker_soap import scale_by_soap
from tests.reference import OptCase, Problem, mlp3d

STEPS = 60


# --------------------------------------------------------------------------- problems


def tensor_problem() -> Problem:
    """A square matrix, a (2, 3, 4) tensor and a vector; every first factor has full rank."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(20, 6)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(20, 6)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    d = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    params = {
        "w": jnp.asarray(0.3 * rng.normal(size=(6, 6)), jnp.float32),
        "t": jnp.asarray(0.5 * rng.normal(size=(2, 3, 4)), jnp.float32),
        "v": jnp.zeros(5, jnp.float32),
    }

    def loss(p):
        fit = jnp.mean((jnp.tanh(x @ p["w"]) - y) ** 2)
        coupled = jnp.mean((jnp.tanh(p["t"] * c) - d) ** 2) * (1.0 + 0.1 * jnp.sum(p["v"] ** 2))
        return fit + coupled + 0.5 * jnp.sum((p["v"] - 1.0) ** 2)

    return Problem("tensor", params, loss)


def blocked_problem() -> Problem:
    """A (10, 7) matrix, a (2, 3, 4) tensor and a (5,) vector, for block size 4."""
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.normal(size=(12, 10)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(12, 7)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    params = {
        "big": jnp.asarray(0.3 * rng.normal(size=(10, 7)), jnp.float32),
        "t": jnp.asarray(0.5 * rng.normal(size=(2, 3, 4)), jnp.float32),
        "v": jnp.asarray(rng.normal(size=5), jnp.float32),
    }

    def loss(p):
        fit = jnp.mean((jnp.tanh(z @ p["big"]) - target) ** 2)
        return fit + jnp.mean((p["t"] * c - 1.0) ** 2) + jnp.sum(jnp.cos(p["v"]) * p["v"] ** 2)

    return Problem("blocked", params, loss)


def as_float64(problem: Problem) -> Problem:
    return problem._replace(params=jax.tree.map(lambda x: x.astype(jnp.float64), problem.params))


# --------------------------------------------------------------------------- NumPy references


def np_merge(shape: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """SOAP's merge_dims: grow a running product of axes; emit it when the next axis would overflow."""
    out, run = [], 1
    for d in shape:
        if run * d > limit:
            out.append(run if run > 1 else d)
            run = d if run > 1 else 1
        else:
            run *= d
    if run > 1 or not out:
        out.append(run)
    return tuple(out)


def np_block_slices(shape: tuple[int, ...], block_size: int | None) -> list[tuple[slice, ...]]:
    per_axis = [
        [slice(a, min(a + block_size, d)) for a in range(0, d, block_size)] if block_size else [slice(0, d)]
        for d in shape
    ]
    return list(itertools.product(*per_axis))


def np_gram(x: np.ndarray, axis: int) -> np.ndarray:
    unfolded = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    return unfolded @ unfolded.T


def np_null_tolerance(scale: float, n: int, dtype) -> float:
    return 100.0 * np.sqrt(n) * np.finfo(dtype).eps * max(scale, 0.0)


def np_eigenbasis(f: np.ndarray) -> np.ndarray:
    """eigh's eigenvectors, largest first; the null space's basis: the leading eigenvectors of P D P."""
    lam, vec = np.linalg.eigh(f)
    lam, vec = lam[::-1], vec[:, ::-1]
    n = len(f)
    rank = int(np.sum(lam > np_null_tolerance(lam[0], n, f.dtype)))
    null_projector = np.eye(n) - vec[:, :rank] @ vec[:, :rank].T
    canonical = np.linalg.eigh(null_projector @ np.diag(np.arange(n, 0, -1.0)) @ null_projector)[1][:, ::-1]
    return np.concatenate([vec[:, :rank], canonical[:, : n - rank]], axis=1)


def np_rotate(x: np.ndarray, mats: dict[int, np.ndarray], back: bool) -> np.ndarray:
    """``x`` times ``Q^T`` along each axis in ``mats`` (into the basis), or times ``Q`` (``back``)."""
    for axis, q in mats.items():
        x = np.moveaxis(np.tensordot(x, q.T if back else q, axes=([axis], [0])), -1, axis)
    return x


class _Block:
    def __init__(self, sl, shape, axes, dtype):
        self.sl, self.axes = sl, axes
        self.f = {i: np.zeros((shape[i], shape[i]), dtype) for i in axes}
        self.q = {i: np.eye(shape[i], dtype=dtype) for i in axes}
        self.v = np.zeros(shape, dtype)


class _Leaf:
    """Blocks of one leaf: merging, blocking and skipped axes, decided here independently of jopt."""

    def __init__(self, p, *, block_size, max_dim, merge_limit, precondition_1d):
        self.shape = p.shape
        self.merged = np_merge(p.shape, merge_limit) if merge_limit and p.ndim > 1 else p.shape
        self.blocks = []
        for sl in np_block_slices(self.merged, block_size):
            shape = tuple(s.stop - s.start for s in sl)
            axes = [
                i
                for i, n in enumerate(shape)
                if n > 1 and (max_dim is None or n <= max_dim) and (precondition_1d or p.ndim != 1)
            ]
            self.blocks.append(_Block(sl, shape, axes, p.dtype))


class NumpySoap:
    """SOAP (Vyas et al., 2024, Algorithm 3) with AdamW-style decay, per leaf and block, in NumPy."""

    def __init__(
        self,
        params,
        *,
        lr,
        b1,
        b2,
        shampoo_beta,
        eps,
        weight_decay,
        frequency,
        max_precond_dim,
        merge_dims=False,
        precondition_1d=False,
        normalize_grads=False,
        correct_bias=True,
        block_size=None,
    ):
        self.hp = dict(
            lr=lr, b1=b1, b2=b2, sb=b2 if shampoo_beta is None else shampoo_beta, eps=eps, wd=weight_decay
        )
        self.frequency, self.normalize, self.correct_bias = frequency, normalize_grads, correct_bias
        kw = dict(
            block_size=block_size,
            max_dim=max_precond_dim,
            precondition_1d=precondition_1d,
            merge_limit=max_precond_dim if merge_dims else None,
        )
        self.leaves = [_Leaf(np.asarray(p), **kw) for p in jax.tree.leaves(params)]
        self.mu = [np.zeros(np.shape(p), np.asarray(p).dtype) for p in jax.tree.leaves(params)]
        self.t = 0

    def _first_call(self, leaf, g):
        sb = self.hp["sb"]
        for b in leaf.blocks:
            for i in b.axes:
                b.f[i] = sb * b.f[i] + (1 - sb) * np_gram(g[b.sl], i)
                b.q[i] = np_eigenbasis(b.f[i])

    def _adam(self, k, leaf, g):
        b1, b2, eps, t = self.hp["b1"], self.hp["b2"], self.hp["eps"], self.t
        self.mu[k] = b1 * self.mu[k] + (1 - b1) * g.reshape(leaf.shape)
        m = self.mu[k].reshape(leaf.merged)
        n = np.zeros(leaf.merged, g.dtype)
        for b in leaf.blocks:
            g_rot, m_rot = np_rotate(g[b.sl], b.q, False), np_rotate(m[b.sl], b.q, False)
            b.v = b2 * b.v + (1 - b2) * g_rot**2
            n[b.sl] = np_rotate(m_rot / (np.sqrt(b.v) + eps), b.q, True)
        if self.normalize:
            n = n / (1e-30 + np.sqrt(np.mean(n**2)))
        if self.correct_bias:
            n = n * np.sqrt(1 - b2**t) / (1 - b1**t)
        return n.reshape(leaf.shape)

    def _statistics_and_refresh(self, leaf, g):
        sb = self.hp["sb"]
        for b in leaf.blocks:
            for i in b.axes:
                b.f[i] = sb * b.f[i] + (1 - sb) * np_gram(g[b.sl], i)
                if self.t % self.frequency == 0:
                    quotients = np.diag(b.q[i].T @ b.f[i] @ b.q[i])
                    order = np.argsort(-quotients, kind="stable")
                    b.v = np.take(b.v, order, axis=i)
                    shift = np_null_tolerance(quotients.max(), len(quotients), b.f[i].dtype)
                    b.q[i] = np.linalg.qr((b.f[i] + shift * np.eye(len(quotients))) @ b.q[i][:, order])[0]

    def step(self, params, grads):
        leaves, treedef = jax.tree.flatten(params)
        out = []
        for k, (p, g, leaf) in enumerate(zip(leaves, jax.tree.leaves(grads), self.leaves)):
            p, g = np.asarray(p), np.asarray(g).reshape(leaf.merged)
            if self.t == 0:
                self._first_call(leaf, g)
                out.append(p - self.hp["lr"] * self.hp["wd"] * p)
                continue
            n = self._adam(k, leaf, g)
            out.append(p - self.hp["lr"] * (n + self.hp["wd"] * p))
            self._statistics_and_refresh(leaf, g)
        self.t += 1
        return jax.tree.unflatten(treedef, out)


class NumpyShampoo:
    """Shampoo with blocks, grafting, momentum and coupled weight decay, per leaf and block, in NumPy."""

    def __init__(
        self,
        params,
        *,
        lr,
        b1,
        b2,
        eps,
        weight_decay,
        frequency,
        start,
        graft_eps,
        nesterov=True,
        graft_type="adam",
        block_size=128,
        max_precond_dim=None,
        merge_dims=False,
        precondition_1d=True,
        exponent_override=None,
    ):
        self.hp = dict(lr=lr, b1=b1, b2=b2, eps=eps, wd=weight_decay, geps=graft_eps)
        self.frequency, self.start, self.nesterov, self.graft = frequency, start, nesterov, graft_type
        self.exponent = exponent_override
        kw = dict(
            block_size=block_size,
            max_dim=max_precond_dim,
            precondition_1d=precondition_1d,
            merge_limit=block_size if merge_dims else None,
        )
        self.leaves = [_Leaf(np.asarray(p), **kw) for p in jax.tree.leaves(params)]
        self.v = [np.zeros(np.shape(p)) for p in jax.tree.leaves(params)]
        self.m = [np.zeros(np.shape(p)) for p in jax.tree.leaves(params)]
        self.t = 0

    def _root(self, f, p):
        lam, vec = np.linalg.eigh(f)
        return (vec * (np.maximum(lam, 0) + self.hp["eps"]) ** (-1.0 / p)) @ vec.T

    def _graft_direction(self, k, g):
        b2, w = self.hp["b2"], 1.0 if self.hp["b2"] == 1 else 1 - self.hp["b2"]
        if self.graft in ("none", "sgd"):
            return g
        self.v[k] = self.v[k] + g**2 if self.graft == "adagrad" else b2 * self.v[k] + w * g**2
        v_hat = self.v[k] / (1 - b2 ** (self.t + 1)) if self.graft == "adam" and b2 < 1 else self.v[k]
        return g / (np.sqrt(v_hat) + self.hp["geps"])

    def _shampoo_direction(self, leaf, g):
        b2 = self.hp["b2"]
        w = 1.0 if b2 == 1 else 1 - b2
        out = np.zeros(leaf.merged, g.dtype)
        for b in leaf.blocks:
            for i in b.axes:
                b.f[i] = b2 * b.f[i] + w * np_gram(g[b.sl], i)
                if self.t % self.frequency == 0:
                    b.q[i] = self._root(b.f[i], self.exponent or 2 * len(b.axes))
            out[b.sl] = np_rotate(g[b.sl], b.q, True)  # b.q holds the roots here
        return out.reshape(leaf.shape)

    def step(self, params, grads):
        leaves, treedef = jax.tree.flatten(params)
        out = []
        for k, (p, g, leaf) in enumerate(zip(leaves, jax.tree.leaves(grads), self.leaves)):
            p, g = np.asarray(p), np.asarray(g)
            pg = self._shampoo_direction(leaf, g.reshape(leaf.merged))
            d = self._graft_direction(k, g)
            u = pg if self.graft == "none" else pg * np.linalg.norm(d) / (np.linalg.norm(pg) + 1e-16)
            if not any(b.axes for b in leaf.blocks) or self.t < self.start:
                u = d
            u = u + self.hp["wd"] * p
            self.m[k] = self.hp["b1"] * self.m[k] + u
            direction = u + self.hp["b1"] * self.m[k] if self.nesterov else self.m[k]
            out.append(p - self.hp["lr"] * direction)
        self.t += 1
        return jax.tree.unflatten(treedef, out)


def gradient_noise(params, steps: int, scale: float, seed: int = 0):
    """Fixed per-step noise added to the gradients, as minibatches would (see ``run_jopt``)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: scale * rng.normal(size=(steps, *p.shape)), params)


def run_jopt(tx, problem: Problem, noise):
    """Parameters after each step of ``tx`` with gradients ``grad + noise[t]``, in one jitted scan.

    Deterministic full-batch gradients barely change between SOAP's first call (no step)
    and its second, so the second rotated gradient is diagonal up to rounding and Adam
    normalizes rounding-sized entries to full-size steps; noisy gradients (as in
    training) keep the comparison about the algorithm rather than about rounding.
    """
    noise = jax.tree.map(lambda n, p: jnp.asarray(n, p.dtype), noise, problem.params)

    @jax.jit
    def run(params, noise):
        def step(carry, n):
            p, s = carry
            g = jax.tree.map(jnp.add, jax.grad(problem.loss)(p), n)
            u, s = tx.update(g, s, p)
            p = jax.tree.map(lambda a, b: (a + b).astype(a.dtype), p, u)
            return (p, s), p

        return jax.lax.scan(step, (params, tx.init(params)), noise)[1]

    return run(problem.params, noise)


def run_reference(ref, problem: Problem, noise) -> list:
    grad = jax.jit(jax.grad(problem.loss))
    params, path = problem.params, []
    for t in range(len(jax.tree.leaves(noise)[0])):
        g = jax.tree.map(lambda a, n, t=t: np.asarray(a, np.float64) + n[t], grad(params), noise)
        params = ref.step(params, g)
        path.append(params)
    return path


def assert_paths_close(jopt_path, ref_path, *, rtol, atol, every=10):
    for t in range(every - 1, len(ref_path), every):
        for a, e in zip(
            jax.tree.leaves(jax.tree.map(lambda x, t=t: x[t], jopt_path)), jax.tree.leaves(ref_path[t])
        ):
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(e), rtol=rtol, atol=atol, err_msg=f"step {t}"
            )


def compare(make_jopt, make_ref, problem: Problem, *, steps: int, noise_scale: float, float64: bool, **tol):
    """jopt (in float64 under x64, else float32) against the float64 NumPy reference."""
    noise = gradient_noise(problem.params, steps, noise_scale)
    actual = None if float64 else run_jopt(make_jopt(), problem, noise)
    with jax.enable_x64(True):
        problem64 = as_float64(problem)
        if float64:
            actual = run_jopt(make_jopt(), problem64, noise)
            assert jax.tree.leaves(actual)[0].dtype == jnp.float64
        expected = run_reference(make_ref(problem64.params), problem64, noise)
    assert_paths_close(actual, expected, **tol)


# --------------------------------------------------------------------------- SOAP

SOAP_MLP = dict(lr=3e-3, b1=0.95, b2=0.95, shampoo_beta=0.9, eps=1e-8, weight_decay=0.01, frequency=4)
F64 = dict(rtol=1e-9, atol=1e-11)


def _soap_jopt(hp: dict, **options):
    return soap(
        hp["lr"],
        hp["b1"],
        hp["b2"],
        hp["shampoo_beta"],
        hp["eps"],
        hp["weight_decay"],
        hp["frequency"],
        **options,
    )


def test_soap_first_bases_are_descending_eigenbases_and_3d_leaves_get_per_mode_factors():
    problem = mlp3d()
    tx = scale_by_soap(shampoo_beta=0.9)
    grads = jax.grad(problem.loss)(problem.params)
    u, state = jax.jit(tx.update)(grads, tx.init(problem.params))
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree.leaves(u))  # first call: no step
    shapes = {
        k: [None if q is None else q.shape for q in state.bases[k]["w"][0]] for k in ("inp", "stack", "out")
    }
    assert shapes == {
        "inp": [(1, 5, 5), (1, 8, 8)],
        "stack": [(1, 2, 2), (1, 8, 8), (1, 8, 8)],
        "out": [(1, 8, 8), (1, 2, 2)],
    }
    assert state.bases["stack"]["b"][0][0].shape == (1, 2, 2) and state.bases["inp"]["b"] == ((None,),)
    for key in ("inp", "stack", "out"):
        g = np.asarray(grads[key]["w"], np.float64)
        for axis, q in enumerate(state.bases[key]["w"][0]):
            f, q = 0.1 * np_gram(g, axis), np.asarray(q[0], np.float64)
            np.testing.assert_allclose(q.T @ q, np.eye(len(q)), atol=1e-5)
            rayleigh = q.T @ f @ q
            scale = np.abs(f).max()
            np.testing.assert_allclose(rayleigh, np.diag(np.diag(rayleigh)), atol=1e-5 * scale)
            assert np.all(np.diff(np.diag(rayleigh)) <= 1e-5 * scale), "eigenvalues not descending"
    # The null spaces' bases are canonical: gradients computed inside the jitted step round
    # differently, yet every basis vector is the same up to sign.
    inside = jax.jit(lambda p: tx.update(jax.grad(problem.loss)(p), tx.init(p))[1].bases)(problem.params)
    for q, q_inside in zip(jax.tree.leaves(state.bases), jax.tree.leaves(inside)):
        overlap = np.abs(np.einsum("nai,nai->ni", np.asarray(q), np.asarray(q_inside)))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-4)


def test_soap_matches_numpy_float64_on_mlp3d():
    hp = SOAP_MLP
    make_ref = lambda params: NumpySoap(params, **hp, max_precond_dim=10000)
    compare(lambda: _soap_jopt(hp), make_ref, mlp3d(), steps=STEPS, noise_scale=0.03, float64=True, **F64)


def test_soap_matches_numpy_float64_on_tensor_problem_with_normalized_grads():
    hp = dict(lr=3e-3, b1=0.95, b2=0.95, shampoo_beta=None, eps=1e-8, weight_decay=0.01, frequency=10)
    make_ref = lambda params: NumpySoap(params, **hp, max_precond_dim=10000, normalize_grads=True)
    make = lambda: _soap_jopt(hp, normalize_grads=True)
    compare(make, make_ref, tensor_problem(), steps=STEPS, noise_scale=0.03, float64=True, **F64)


def test_soap_blocks_merged_dims_and_1d_factors_match_numpy_float64():
    hp = dict(lr=1e-2, b1=0.9, b2=0.99, shampoo_beta=0.95, eps=1e-8, weight_decay=0.0, frequency=3)
    options = dict(max_precond_dim=6, merge_dims=True, precondition_1d=True, correct_bias=False, block_size=4)
    layout = dict(max_precond_dim=6, merge_limit=6, precondition_1d=True, block_size=4)
    assert kr.kronecker_layout((2, 3, 4), **layout).merged == (6, 4)
    assert [g.shape for g in kr.kronecker_layout((10, 7), **layout).groups] == [
        (4, 4),
        (4, 3),
        (2, 4),
        (2, 3),
    ]
    make_ref = lambda params: NumpySoap(params, **hp, **options)
    compare(
        lambda: _soap_jopt(hp, **options),
        make_ref,
        blocked_problem(),
        steps=50,
        noise_scale=0.03,
        float64=True,
        **F64,
    )


def test_soap_float32_close_to_float64_reference():
    hp = dict(SOAP_MLP, frequency=10)
    make_ref = lambda params: NumpySoap(params, **hp, max_precond_dim=10000)
    # Measured: at most 5e-6 apart over 60 steps; float32 rounding in the rotations is amplified
    # by Adam's division in the rotated coordinates.
    compare(
        lambda: _soap_jopt(hp),
        make_ref,
        mlp3d(),
        steps=STEPS,
        noise_scale=0.03,
        float64=False,
        rtol=1e-4,
        atol=3e-5,
    )


# --------------------------------------------------------------------------- Shampoo

SHAMPOO_MLP = dict(
    lr=1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=1e-3, frequency=3, start=2, graft_eps=1e-8
)


def _shampoo_jopt(hp: dict, **options):
    return shampoo(
        hp["lr"],
        hp["b1"],
        hp["b2"],
        hp["eps"],
        hp["weight_decay"],
        hp["frequency"],
        hp["start"],
        hp["graft_eps"],
        **options,
    )


def test_shampoo_matches_numpy_float64_on_mlp3d():
    hp = SHAMPOO_MLP
    make_ref = lambda params: NumpyShampoo(params, **hp)
    compare(lambda: _shampoo_jopt(hp), make_ref, mlp3d(), steps=STEPS, noise_scale=0.01, float64=True, **F64)


@pytest.mark.parametrize(
    "options",
    [
        dict(graft_type="adagrad", block_size=4, exponent_override=2, nesterov=False),
        dict(graft_type="rmsprop", block_size=4, merge_dims=True, precondition_1d=False),
        dict(graft_type="none", block_size=4, max_precond_dim=3),
    ],
    ids=["adagrad-blocks-p2", "rmsprop-merged", "gupta-sums-sgd-skipped-dims"],
)
def test_shampoo_blocks_and_grafting_match_numpy_float64(options):
    hp = dict(SHAMPOO_MLP, b2=1.0 if options["graft_type"] != "rmsprop" else 0.9, start=0, lr=3e-3)
    make_ref = lambda params: NumpyShampoo(params, **hp, **options)
    compare(
        lambda: _shampoo_jopt(hp, **options),
        make_ref,
        blocked_problem(),
        steps=50,
        noise_scale=0.01,
        float64=True,
        **F64,
    )


def test_shampoo_float32_close_to_float64_reference():
    hp = SHAMPOO_MLP
    make_ref = lambda params: NumpyShampoo(params, **hp)
    # Measured: at most 7e-6 apart over 60 steps; the float32 eigh of the factors (eigenvalues down
    # to eps = 1e-6) rounds the inverse roots to ~1e-5 relative.
    compare(
        lambda: _shampoo_jopt(hp),
        make_ref,
        mlp3d(),
        steps=STEPS,
        noise_scale=0.01,
        float64=False,
        rtol=1e-4,
        atol=3e-5,
    )


# --------------------------------------------------------------------------- hyperparameters


def test_array_hyperparameters_agree_with_python_numbers():
    problem = mlp3d()
    noise = gradient_noise(problem.params, 30, 0.03)
    as_arrays = lambda d: {
        k: jnp.asarray(v, jnp.int32 if isinstance(v, int) else jnp.float32) for k, v in d.items()
    }
    soap_hp = dict(CASES[0].kwargs, eps=1e-8, precondition_frequency=4)
    for make, hp in ((soap, soap_hp), (shampoo, CASES[1].kwargs)):
        numbers = run_jopt(make(**hp), problem, noise)
        arrays = run_jopt(make(**as_arrays(hp)), problem, noise)
        # 1 - b in float32 instead of Python's double: ~1e-7 relative, amplified by the eigh/QR.
        for a, e in zip(jax.tree.leaves(arrays), jax.tree.leaves(numbers)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-4, atol=1e-5)


def test_bad_hyperparameters_raise_value_error():
    with pytest.raises(ValueError, match="b1 must be in"):
        soap(b1=1.0)
    with pytest.raises(ValueError, match="precondition_frequency must be"):
        soap(precondition_frequency=0)
    with pytest.raises(ValueError, match="max_precond_dim must be an int >= 1"):
        scale_by_soap(max_precond_dim=0)
    with pytest.raises(ValueError, match="eps must be in"):
        shampoo(1e-3, eps=0.0)
    with pytest.raises(ValueError, match="b2 must be in"):
        shampoo(1e-3, b2=1.5)
    with pytest.raises(ValueError, match="start_preconditioning_step must be an integer"):
        shampoo(1e-3, start_preconditioning_step=1.5)
    with pytest.raises(ValueError, match="graft_type must be one of"):
        scale_by_shampoo(graft_type="sgd-ish")


def test_layout_merging_blocking_and_skipping():
    assert kr.merged_shape((2, 8, 8), 16) == np_merge((2, 8, 8), 16) == (16, 8)
    for shape, limit in [((3, 1, 4, 100), 12), ((1, 1), 8), ((5, 8), 10000), ((7, 30, 2, 2), 20)]:
        assert kr.merged_shape(shape, limit) == np_merge(shape, limit), shape
    layout = kr.kronecker_layout((9, 5), block_size=4, max_precond_dim=3)
    assert [(g.count, g.shape, g.factored) for g in layout.groups] == [
        ((2, 1), (4, 4), (False, False)),
        ((2, 1), (4, 1), (False, False)),
        ((1, 1), (1, 4), (False, False)),
        ((1, 1), (1, 1), (False, False)),
    ]
    layout = kr.kronecker_layout((9, 5), block_size=4)
    assert [(g.count, g.shape, g.factored) for g in layout.groups] == [
        ((2, 1), (4, 4), (True, True)),
        ((2, 1), (4, 1), (True, False)),
        ((1, 1), (1, 4), (False, True)),
        ((1, 1), (1, 1), (False, False)),
    ]
    assert not kr.kronecker_layout((8,), precondition_1d=False).has_factors
    assert not kr.kronecker_layout((20, 30), max_precond_dim=10).has_factors
    x = jnp.arange(45.0).reshape(9, 5)
    blocks = kr.to_blocks(x, layout)
    assert [b.shape for b in blocks] == [(2, 4, 4), (2, 4, 1), (1, 1, 4), (1, 1, 1)]
    np.testing.assert_array_equal(blocks[0][1], x[4:8, :4])
    np.testing.assert_array_equal(kr.from_blocks(blocks, layout), x)


# --------------------------------------------------------------------------- generic cases

# eps is larger than the defaults here: the generic tests compare float32 runs that differ only
# in rounding (jit vs eager, batched vs not) on full-batch gradients, where SOAP's Adam step
# normalizes rounding-sized rotated entries (eps=1e-8) and Shampoo's inverse roots of
# eigenvalues near eps=1e-6 amplify rounding to ~1e-5 relative.
CASES: list[OptCase] = [
    OptCase(
        "soap",
        soap,
        dict(
            learning_rate=3e-3,
            b1=0.95,
            b2=0.95,
            shampoo_beta=0.9,
            eps=1e-3,
            weight_decay=0.01,
            precondition_frequency=10,
        ),
        converge_kwargs=dict(
            learning_rate=0.03,
            b1=0.95,
            b2=0.95,
            shampoo_beta=0.9,
            eps=1e-8,
            weight_decay=0.0,
            precondition_frequency=10,
        ),
    ),
    OptCase(
        "shampoo",
        shampoo,
        dict(
            learning_rate=1e-2,
            b1=0.9,
            b2=0.99,
            eps=1e-4,
            weight_decay=1e-4,
            precondition_frequency=2,
            start_preconditioning_step=1,
            graft_eps=1e-8,
        ),
        converge_kwargs=dict(
            learning_rate=0.03,
            b1=0.9,
            b2=0.99,
            eps=1e-6,
            weight_decay=0.0,
            precondition_frequency=2,
            start_preconditioning_step=1,
            graft_eps=1e-8,
        ),
    ),
]
