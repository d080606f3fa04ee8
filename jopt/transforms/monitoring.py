r"""Measurements of the updates kept in the optimizer state (``optax.snapshot`` / ``optax.monitor``).

Put :func:`snapshot` or :func:`monitor` anywhere in a chain to record a function
of the updates at that point (e.g. the gradient norm before clipping); the
updates pass through unchanged::

    tx = jopt.chain(
        jopt.snapshot("grad_norm", jopt.tree.tree_global_norm), jopt.clip_by_global_norm(1.0), ...
    )

:func:`measure_with_ema` turns a measurement into its exponential moving average,
for use inside :func:`monitor`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jopt.core import GradientTransformation, as_transformation, chain, stateless, transformation
from jopt.hyperparams import Hyperparam
from jopt.transforms.momentum import ema
from jopt.transforms.parameter_groups import _forwarded

PyTree = Any
Measure = Callable[[PyTree], PyTree]

__all__ = ["MonitorState", "SnapshotState", "measure_with_ema", "monitor", "snapshot"]


class SnapshotState(NamedTuple):
    """State of :func:`snapshot`: ``{measure_name: measurement}``."""

    measurement: dict[str, PyTree]


def snapshot(measure_name: str, measure: Measure) -> GradientTransformation:
    r"""Record ``measure(updates)`` in the state under ``measure_name``; updates pass through.

    .. math:: u \mapsto u, \qquad s \leftarrow \{\text{name}: m(u)\}

    ``init`` records ``measure(params)``, as optax does.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.snapshot("norm", jopt.tree.tree_global_norm)
      >>> u, s = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init({"w": jnp.zeros(2)}))
      >>> float(s.measurement["norm"])
      5.0
    """

    def init(params):
        return SnapshotState({measure_name: measure(params)})

    def update(updates, state, params=None, **extra_args):
        del state, params, extra_args
        return updates, SnapshotState({measure_name: measure(updates)})

    return transformation(init, update)


class MonitorState(NamedTuple):
    """State of :func:`monitor`: the latest measurements by name and each measure's own state."""

    measurements: dict[str, PyTree]
    measure_states: tuple[Any, ...]


def _as_measure(measure: Any) -> GradientTransformation:
    if callable(measure):
        return stateless(lambda updates, params, m=measure: m(updates))
    return as_transformation(measure)


def monitor(measures: dict[str, Any]) -> GradientTransformation:
    r"""Record several measurements of the updates, possibly stateful; updates pass through.

    .. math:: u \mapsto u, \qquad s.\text{measurements}[k] \leftarrow m_k(u, s_k)

    Args:
      measures: name -> a function of the updates, or a transform whose
        *output* is the measurement (e.g. :func:`measure_with_ema`), which may
        keep state and receives the extra arguments it declares.

    Deliberate difference from optax: ``init`` fills ``measurements`` with zeros
    of each measurement's shape and dtype (optax starts from an empty dict), so
    the state has the same structure before and after a step, as ``lax.scan``
    and ``jax.jit`` carries require.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.monitor({"norm": jopt.tree.tree_global_norm,
      ...                    "ema": jopt.measure_with_ema(jopt.tree.tree_global_norm, 0.5, debias=False)})
      >>> u, s = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init({"w": jnp.zeros(2)}))
      >>> float(s.measurements["norm"]), float(s.measurements["ema"])
      (5.0, 2.5)
    """
    members = {name: _as_measure(m) for name, m in measures.items()}
    names = frozenset().union(*(tx.extra_args for tx in members.values()))

    def init(params):
        states = tuple(tx.init(params) for tx in members.values())
        shapes = {
            name: jax.eval_shape(lambda p, s, tx=tx: tx.update(p, s, p)[0], params, state)
            for (name, tx), state in zip(members.items(), states)
        }
        zeros = {name: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), s) for name, s in shapes.items()}
        return MonitorState(zeros, states)

    def update(updates, state, params=None, **extra_args):
        measurements, new_states = {}, []
        for (name, tx), s in zip(members.items(), state.measure_states):
            measurements[name], s = tx.update(updates, s, params, **_forwarded(tx, extra_args))
            new_states.append(s)
        return updates, MonitorState(measurements, tuple(new_states))

    return transformation(init, update, extra_args=names)


def measure_with_ema(
    measure: Measure, decay: Hyperparam, debias: bool = True, accumulator_dtype: Any | None = None
) -> GradientTransformation:
    r"""A transform whose output is the exponential moving average of ``measure(updates)``.

    .. math:: m_t = \beta m_{t-1} + (1 - \beta)\,\mu(u_t), \quad
       \text{output } m_t / (1 - \beta^t) \text{ (debiased) or } m_t

    It is ``chain(measure, jopt.ema(decay, debias, accumulator_dtype))`` with the
    average initialized as zeros of the measurement's shape; use it in :func:`monitor`.

    Example:
      >>> import jax.numpy as jnp, jopt
      >>> tx = jopt.measure_with_ema(jopt.tree.tree_global_norm, 0.9)
      >>> out, s = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init({"w": jnp.zeros(2)}))
      >>> round(float(out), 4)
      5.0
    """
    average = ema(decay, debias, accumulator_dtype)
    of_measurement = average._replace(init=lambda params: average.init(measure(params)))
    return chain(stateless(lambda updates, params: measure(updates)), of_measurement)
