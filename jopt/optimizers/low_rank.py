r"""GaLore (Zhao et al., 2024) as an optimizer: low-rank projected base steps, weight decay, learning rate.

:func:`galore` has the name, signature and defaults of ``optax.contrib.galore``
(optax 0.2.8); with Python-number hyperparameters its float32 and float64
results equal optax's bit for bit.
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain
from jopt.hyperparams import Hyperparam
from jopt.transforms.low_rank import DimNumsOrFn, scale_by_galore
from jopt.transforms.scaling import StatefulSchedule, scale_by_learning_rate
from jopt.transforms.weight_decay import MaskOrFn, add_decayed_weights

__all__ = ["galore"]


def galore(
    learning_rate: Hyperparam | StatefulSchedule,
    rank: int = 128,
    update_proj_gap: Hyperparam = 200,
    scale: Hyperparam = 1.0,
    base_optimizer: Any | None = None,
    weight_decay: Hyperparam = 0.0,
    mask: MaskOrFn = None,
    weight_dimension_numbers: DimNumsOrFn | None = None,
) -> GradientTransformation:
    r"""GaLore: the base optimizer (Adam by default) on rank-:math:`r` projections of matrix gradients.

    .. math::

        \theta_t = \theta_{t-1} - \eta_t \big(s\, P_t\, \operatorname{base}(P_t^\top G_t)
            + \lambda \theta_{t-1}\big)

    for a matrix leaf with at least as many rows as columns (:math:`G_t P_t` and
    :math:`P_t^\top` on the other side otherwise), :math:`P_t` the leading
    :math:`r` left singular vectors of the gradient, refreshed every
    ``update_proj_gap`` steps; other leaves get :math:`\operatorname{base}(g_t)`.
    Weight decay is decoupled and applied in the full space. See
    :func:`jopt.scale_by_galore`.

    Args:
      learning_rate: :math:`\eta \ge 0`; number, array, schedule or stateful schedule.
      rank: :math:`r`, an int (it fixes the state's shapes).
      update_proj_gap: integer :math:`\ge 1`, steps between projector refreshes.
      scale: :math:`s`, factor on the projected-back updates.
      base_optimizer: a transform that does not need ``params`` (default
        ``scale_by_adam()``); with a learning rate of its own, set ``learning_rate=1``.
      weight_decay: :math:`\lambda \ge 0`.
      mask: pytree of bools, or ``params -> pytree``, selecting the leaves to decay.
      weight_dimension_numbers: which leaves are matrices, and how (see
        :class:`jopt.GaLoreDimensionNumbers`).

    Example:
      >>> import jax, jax.numpy as jnp, jopt
      >>> opt = jopt.galore(learning_rate=0.1, rank=2, update_proj_gap=10)
      >>> params = {"w": jnp.ones((6, 4)), "b": jnp.ones(4)}
      >>> loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
      >>> state = opt.init(params)
      >>> state[0].base_optimizer_state.mu["w"].shape  # Adam's moments of w are 2 x 4
      (2, 4)
      >>> @jax.jit
      ... def step(params, state):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     return jopt.apply_updates(params, updates), state
      >>> for _ in range(50):
      ...     params, state = step(params, state)
      >>> bool(loss(params) < 0.1 * 28.0)
      True
    """
    return chain(
        scale_by_galore(
            rank=rank,
            update_proj_gap=update_proj_gap,
            scale=scale,
            base_optimizer=base_optimizer,
            weight_dimension_numbers=weight_dimension_numbers,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
