"""Losses are optax's: ``jopt.losses`` is ``optax.losses`` when optax is installed.

jopt does not reimplement losses; optax's are pure functions that work with any
optimizer. Import them next to jopt (``import optax`` then
``optax.losses.softmax_cross_entropy_with_integer_labels``), or through this
module, which re-exports ``optax.losses`` so that ``import jopt as optax``
programs keep their ``optax.losses.*`` calls.

Example:
  >>> import jax.numpy as jnp, jopt
  >>> loss = jopt.losses.squared_error(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]))
  >>> loss.tolist()
  [0.0, 4.0]
"""

try:
    import optax.losses as _optax_losses
except ImportError as err:  # pragma: no cover - optax is a dev dependency
    raise ImportError(
        "jopt.losses re-exports optax.losses and needs optax: pip install optax "
        "(jopt does not reimplement losses)"
    ) from err

__all__ = [name for name in dir(_optax_losses) if not name.startswith("_")]
globals().update({name: getattr(_optax_losses, name) for name in __all__})
