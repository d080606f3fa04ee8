"""Callbacks of a sweep: loggers and live hooks called by the engine while a search runs.

Pass ``callbacks=[cb, ...]`` to any search method (:func:`jopt.sweep.run`, :func:`~jopt.sweep.asha`,
:func:`~jopt.sweep.pbt`, ...). The engine calls, on the host, between compiled segments:

- ``cb.on_segment(boundary, history, trials)`` after every segment: ``boundary`` counts the
  segments of the search so far, ``history`` is the :class:`~jopt.sweep.history.History` and
  ``trials`` the ids of the trials that trained in that segment (their new evaluation is the last
  entry of ``history[t].step``, ``.objective`` and each ``.metrics["train/<name>"]`` /
  ``.metrics["eval/<name>"]`` list);
- ``cb.on_trial_end(history, trial)`` when a trial reaches a final status (``"completed"``,
  ``"pruned"``, ``"stopped"`` or ``"diverged"``);
- ``cb.on_end(result)`` once, with the :class:`~jopt.sweep.results.SweepResult`.

A callback is any object with at least one of these methods; a missing method is skipped
(:func:`notify`), and :class:`Callback` is a base class whose methods do nothing. Callbacks must
not modify the history. In a multi-process job only process 0 calls them (every process holds
the same history). Exceptions raised by a callback stop the search.

:class:`TensorBoardLogger` writes one TensorBoard run per trial and the hparams table (needs
``pip install tensorboardX``). Other trackers are a few lines; for example Weights & Biases (one
W&B run per trial) and MLflow (one MLflow run per trial)::

    import wandb
    from jopt import sweep

    class WandbLogger(sweep.Callback):
        def on_trial_end(self, history, trial):
            rec = history[trial]
            run = wandb.init(project="my-sweep", name=f"trial-{trial}", config=rec.config,
                             reinit="create_new")
            for i, step in enumerate(rec.step):
                run.log({"objective": rec.objective[i],
                         **{k: v[i] for k, v in rec.metrics.items()}}, step=step)
            run.summary["status"] = rec.status
            run.finish()

    import mlflow

    class MlflowLogger(sweep.Callback):
        def on_trial_end(self, history, trial):
            rec = history[trial]
            with mlflow.start_run(run_name=f"trial-{trial}"):
                mlflow.log_params({k: repr(v) for k, v in rec.config.items()})
                for i, step in enumerate(rec.step):
                    mlflow.log_metric("objective", rec.objective[i], step=step)
                    for k, v in rec.metrics.items():
                        mlflow.log_metric(k.replace("/", "_"), v[i], step=step)
                mlflow.set_tag("status", rec.status)

    result = sweep.run(task, space, 64, steps=300, callbacks=[WandbLogger(), MlflowLogger()])

Logging at ``on_trial_end`` writes each run once; log in ``on_segment`` (the last entry of each
list) to follow the trials live.

Example:
  >>> from jopt.sweep.history import History
  >>> class Printer(Callback):
  ...     def on_segment(self, boundary, history, trials):
  ...         print(boundary, [(t, history[t].last) for t in trials])
  >>> h = History()
  >>> _ = h.add(0, {"lr": 0.1}, ())
  >>> h.record(0, 10, [0.5], {}, {}, [10])
  >>> notify(check_callbacks([Printer()]), "on_segment", 1, h, [0])
  1 [(0, 0.5)]
  >>> notify(check_callbacks([Printer()]), "on_end", None)  # no on_end: skipped
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["EVENTS", "Callback", "TensorBoardLogger", "check_callbacks", "notify", "trial_run_name"]

EVENTS = ("on_segment", "on_trial_end", "on_end")


class Callback:
    """Base class of sweep callbacks: every method does nothing (see the module docstring)."""

    def on_segment(self, boundary: int, history: Any, trials: list[int]) -> None:
        """After every segment; ``trials`` trained in it."""

    def on_trial_end(self, history: Any, trial: int) -> None:
        """When ``trial`` reaches a final status."""

    def on_end(self, result: Any) -> None:
        """Once, with the search's result."""


def check_callbacks(value: Any) -> tuple:
    """The ``callbacks`` option as a tuple; ``ValueError`` unless it is ``None`` or a sequence
    (list, tuple) of objects with at least one of ``on_segment``, ``on_trial_end``, ``on_end``.

    Example:
      >>> check_callbacks(None), len(check_callbacks([Callback()]))
      ((), 1)
      >>> check_callbacks([print])  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      ...
      ValueError: callbacks[0] must have an on_segment, on_trial_end or on_end method, got ...
    """
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise ValueError(
            f"callbacks must be a list or tuple of callback objects (jopt.sweep.Callback), "
            f"got {type(value).__name__}"
        )
    for i, cb in enumerate(value):
        if not any(callable(getattr(cb, name, None)) for name in EVENTS):
            raise ValueError(
                f"callbacks[{i}] must have an on_segment, on_trial_end or on_end method, "
                f"got {type(cb).__name__}"
            )
    return tuple(value)


def notify(callbacks: Sequence[Any], name: str, *args: Any) -> None:
    """Call ``cb.<name>(*args)`` for every callback that has that method, in order."""
    if name not in EVENTS:
        raise ValueError(f"name must be one of {EVENTS}, got {name!r}")
    for cb in callbacks:
        method = getattr(cb, name, None)
        if callable(method):
            method(*args)


# ----------------------------------------------------------------------------- TensorBoard


def _import_tensorboardx():
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import api_pb2, event_pb2, plugin_hparams_pb2, summary_pb2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "TensorBoardLogger needs tensorboardX: pip install tensorboardX (or jopt[dev])"
        ) from e
    return EventsWriter, event_pb2, summary_pb2, api_pb2, plugin_hparams_pb2


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    name = getattr(value, "__name__", None)
    return name if callable(value) and name else str(value)


def trial_run_name(trial: int, config: Mapping[str, Any]) -> str:
    """The default run name: ``trial_0007-lr=0.01,width=64`` (safe characters, at most 120).

    Example:
      >>> trial_run_name(7, {"lr": 0.0123456, "act": abs, "opt": "adam w"})
      'trial_0007-lr=0.0123,act=abs,opt=adam_w'
    """
    text = ",".join(f"{k}={_label(v)}" for k, v in config.items())
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)
    return (f"trial_{trial:04d}-{text}" if text else f"trial_{trial:04d}")[:120]


def _hparam_value(value: Any) -> bool | str | float:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):  # str subclasses too (a conditional space's branch key)
        return str(value)
    if isinstance(value, (int, float)):
        return float(value)
    return _label(value) if callable(value) else repr(value)


# the hparams proto's value field and column type for each kind of value _hparam_value returns
_KINDS = {
    bool: ("bool_value", "DATA_TYPE_BOOL"),
    str: ("string_value", "DATA_TYPE_STRING"),
    float: ("number_value", "DATA_TYPE_FLOAT64"),
}


class TensorBoardLogger(Callback):
    """Writes a sweep for TensorBoard: one run (``logdir/<run name>``) per trial with the scalars
    ``objective``, ``train/<name>`` and ``eval/<name>`` at every evaluation (x axis: the trial's
    step), and the hparams plugin's table. When a trial ends its run gets an hparams session:
    its configuration (functions by name, other non-numbers by ``repr``, ``None`` left out) and
    status, and the metrics ``hparam/objective`` (the final objective) and
    ``hparam/best_objective``; a diverged trial's session ends as a failure. At the end the
    table's columns (every hyperparameter and scalar) are written once, in the root run; before
    that TensorBoard infers them from the sessions. View it with ``tensorboard --logdir <logdir>``.

    Args:
      logdir: the directory of the runs (created if needed).
      run_name: ``fn(trial, config) -> str``, a run's subdirectory (default :func:`trial_run_name`;
        taken from the configuration the trial first had).

    Each segment's new evaluations are flushed to disk after that segment. In population-based
    training the hparams table shows a member's final hyperparameters. A resumed search starts
    new event files in the same runs and writes a trial's evaluations again (TensorBoard shows
    the latest value for a step). Needs ``tensorboardX`` (imported when the logger is created).

    Example:
      >>> import tempfile, os
      >>> from jopt.sweep.history import History
      >>> h = History()
      >>> _ = h.add(0, {"lr": 0.1}, ())
      >>> h.record(0, 10, [0.5], {"loss": [0.7]}, {}, [10])
      >>> with tempfile.TemporaryDirectory() as d:
      ...     tb = TensorBoardLogger(d)
      ...     tb.on_segment(1, h, [0])
      ...     h[0].status = "completed"
      ...     tb.on_trial_end(h, 0)
      ...     print(os.listdir(d))
      ['trial_0000-lr=0.1']
    """

    def __init__(self, logdir: str | os.PathLike, *, run_name: Callable[[int, dict], str] | None = None):
        if not isinstance(logdir, (str, os.PathLike)):
            raise ValueError(f"logdir must be a path (str or os.PathLike), got {type(logdir).__name__}")
        if run_name is not None and not callable(run_name):
            raise ValueError(f"run_name must be a function (trial, config) -> str, got {run_name!r}")
        tbx = _import_tensorboardx()
        self._EventsWriter, self._event_pb2, self._summary_pb2, self._api_pb2, self._hp_pb2 = tbx
        self.logdir = Path(logdir)
        self._run_name = run_name or trial_run_name
        self._names: dict[int, str] = {}
        self._writers: dict[int, Any] = {}
        self._written: dict[int, int] = {}  # evaluations already written per trial
        self._files = 0
        self._ended: set[int] = set()
        self._hp_kinds: dict[str, str] = {}  # hyperparameter -> DataType name (the experiment's columns)
        self._metric_tags: dict[str, None] = {}  # scalar tags seen, in order

    def run_dir(self, trial: int, config: Mapping[str, Any] | None = None) -> Path:
        """The directory of ``trial``'s run (named when first seen, from ``config``)."""
        if trial not in self._names:
            self._names[trial] = str(self._run_name(int(trial), dict(config or {})))
        return self.logdir / self._names[trial]

    # ------------------------------------------------------------------ writing
    def _writer(self, trial: int, config: Mapping[str, Any]):
        if trial not in self._writers:
            path = self.run_dir(trial, config)
            path.mkdir(parents=True, exist_ok=True)
            self._files += 1
            suffix = f".{os.getpid()}.{self._files}"  # never reuse a file name (same second)
            self._writers[trial] = self._EventsWriter(str(path / "events"), suffix)
        return self._writers[trial]

    def _event(self, writer, step: int, summary) -> None:
        writer.write_event(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _scalars(self, writer, step: int, values: Mapping[str, float]) -> None:
        self._metric_tags.update(dict.fromkeys(values))
        V = self._summary_pb2.Summary.Value
        summary = self._summary_pb2.Summary(
            value=[V(tag=k, simple_value=float(v)) for k, v in values.items()]
        )
        self._event(writer, step, summary)

    def _write_new(self, trial: int, config, steps: Sequence[int], series: Mapping[str, Sequence[float]]):
        done = self._written.get(trial, 0)
        if len(steps) < done:  # the trial started again from scratch
            done = 0
        if len(steps) > done:
            w = self._writer(trial, config)
            for i in range(done, len(steps)):
                self._scalars(w, steps[i], {k: v[i] for k, v in series.items() if i < len(v)})
        self._written[trial] = len(steps)

    def _write_record(self, rec) -> None:
        self._write_new(rec.trial, rec.config, rec.step, {"objective": rec.objective, **rec.metrics})

    def _plugin(self, tag: str, **data: Any):
        """A Summary with one hparams-plugin value (experiment, session start or end)."""
        content = self._hp_pb2.HParamsPluginData(version=0, **data).SerializeToString()
        plugin = self._summary_pb2.SummaryMetadata.PluginData(plugin_name="hparams", content=content)
        meta = self._summary_pb2.SummaryMetadata(plugin_data=plugin)
        return self._summary_pb2.Summary(value=[self._summary_pb2.Summary.Value(tag=tag, metadata=meta)])

    def _write_hparams(self, trial: int, config, status: str, final: float, best: float, age: int) -> None:
        """The trial's hparams session (start with its values, end with its status) and metrics."""
        hp = {k: _hparam_value(v) for k, v in config.items() if v is not None}
        hp.setdefault("status", status)
        start = self._hp_pb2.SessionStartInfo(start_time_secs=time.time())
        for name, value in hp.items():
            field, kind = _KINDS[type(value)]
            setattr(start.hparams[name], field, value)
            self._hp_kinds.setdefault(name, kind)
        code = self._api_pb2.Status.Value("STATUS_FAILURE" if status == "diverged" else "STATUS_SUCCESS")
        end = self._hp_pb2.SessionEndInfo(status=code, end_time_secs=time.time())
        w = self._writer(trial, config)
        self._event(w, 0, self._plugin("_hparams_/session_start_info", session_start_info=start))
        self._scalars(w, age, {"hparam/objective": final, "hparam/best_objective": best})
        self._event(w, age, self._plugin("_hparams_/session_end_info", session_end_info=end))
        w.close()
        del self._writers[trial]
        self._ended.add(trial)

    def _write_experiment(self) -> None:
        """The hparams table's columns, once, in the root run: every hyperparameter and scalar."""
        api = self._api_pb2
        infos = [api.HParamInfo(name=n, type=api.DataType.Value(k)) for n, k in self._hp_kinds.items()]
        tags = ["hparam/objective", "hparam/best_objective"]
        tags += [t for t in self._metric_tags if t not in tags]
        metrics = [api.MetricInfo(name=api.MetricName(tag=t)) for t in tags]
        experiment = api.Experiment(hparam_infos=infos, metric_infos=metrics, time_created_secs=time.time())
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._files += 1
        w = self._EventsWriter(str(self.logdir / "events"), f".{os.getpid()}.{self._files}")
        self._event(w, 0, self._plugin("_hparams_/experiment", experiment=experiment))
        w.close()

    def _flush(self, trials) -> None:
        for t in trials:
            if t in self._writers:
                self._writers[t].flush()

    # ------------------------------------------------------------------ callback methods
    def on_segment(self, boundary: int, history: Any, trials: list[int]) -> None:
        for t in trials:
            self._write_record(history[t])
        self._flush(trials)

    def on_trial_end(self, history: Any, trial: int) -> None:
        rec = history[trial]
        self._write_record(rec)
        r = history.result(trial)
        self._write_hparams(trial, rec.config, rec.status, r.final_objective, r.best_objective, rec.age)

    def on_end(self, result: Any) -> None:
        """Writes what the earlier calls did not (e.g. trials finished before a resume) and closes."""
        for t in result.trials:
            if t.trial in self._ended:
                continue
            steps = t.history.get("step", [])
            self._write_new(
                t.trial, t.hyperparams, steps, {k: v for k, v in t.history.items() if k != "step"}
            )
            age = steps[-1] if steps else 0
            self._write_hparams(t.trial, t.hyperparams, t.status, t.final_objective, t.best_objective, age)
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        if self._hp_kinds:
            self._write_experiment()
