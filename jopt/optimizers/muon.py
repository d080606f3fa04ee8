r"""Muon (Jordan et al., 2024; Liu et al., 2025): orthogonalised momentum for matrices, AdamW for the rest.

``jopt.muon`` has the signature and defaults of ``optax.contrib.muon`` (optax
0.2.8) and, with Python-number hyperparameters, its float32 results bit for bit.
It is a :func:`jopt.partition` of two chains:

* ``"muon"`` (the 2-D weights, or those given :class:`MuonDimensionNumbers`):
  ``scale_by_muon -> scale_by_shape -> add_decayed_weights -> scale_by_learning_rate``;
* ``"adam"`` (every other leaf): :func:`jopt.adamw` with the ``adam_*`` arguments
  (or the ``fallback`` transform).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.optimizers.adam_family import adamw
from jopt.transforms.muon import MeshAxes, WeightDimNumOrFn, scale_by_muon, scale_by_shape
from jopt.transforms.orthogonalize import DEFAULT_NS_COEFFS, MuonDimensionNumbers, is_dimension_numbers
from jopt.transforms.parameter_groups import partition
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

LearningRate = Hyperparam | StatefulSchedule
PyTree = Any

__all__ = ["muon", "muon_labels"]


def muon_labels(muon_weight_dimension_numbers: WeightDimNumOrFn, params: PyTree) -> PyTree:
    """``"muon"`` or ``"adam"`` for every leaf of ``params`` (the partition :func:`muon` uses).

    Without dimension numbers the 2-D leaves are ``"muon"``; otherwise the
    leaves under a :class:`MuonDimensionNumbers` are, and those under ``None`` are not.

    Example:
      >>> import jax.numpy as jnp
      >>> from jopt.optimizers.muon import muon_labels
      >>> from jopt.transforms.orthogonalize import MuonDimensionNumbers
      >>> p = {"w": jnp.ones((2, 3)), "b": jnp.ones(3), "stack": jnp.ones((2, 3, 3))}
      >>> muon_labels(None, p)
      {'b': 'adam', 'stack': 'adam', 'w': 'muon'}
      >>> muon_labels({"w": MuonDimensionNumbers(), "b": None, "stack": MuonDimensionNumbers(1, 2)}, p)
      {'b': 'adam', 'stack': 'muon', 'w': 'muon'}
    """
    if muon_weight_dimension_numbers is None:
        return jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adam", params)
    spec = muon_weight_dimension_numbers
    if callable(spec) and not is_dimension_numbers(spec):
        spec = spec(params)
    is_leaf = lambda x: x is None or is_dimension_numbers(x)
    specs, treedef = jax.tree.flatten(spec, is_leaf=is_leaf)
    subtrees = treedef.flatten_up_to(params)
    labelled = [
        jax.tree.map(lambda _, d=d: "adam" if d is None else "muon", sub) for d, sub in zip(specs, subtrees)
    ]
    return treedef.unflatten(labelled)


def muon(
    learning_rate: LearningRate,
    ns_coeffs: Hyperparam | str = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: Hyperparam = 0.95,
    eps: Hyperparam = 1e-8,
    weight_decay: Hyperparam = 0.0,
    weight_decay_mask: MaskOrFn = None,
    mu_dtype: Any | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: Hyperparam = 0.9,
    adam_b2: Hyperparam = 0.999,
    adam_eps_root: Hyperparam = 0.0,
    adam_weight_decay: Hyperparam = 0.0,
    adam_learning_rate: LearningRate | None = None,
    muon_weight_dimension_numbers: WeightDimNumOrFn = None,
    consistent_rms: Hyperparam | None = None,
    batch_matrices: bool = False,
    ns_mesh_axes: MeshAxes = "auto",
    fallback: Any | None = None,
) -> GradientTransformation:
    r"""Muon: momentum orthogonalised by Newton–Schulz for weight matrices, AdamW for the other leaves.

    For each matrix parameter :math:`W` (fan-in :math:`n`, fan-out :math:`m`):

    .. math::

        O_t &= \operatorname{NS}(\hat m_t) \approx U V^{\mathsf H}, \qquad
        \hat m_t = U \Sigma V^{\mathsf H} \text{ (Nesterov momentum, see } \texttt{scale\_by\_muon}) \\
        W_t &= W_{t-1} - \eta_t \big(s\, O_t + \lambda W_{t-1}\big), \qquad
        s = \sqrt{\max(1, m/n)} \ \text{ or } \ \rho\sqrt{\max(n, m)} \ (\texttt{consistent\_rms} = \rho)

    With ``consistent_rms=0.2`` this is Moonlight's Muon (Liu et al., 2025): the
    matrix updates have AdamW's RMS, so both groups can share the learning rate
    and weight decay. The other leaves (vectors, scalars, leaves given ``None``)
    follow :func:`jopt.adamw` (``adam_b1``, ``adam_b2``, ``eps``, ``adam_eps_root``,
    ``adam_weight_decay``, ``adam_learning_rate`` — default ``learning_rate``).

    Args:
      learning_rate: :math:`\eta`, number, array or schedule.
      ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov, adaptive, preconditioning:
        see :func:`jopt.transforms.muon.scale_by_muon` (``eps`` is also AdamW's).
      weight_decay: :math:`\lambda \ge 0` for the Muon group (scaled by the learning rate).
      weight_decay_mask: mask (or ``params -> mask``) of the Muon leaves to decay.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay, adam_learning_rate: the AdamW group's.
      muon_weight_dimension_numbers: ``None`` (the 2-D leaves are Muon's), or a
        pytree (prefix) of :class:`MuonDimensionNumbers` / ``None`` (``None``: AdamW),
        or a function ``params -> pytree``. E.g. ``MuonDimensionNumbers(1, 2)`` for
        a ``(layers, d_in, d_out)`` stack, ``MuonDimensionNumbers((0, 1, 2), 3)``
        for an ``(h, w, c_in, c_out)`` convolution kernel.
      consistent_rms: :math:`\rho \ge 0`; ``None``: the width-transfer factor.
      batch_matrices: orthogonalise equal-shape matrices in one batched chain of
        products (faster; equal to optax to float32 rounding, not bit for bit).
      ns_mesh_axes: under a device mesh, the mesh axes over which the stacked
        matrices are distributed (``"auto"``: all; ``None``: XLA decides).
      fallback: a transform for the non-Muon leaves instead of AdamW (jopt's
        extension; the ``adam_*`` arguments are then unused).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jopt.optimizers.muon import muon
      >>> params = {"w": jnp.eye(3), "b": jnp.zeros(3)}
      >>> opt = muon(learning_rate=0.02, consistent_rms=0.2)
      >>> state = opt.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum((p["w"] @ jnp.ones(3) + p["b"] - 1.0) ** 2))(params)
      >>> updates, state = opt.update(grads, state, params)
      >>> jax.tree.map(lambda u: u.shape, updates)
      {'b': (3,), 'w': (3, 3)}
    """
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    dims = MuonDimensionNumbers() if muon_weight_dimension_numbers is None else muon_weight_dimension_numbers
    matrices = chain(
        scale_by_muon(
            ns_coeffs,
            ns_steps,
            beta,
            eps,
            mu_dtype,
            nesterov=nesterov,
            adaptive=adaptive,
            preconditioning=preconditioning,
            weight_dimension_numbers=dims,
            batch_matrices=batch_matrices,
            ns_mesh_axes=ns_mesh_axes,
        ),
        scale_by_shape(dims, consistent_rms),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
    if fallback is None:
        fallback = adamw(
            adam_learning_rate,
            adam_b1,
            adam_b2,
            eps,
            adam_eps_root,
            mu_dtype,
            weight_decay=adam_weight_decay,
            nesterov=nesterov,
        )
    labels: Callable[[PyTree], PyTree] = lambda tree: muon_labels(muon_weight_dimension_numbers, tree)
    return partition({"muon": matrices, "adam": fallback}, labels)
