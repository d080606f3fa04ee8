"""Trial schedulers: what happens to each trial after every segment.

The trial-scheduler protocol (:class:`TrialScheduler`). After every segment of a chunk the
engine records each trial that ran in the :class:`~jopt.sweep.history.History` -- giving it the
final status ``"diverged"``, ``"stopped"`` (early stopping of every fold) or ``"completed"``
(it reached ``steps``) when that applies, else leaving it ``"running"`` -- and then calls
``decide(history, trials)``. It returns a decision per trial (missing ones: :data:`CONTINUE`):

* :data:`CONTINUE` -- keep training (a finished trial just ends);
* :data:`PRUNE` -- end it now, status ``"pruned"``; its slot is refilled with the next trial;
* :data:`PAUSE` -- stop training it but keep its state: :meth:`TrialScheduler.review` may resume
  it later (synchronous successive halving waits for a whole rung this way); a trial still
  paused when the search ends is pruned;
* :data:`COMPLETE` -- end it now as ``"completed"``;
* :class:`Exploit` ``(donor, config)`` -- replace its training state by an exact copy of
  ``donor``'s (same chunk) and continue with ``config`` (PBT); also revives a diverged trial.

``review(history, paused, free)`` is called while trials are paused and returns
``(resume, prune)``; ``chunk_trials(history, group, waiting)`` may choose how many trials the
next chunk of ``group`` is sized for. State beyond the history goes through ``state_dict`` and
``load_state_dict``, as for samplers.

A new early-stopping rule is one small class; :class:`MedianStopping` is the whole of the
median stopping rule (Golovin et al., 2017).

Example (a trial pruned by the median rule):
  >>> from jopt.sweep.history import History
  >>> h = History("min")
  >>> for t, values in enumerate([[3.0, 2.0], [3.0, 1.0], [2.0, 1.5], [5.0, 4.0]]):
  ...     _ = h.add(t, {}, ())
  ...     for i, v in enumerate(values[: 2 if t < 3 else 1]):
  ...         h.record(t, 10 * (i + 1), [v], {}, {}, [10 * (i + 1)])
  ...     h[t].status = "completed" if t < 3 else "running"
  >>> MedianStopping(min_trials=3).decide(h, [3])
  {3: 'prune'}
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from jopt.sweep.history import History

__all__ = ["COMPLETE", "CONTINUE", "PAUSE", "PRUNE", "Exploit", "MedianStopping", "TrialScheduler"]

CONTINUE, PRUNE, PAUSE, COMPLETE = "continue", "prune", "pause", "complete"


class Exploit(NamedTuple):
    """Copy ``donor``'s training state into this trial and continue with ``config``."""

    donor: int
    config: Mapping[str, Any]


Decision = Any  # CONTINUE | PRUNE | PAUSE | COMPLETE | Exploit


class TrialScheduler:
    """Base class of the trial-scheduler protocol: every trial runs to ``steps``."""

    def decide(self, history: History, trials: Sequence[int]) -> Mapping[int, Decision]:
        """Decisions for the trials that just ran a segment (see the module docstring)."""
        return {}

    def review(
        self, history: History, paused: Sequence[int], free: int
    ) -> tuple[Sequence[int], Sequence[int]]:
        """``(resume, prune)`` among the ``paused`` trials; ``free``: trials the current chunk can
        take now."""
        return (), ()

    def chunk_trials(self, history: History, group: tuple, waiting: int) -> int | None:
        """Trials the next chunk of ``group`` should be sized for (``waiting`` are queued)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class MedianStopping(TrialScheduler):
    """The median stopping rule (Golovin et al., 2017): prune a running trial at step ``s`` if its
    best objective so far is worse than the median, over the completed trials, of their running
    mean objective up to step ``s``.

    Args:
      min_trials: completed trials needed before anything is pruned.
      grace_steps: never prune before this many steps.
    """

    def __init__(self, *, min_trials: int = 3, grace_steps: int = 0):
        self.min_trials, self.grace_steps = int(min_trials), int(grace_steps)

    def decide(self, history: History, trials: Sequence[int]) -> dict[int, str]:
        done = [history[t] for t in history.with_status("completed", "stopped")]
        out = {}
        for t in trials:
            rec = history[t]
            if rec.status != "running" or rec.age < self.grace_steps:
                continue
            means = []
            for r in done:
                seen = [history.score(r.trial, s) for s in r.step if s <= rec.age]
                if seen:
                    means.append(sum(seen) / len(seen))
            if len(means) >= self.min_trials:
                best = min(history.score(t, s) for s in rec.step)
                if best > statistics.median(means):
                    out[t] = PRUNE
        return out
