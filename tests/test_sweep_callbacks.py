"""Sweep callbacks: the protocol helpers and the TensorBoard logger (event files read back)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from tensorboardX.proto import api_pb2, event_pb2, plugin_hparams_pb2  # jopt[dev]

from jopt import sweep
from jopt.sweep.callbacks import Callback, TensorBoardLogger, check_callbacks, notify, trial_run_name
from jopt.sweep.history import History
from jopt.sweep.results import SweepResult

# ----------------------------------------------------------------------------- reading event files


def read_events(run: Path) -> list:
    """Every Event of every event file in ``run`` (TFRecords: length, crc, data, crc)."""
    events = []
    for path in sorted(run.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            events.append(event_pb2.Event.FromString(data[i + 12 : i + 12 + n]))
            i += 12 + n + 4
        assert i == len(data)
    return events


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for ev in read_events(run):
        for v in ev.summary.value:
            if v.WhichOneof("value") == "simple_value":
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def hparams_of(run: Path) -> dict:
    """The hparams plugin's data written in ``run``: session start values, end status, experiment."""
    out = {"hparams": {}, "status": None, "experiment": None}
    for ev in read_events(run):
        for v in ev.summary.value:
            if v.metadata.plugin_data.plugin_name != "hparams":
                continue
            data = plugin_hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
            kind = data.WhichOneof("data")
            if kind == "session_start_info":
                for k, val in data.session_start_info.hparams.items():
                    out["hparams"][k] = getattr(val, val.WhichOneof("kind"))
            elif kind == "session_end_info":
                out["status"] = api_pb2.Status.Name(data.session_end_info.status)
            else:
                exp = data.experiment
                out["experiment"] = (
                    {h.name: api_pb2.DataType.Name(h.type) for h in exp.hparam_infos},
                    [m.name.tag for m in exp.metric_infos],
                )
    return out


def f32(values):
    return [float(np.float32(v)) for v in values]


def check_run(run: Path, rec) -> None:
    """The run's scalars are the record's evaluations (float32, as TensorBoard stores them)."""
    got = scalars(run)
    for name, values in {"objective": rec.objective, **rec.metrics}.items():
        assert [s for s, _ in got[name]] == rec.step
        np.testing.assert_array_equal([v for _, v in got[name]], f32(values))


# ----------------------------------------------------------------------------- protocol


def test_check_callbacks_accepts_sequences_of_callback_objects():
    class OnlyEnd:
        def on_end(self, result):
            pass

    cbs = [Callback(), OnlyEnd()]
    assert check_callbacks(cbs) == tuple(cbs) and check_callbacks(()) == () and check_callbacks(None) == ()
    for bad in (Callback(), "tb", {"a": Callback()}, 3):
        with pytest.raises(ValueError, match="callbacks must be a list or tuple"):
            check_callbacks(bad)
    with pytest.raises(ValueError, match=r"callbacks\[1\] must have an on_segment"):
        check_callbacks([OnlyEnd(), object()])


def test_notify_calls_present_methods_in_order_and_skips_missing_ones():
    calls = []

    class A:
        def on_segment(self, boundary, history, trials):
            calls.append(("A", boundary, trials))

    class B(Callback):
        def on_segment(self, boundary, history, trials):
            calls.append(("B", boundary, trials))

    notify([A(), B()], "on_segment", 3, None, [1, 2])
    notify([A(), B()], "on_trial_end", None, 1)  # A has none, B's does nothing
    assert calls == [("A", 3, [1, 2]), ("B", 3, [1, 2])]
    with pytest.raises(ValueError, match="name must be one of"):
        notify([A()], "on_start")


# ----------------------------------------------------------------------------- TensorBoard by hand


def _history() -> History:
    h = History("min")
    h.add(0, {"lr": 0.1, "act": abs, "width": 8}, ())
    h.add(1, {"lr": 0.01, "act": round, "width": 16}, ())
    for seg, age in enumerate((5, 10, 15)):
        for t in (0, 1):
            if t == 1 and seg == 2:
                continue  # trial 1 is pruned after two evaluations
            obj = 1.0 / (1 + age + t) + (math.nan if (t == 0 and seg == 2) else 0.0)
            h.record(t, age, [obj], {"loss": [2.0 * obj]}, {"acc": [1 - obj]}, [age])
    return h


def test_tensorboard_logger_writes_one_run_per_trial_with_the_history(tmp_path):
    h = History("min")
    full = _history()
    tb = TensorBoardLogger(tmp_path)
    # replay the full history segment by segment, as the engine would
    for t in (0, 1):
        h.add(t, full[t].config, ())
    for i, _ in enumerate((5, 10, 15)):
        ran = [t for t in (0, 1) if len(full[t].step) > i]
        for t in ran:
            src = full[t]
            h.record(t, src.step[i], [src.objective[i]], {"loss": [src.metrics["train/loss"][i]]},
                     {"acc": [src.metrics["eval/acc"][i]]}, [src.step[i]])  # fmt: skip
        tb.on_segment(i + 1, h, ran)
        if i == 1:
            h[1].status = "pruned"
            tb.on_trial_end(h, 1)
    # live: after the segments, trial 0's curve is on disk before it ends
    run0 = tmp_path / trial_run_name(0, h[0].config)
    assert run0.name == "trial_0000-lr=0.1,act=abs,width=8"
    check_run(run0, h[0])
    h[0].status = "diverged"
    tb.on_trial_end(h, 0)
    tb.on_end(SweepResult(h.results(), "min"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "trial_0000-lr=0.1,act=abs,width=8",
        "trial_0001-lr=0.01,act=round,width=16",
    ]
    for t in (0, 1):
        run = tmp_path / trial_run_name(t, h[t].config)
        got = scalars(run)
        # each evaluation written once (on_trial_end and on_end add nothing twice)
        assert len(got["objective"]) == len(h[t].step)
        check_run(run, h[t])
        hp = hparams_of(run)
        assert hp["experiment"] is None  # one experiment, in the root run
        assert hp["status"] == ("STATUS_FAILURE" if h[t].status == "diverged" else "STATUS_SUCCESS")
        r = h.result(t)
        want = {"lr": h[t].config["lr"], "act": h[t].config["act"].__name__, "width": h[t].config["width"]}
        assert hp["hparams"] == {**want, "status": h[t].status}
        (age, final), = got["hparam/objective"]  # fmt: skip
        assert age == h[t].age and (final == np.float32(r.final_objective) or math.isnan(final))
        assert got["hparam/best_objective"] == [(h[t].age, float(np.float32(r.best_objective)))]
    assert math.isnan(scalars(run0)["objective"][-1][1])  # the diverged evaluation is kept as NaN
    root = hparams_of(tmp_path)
    kinds = {"lr": "FLOAT64", "act": "STRING", "width": "FLOAT64", "status": "STRING"}
    assert root["experiment"] == (
        {k: "DATA_TYPE_" + v for k, v in kinds.items()},
        ["hparam/objective", "hparam/best_objective", "objective", "train/loss", "eval/acc"],
    )


def test_tensorboard_logger_on_end_writes_trials_it_never_saw(tmp_path):
    """A resumed search: trials finished before the resume come only through on_end."""
    h = _history()
    h[0].status, h[1].status = "completed", "pruned"
    h[1].config["width"] = None  # an inactive conditional value: left out of the session
    tb = TensorBoardLogger(tmp_path, run_name=lambda t, c: f"t{t}")
    tb.on_end(SweepResult(h.results(), "min"))
    for t in (0, 1):
        check_run(tmp_path / f"t{t}", h[t])
        assert hparams_of(tmp_path / f"t{t}")["hparams"]["status"] == h[t].status
    assert "width" not in hparams_of(tmp_path / "t1")["hparams"]
    assert "width" in hparams_of(tmp_path)["experiment"][0]


def test_tensorboard_logger_bad_arguments():
    with pytest.raises(ValueError, match="logdir must be a path"):
        TensorBoardLogger(3)
    with pytest.raises(ValueError, match="run_name must be a function"):
        TensorBoardLogger("x", run_name="trial")


# ----------------------------------------------------------------------------- end to end


def test_sweep_run_calls_callbacks_and_logs_every_trial(tmp_path):
    from tests.sweep_helpers import SPACE, make_task

    class Recorder(Callback):
        def __init__(self):
            self.segments, self.ended, self.result = [], [], None

        def on_segment(self, boundary, history, trials):
            assert all(history[t].step for t in trials)
            self.segments.append((boundary, list(trials), {t: history[t].age for t in trials}))

        def on_trial_end(self, history, trial):
            assert history[trial].finished
            self.ended.append(trial)

        def on_end(self, result):
            self.result = result

    rec = Recorder()
    tb = TensorBoardLogger(tmp_path)
    result = sweep.run(make_task(), SPACE, 6, steps=6, eval_every=2, method="random", seed=0, progress=False,
                       devices=1, max_parallel=2, scheduler=sweep.MedianStopping(min_trials=2),
                       callbacks=[rec, tb])  # fmt: skip
    assert rec.result is result
    assert sorted(rec.ended) == list(range(6))
    assert "pruned" in {t.status for t in result.trials} and "completed" in {t.status for t in result.trials}
    assert [b for b, _, _ in rec.segments] == sorted({b for b, _, _ in rec.segments})
    assert sum(len(tr) for _, tr, _ in rec.segments) == sum(len(t.history["step"]) for t in result.trials)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 6
    assert set(hparams_of(tmp_path)["experiment"][0]) == {*SPACE, "status"}
    for t in result.trials:
        run = tmp_path / trial_run_name(t.trial, t.hyperparams)
        got = scalars(run)
        assert got["objective"] == list(zip(t.history["step"], f32(t.history["objective"])))
        assert [v for _, v in got["eval/accuracy"]] == f32(t.history["eval/accuracy"])
        assert [v for _, v in got["train/loss"]] == f32(t.history["train/loss"])
        assert hparams_of(run)["hparams"]["status"] == t.status
        assert got["hparam/objective"] == [(t.history["step"][-1], float(np.float32(t.final_objective)))]
    with pytest.raises(ValueError, match="callbacks"):
        sweep.run(make_task(), SPACE, 2, steps=2, progress=False, devices=1, callbacks=[object()])
