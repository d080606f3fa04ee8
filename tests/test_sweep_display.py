"""Notebook display (jopt.sweep.display.html) and the plots' categorical axes and legends."""

from __future__ import annotations

import base64
import re

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

from jopt import sweep
from jopt.sweep import display, plots
from jopt.sweep.population_based import pbt
from jopt.sweep.results import SweepResult, TrialResult
from tests.sweep_helpers import make_task

matplotlib.use("Agg")

SPACE = sweep.Space(
    learning_rate=sweep.loguniform(1e-3, 3e-1),
    weight_decay=1e-4,
    b1=0.9,
    batch_size=sweep.choice([8, 16], static=True),
)


@pytest.fixture(scope="module")
def result():
    """A 6-trial sweep with a static choice dimension (two programs)."""
    return sweep.run(make_task(hidden_static=True), SPACE, 6, steps=4, eval_every=2, method="random",
                     seed=1, progress=False, devices=1)  # fmt: skip


@pytest.fixture(scope="module")
def pbt_result():
    task = sweep.Task(lambda hp, k: jnp.float32(4.0), lambda hp, w, k: (w - hp["lr"] * w, {"loss": w * w}),
                      lambda hp, w: w * w)  # fmt: skip
    return pbt(task, sweep.Space(lr=sweep.loguniform(1e-3, 0.5)), 6, steps=8, eval_every=2, seed=0,
               progress=False, devices=1)  # fmt: skip


def _trial(i, hp, status="completed", obj=0.5, steps=(5, 10)):
    hist = {"step": list(steps), "objective": [obj + 0.1, obj], "eval/acc": [0.3, 0.4]}
    return TrialResult(i, hp, status, obj, obj, obj, steps[-1], steps[-1], hist)


def _body_rows(text: str) -> list[str]:
    body = re.search(r"<tbody>(.*)</tbody>", text, re.S).group(1)
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)


def _cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


# ----------------------------------------------------------------------------- html


def test_html_of_a_sweep_ranks_every_trial_with_its_hyperparameters_and_curves(result):
    text = display.html(result)
    assert text.count("<table") == 1
    rows = _body_rows(text)
    assert len(rows) == len(result.trials) == 6
    head = re.findall(r"<th>(.*?)</th>", text)
    assert head[:7] == ["rank", "trial", "status", "objective", "best objective", "best step", "steps"]
    assert {"learning_rate", "batch_size", "eval/accuracy"} <= set(head)
    for rank, (row, t) in enumerate(zip(rows, result.ranked()), 1):
        cells = dict(zip(head, _cells(row)))
        assert cells["rank"] == str(rank) and cells["trial"] == str(t.trial) and cells["status"] == t.status
        assert cells["objective"] == f"{t.objective:.4g}" and cells["steps"] == str(t.steps_trained)
        assert cells["batch_size"] == str(t.hyperparams["batch_size"])
        assert cells["eval/accuracy"] == f"{t.history['eval/accuracy'][-1]:.4g}"
    (png,) = _pngs(text)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert f"best trial {result.best.trial}" in text


def test_html_top_limits_the_rows_and_says_how_many_are_left(result):
    text = display.html(result, top=2, plot=False)
    assert len(_body_rows(text)) == 2 and "and 4 more trials" in text and "<img" not in text
    with pytest.raises(ValueError, match="top must be a positive int or None"):
        display.html(result, top=0)


def test_html_of_pbt_shows_exploits_and_the_schedules(pbt_result):
    text = display.html(pbt_result)
    head = re.findall(r"<th>(.*?)</th>", text)
    rows = _body_rows(text)
    assert len(rows) == 6 and "exploits" in head
    col = head.index("exploits")
    for row, t in zip(rows, pbt_result.ranked()):
        assert _cells(row)[col] == str(len(pbt_result.lineage[t.trial]))
    assert len(_pngs(text)) == 2 and "PBTResult" in text  # curves and schedules


def test_html_escapes_values_and_shows_functions_by_name():
    r = SweepResult(
        [_trial(0, {"name": "<b>x</b> & y", "act": abs}), _trial(1, {"name": '"q"', "act": round}, obj=0.7)]
    )
    text = display.html(r)
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt; &amp; y" in text and "&quot;q&quot;" in text
    cells = [_cells(row) for row in _body_rows(text)]
    assert [c[-2] for c in cells] == ["abs", "round"]  # act, before eval/acc
    assert display.html(SweepResult([])).count("no trials") == 1


def test_html_shows_every_objective_and_the_violation_of_a_multi_objective_sweep():
    a, b = _trial(0, {"lr": 0.1}), _trial(1, {"lr": 0.2}, obj=0.7)
    a.objectives, b.objectives, a.violation, b.violation = (0.5, 3.0), (0.7, 2.0), 0.0, 0.25
    text = display.html(SweepResult([a, b]), plot=False)
    head = re.findall(r"<th>(.*?)</th>", text)
    rows = [dict(zip(head, _cells(r))) for r in _body_rows(text)]
    assert [(r["objectives"], r["violation"]) for r in rows] == [("0.5, 3", "0"), ("0.7, 2", "0.25")]
    assert "objectives" not in display.html(SweepResult([_trial(0, {"lr": 0.1})]), plot=False)


# ----------------------------------------------------------------------------- plots


def _categorical_axis(ax):
    labels = [t.get_text() for t in ax.get_xticklabels()]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    return labels, xs


def test_plot_objective_vs_puts_a_static_choice_on_a_categorical_axis(result):
    fig = plots.plot_objective_vs(result, categorical=["batch_size"])
    ax = {a.get_xlabel(): a for a in fig.axes}["batch_size"]
    labels, xs = _categorical_axis(ax)
    assert labels == ["8", "16"]
    # every point within its category's slot (0 for 8, 1 for 16), spread sideways
    want = np.array([[8, 16].index(t.hyperparams["batch_size"]) for t in result.trials])
    got = ax.collections[0].get_offsets()[:, 0]
    assert np.all(np.abs(got - want) <= 0.15) and np.all(np.abs(xs - np.round(xs)) <= 0.15)
    assert {a.get_xlabel(): a for a in fig.axes}["learning_rate"].get_xscale() == "log"


def test_plot_objective_vs_strings_functions_and_bools_are_categories():
    trials = [
        _trial(0, {"opt": "adam", "act": abs, "nesterov": True, "lr": 0.1}, obj=0.3),
        _trial(1, {"opt": "sgd", "act": round, "nesterov": False, "lr": 0.2}, obj=0.4),
        _trial(2, {"opt": "adam", "act": abs, "nesterov": False, "lr": 0.3}, status="stopped", obj=0.5),
        _trial(
            3, {"opt": "lion", "act": round, "nesterov": True, "lr": 0.4}, status="diverged", obj=float("inf")
        ),
    ]
    fig = plots.plot_objective_vs(SweepResult(trials))
    axes = {a.get_xlabel(): a for a in fig.axes}
    assert _categorical_axis(axes["opt"])[0] == ["adam", "sgd", "lion"]  # lion: only a diverged trial
    assert _categorical_axis(axes["act"])[0] == ["abs", "round"]
    assert _categorical_axis(axes["nesterov"])[0] == ["True", "False"]
    assert axes["lr"].get_xscale() == "linear" and not axes["lr"].get_xticklabels()[0].get_text().startswith(
        "<"
    )
    legend = [t.get_text() for t in fig.axes[0].get_legend().texts]
    assert legend == ["completed", "stopped", "best (trial 0)"]  # the diverged trial is not plotted
    assert "1 trial(s) with a non-finite objective left out" in fig._suptitle.get_text()


def test_plot_learning_curves_legend_lists_only_the_statuses_present(result):
    legend = [t.get_text() for t in plots.plot_learning_curves(result).axes[0].get_legend().texts]
    assert legend == [f"best (trial {result.best.trial})"] + sorted({t.status for t in result.trials})
    mixed = SweepResult([_trial(0, {"lr": 0.1}), _trial(1, {"lr": 0.2}, "pruned", 0.9, steps=(5,))])
    mixed.trials[1].history["objective"] = [0.9]
    mixed.trials[1].history["eval/acc"] = [0.1]
    legend = [t.get_text() for t in plots.plot_learning_curves(mixed).axes[0].get_legend().texts]
    assert legend == ["best (trial 0)", "completed", "pruned"]
