r"""L-BFGS: quasi-Newton directions with a line search, for full-batch problems.

:func:`lbfgs` is ``chain(scale_by_lbfgs, scale(-1) or scale_by_learning_rate,
line search)``, optax's composition, so with Python-number hyperparameters its
float32 and float64 trajectories equal ``optax.lbfgs``'s bit for bit. The
typical loop reuses the value and gradient the line search computed at the
accepted point::

    value_and_grad = jopt.value_and_grad_from_state(loss)
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    params = jopt.apply_updates(params, updates)
"""

from __future__ import annotations

from typing import Any

from jopt.core import GradientTransformation, chain, identity
from jopt.hyperparams import Hyperparam
from jopt.transforms.quasi_newton import scale_by_lbfgs
from jopt.transforms.scaling import scale, scale_by_learning_rate
from jopt.transforms.zoom_linesearch import scale_by_zoom_linesearch

__all__ = ["lbfgs"]

_DEFAULT_LINESEARCH = scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")


def lbfgs(
    learning_rate: Hyperparam | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: Any | None = _DEFAULT_LINESEARCH,
) -> GradientTransformation:
    r"""L-BFGS (Liu & Nocedal, 1989) with a zoom line search by default.

    .. math::

        d_k = -\eta\, H_k \nabla f(w_k), \qquad w_{k+1} = w_k + \alpha_k d_k,

    where :math:`H_k` is the limited-memory inverse-Hessian estimate of
    :func:`jopt.scale_by_lbfgs`, :math:`\eta` the ``learning_rate`` (1 when
    ``None``) and :math:`\alpha_k` the step chosen by ``linesearch`` (1 when
    ``None``). The default line search is
    ``scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")``
    (strong Wolfe conditions, first trial step 1), which needs the extra
    arguments ``value``, ``grad`` and ``value_fn``.

    Args:
      learning_rate: optional :math:`\eta` (number, array or schedule); by
        default the line search sets the step size.
      memory_size: number of difference pairs kept (static, >= 1).
      scale_init_precond: scale the initial inverse Hessian by
        :math:`\langle s, y\rangle / \|y\|^2` (static).
      linesearch: a line search such as :func:`jopt.scale_by_zoom_linesearch` or
        :func:`jopt.scale_by_backtracking_linesearch`, or ``None`` (fixed step).

    Example:
      Minimising the Rosenbrock function from (-1, 1):

      >>> import jax, jax.numpy as jnp, jopt
      >>> def f(x):
      ...     return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
      >>> opt = jopt.lbfgs()
      >>> value_and_grad = jopt.value_and_grad_from_state(f)
      >>> @jax.jit
      ... def step(params, state):
      ...     value, grad = value_and_grad(params, state=state)
      ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     return jopt.apply_updates(params, updates), state
      >>> params = jnp.array([-1.0, 1.0])
      >>> state = opt.init(params)
      >>> for _ in range(40):
      ...     params, state = step(params, state)
      >>> print(jnp.round(params, 4))
      [1. 1.]
    """
    base_scaling = scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate)
    # A jopt line search takes any extra argument (data for its value_fn), so this chain does too.
    return chain(
        scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        base_scaling,
        identity() if linesearch is None else linesearch,
    )
