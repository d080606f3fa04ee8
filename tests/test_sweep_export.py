"""A sweep as an Optuna study (jopt.sweep.export): what lands in SQLite, importance, and that
optuna-dashboard serves and renders it (its HTTP API, then the page in headless Chromium).

One successive-halving sweep (8 trials, budgets 2 and 6 steps, evaluated every 2; one trial
diverges from a huge learning rate) gives completed, pruned and diverged trials; the
"stopped" status, inferred distributions and maximizing are checked on hand-built results.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import urllib.request
import warnings
from contextlib import contextmanager
from wsgiref.simple_server import WSGIRequestHandler, make_server

import matplotlib
import optuna
import pytest
from optuna.trial import TrialState

from jopt import sweep
from jopt.sweep.export import importance, plot_importance, to_optuna
from jopt.sweep.optuna_adapter import to_distributions
from jopt.sweep.results import SweepResult, TrialResult
from tests.sweep_helpers import SPACE, make_task

matplotlib.use("Agg")
optuna.logging.set_verbosity(optuna.logging.WARNING)
DIVERGING = {"learning_rate": 1e38, "weight_decay": 1e-2, "b1": 0.9}


@pytest.fixture(scope="module")
def result():
    configs = sweep.sample(SPACE, "halton", 7, seed=1) + [DIVERGING]
    with warnings.catch_warnings():  # the diverging configuration lies outside the space
        warnings.simplefilter("ignore", sweep.OutsideSpaceWarning)
        return sweep.successive_halving(
            make_task(), SPACE, configs, budgets=[2, 6], eta=2, eval_every=2, devices=1, progress=False
        )


@pytest.fixture(scope="module")
def exported(result, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('export') / 'sweep.db'}"
    to_optuna(result, url, "halving", space=SPACE)
    return url, "halving"


def test_the_sweep_has_every_outcome(result):
    statuses = [t.status for t in result.trials]
    assert statuses.count("completed") == 4 and statuses.count("pruned") == 3
    assert result.trials[7].status == "diverged"


def test_sqlite_study_holds_the_sweep(result, exported):
    study = optuna.load_study(study_name=exported[1], storage=exported[0])
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert [t.user_attrs["jopt_trial"] for t in study.trials] == [t.trial for t in result.trials]
    expected = to_distributions(SPACE)  # widened to the diverging learning rate, outside the space
    expected["learning_rate"] = optuna.distributions.FloatDistribution(1e-3, 1e38, log=True)
    states = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "diverged": TrialState.FAIL}
    for ot, t in zip(study.trials, result.trials, strict=True):
        assert ot.params == t.hyperparams and ot.distributions == expected
        assert ot.intermediate_values == dict(zip(t.history["step"], t.history["objective"], strict=True))
        assert ot.state == states[t.status]
        assert ot.value == (None if t.status == "diverged" else t.objective)
        assert ot.user_attrs["jopt_status"] == t.status and ot.user_attrs["rung"] == t.rung
        assert ot.user_attrs["steps_trained"] == t.steps_trained
        assert ot.user_attrs["eval/accuracy"] == t.history["eval/accuracy"][-1]
    assert math.isinf(study.trials[7].intermediate_values[2])  # the diverged evaluation is kept
    assert study.trials[7].user_attrs["final_objective"] == "inf"
    assert study.best_trial.user_attrs["jopt_trial"] == result.best.trial
    assert study.user_attrs["jopt_fixed"] == {} and study.user_attrs["jopt_inferred_distributions"] is False


def test_importance(result, exported, tmp_path):
    study = optuna.load_study(study_name=exported[1], storage=exported[0])
    assert set(optuna.importance.get_param_importances(study)) == set(SPACE)
    scores = importance(result)  # distributions inferred: all three vary
    assert set(scores) == set(SPACE) and math.isclose(sum(scores.values()), 1.0, rel_tol=1e-6)
    assert all(v >= 0 for v in scores.values()) and list(scores.values()) == sorted(scores.values())[::-1]
    assert importance(result) == scores  # fANOVA is seeded
    ped = importance(result, space=SPACE, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert set(ped) == set(SPACE)
    plot_importance(result, tmp_path / "importance.png")
    assert (tmp_path / "importance.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="evaluator"):
        importance(result, evaluator="fanova")


def _trial(i, hp, status="completed", objective=1.0, steps=(5, 10), **kw):
    history = {"step": list(steps), "objective": [objective + 1.0, objective][-len(steps) :]}
    history["eval/acc"] = [0.5] * len(steps)
    return TrialResult(i, hp, status, objective, objective, objective, steps[-1], steps[-1], history, **kw)


def test_inferred_distributions_states_and_maximizing():
    trials = [
        _trial(0, {"lr": 1e-3, "n": 2, "act": abs, "bs": 32}, objective=0.5),
        _trial(1, {"lr": 1e-1, "n": 5, "act": round, "bs": 32}, "stopped", 0.9, fold_objectives=[0.8, 1.0]),
        _trial(2, {"lr": 3e-2, "n": 3, "act": abs, "bs": 32}, "pruned", 0.2, steps=(5,)),
        _trial(3, {"lr": 1e-2, "n": 4, "act": abs, "bs": 32}, "diverged", -math.inf),
    ]
    study = to_optuna(SweepResult(trials, mode="max", log_scale=("lr",)))
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    d = study.trials[0].distributions
    assert d["lr"] == optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    assert d["n"] == optuna.distributions.IntDistribution(2, 5)
    assert d["act"] == optuna.distributions.CategoricalDistribution(["builtins.abs", "builtins.round"])
    assert "bs" not in d and study.user_attrs["jopt_fixed"] == {"bs": 32}
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED, TrialState.FAIL]
    assert [t.value for t in study.trials] == [0.5, 0.9, 0.2, None]
    assert (
        study.trials[1].user_attrs["fold_objectives"] == [0.8, 1.0]
        and "rung" not in study.trials[1].user_attrs
    )
    assert study.trials[1].params == {"lr": 1e-1, "n": 5, "act": "builtins.round"}
    assert study.best_trial.number == 1  # maximizing: the stopped trial's 0.9
    with pytest.raises(ValueError, match="at least two completed"):
        importance(SweepResult(trials[1:], mode="max"))


def test_several_objectives_and_constraints():
    objs = [(0.5, 1.0), (0.9, 3.0), (0.7, 2.0), (0.4, 4.0)]  # trial 3 would dominate, but is infeasible
    trials = [
        _trial(i, {"lr": 0.1 * (i + 1), "wd": 0.01 * (4 - i)}, objective=o[0], objectives=o, violation=v)
        for i, (o, v) in enumerate(zip(objs, [0.0, 0.0, 0.0, 2.5], strict=True))
    ]
    result = SweepResult(trials, mode="min", directions=("min", "max"))
    study = to_optuna(result)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert [tuple(t.values) for t in study.trials] == objs
    assert [t.constraints for t in study.trials] == [{"0": 0.0}] * 3 + [{"0": 2.5}]
    assert study.trials[3].user_attrs["violation"] == 2.5 and study.trials[3].user_attrs["objectives"] == [
        0.4,
        4.0,
    ]
    # Optuna's front (feasible, non-dominated) is jopt's: the infeasible trial 3 is left out
    assert sorted(t.number for t in study.best_trials) == sorted(t.trial for t in result.pareto_front())
    assert sorted(t.number for t in study.best_trials) == [0, 1, 2]
    assert set(importance(result, objective=1)) == {"lr", "wd"}
    with pytest.raises(ValueError, match=r"objective must be an int in \[0, 1\]"):
        importance(result, objective=2)
    with pytest.raises(ValueError, match="contradicts"):
        to_optuna(result, directions="minimize")
    assert to_optuna(SweepResult(trials[:3], mode="min")).trials[0].constraints == {}  # all feasible


def test_existing_study_and_bad_input(result, tmp_path):
    url = f"sqlite:///{tmp_path / 'partial.db'}"
    partial = SweepResult(result.trials[:3], mode="min")
    assert len(to_optuna(partial, url, "s", space=SPACE).trials) == 3
    with pytest.raises(ValueError, match="study_name='s' already has 3 trials"):
        to_optuna(result, url, "s", space=SPACE)
    study = to_optuna(result, url, "s", space=SPACE, load_if_exists=True)  # only the 5 new ones
    assert [t.user_attrs["jopt_trial"] for t in study.trials] == list(range(8))
    with pytest.raises(ValueError, match="is to minimize"):
        to_optuna(SweepResult(result.trials, mode="max"), url, "s", load_if_exists=True)
    with pytest.raises(ValueError, match="directions"):
        to_optuna(result, directions=["minimize", "maximize"])
    with pytest.raises(ValueError, match="contradicts"):
        to_optuna(result, directions="maximize")
    assert to_optuna(result, directions="min").direction.name == "MINIMIZE"
    bad = SweepResult([_trial(0, {"lr": 0.1}, "running")], mode="min")
    with pytest.raises(ValueError, match=r"result.trials\[0\].status"):
        to_optuna(bad)
    with pytest.raises(ValueError, match="result.mode"):
        to_optuna(SweepResult(result.trials, mode="lowest"))
    with pytest.raises(ValueError, match="result must be"):
        to_optuna([1, 2])


# ----------------------------------------------------------------------------- optuna-dashboard


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def _dashboard(url: str):
    """optuna-dashboard's WSGI app on the SQLite file, served from a thread on localhost."""
    import optuna_dashboard

    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(url), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _chromium(url: str, tmp_path, *args: str) -> str:
    path = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if path is None:
        pytest.fail("headless Chromium is needed for the dashboard check: apt-get install chromium")
    cmd = [
        path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
        "--window-size=1280,900", *args, url,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"chromium failed on {url}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_optuna_dashboard_serves_and_renders_the_study(result, exported, tmp_path):
    from PIL import Image

    with _dashboard(exported[0]) as base:
        studies = _get(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["halving"] and studies[0]["directions"] == ["minimize"]
        sid = studies[0]["study_id"]
        detail = _get(f"{base}/api/studies/{sid}")
        assert [t["number"] for t in detail["trials"]] == list(range(8))
        assert [t["state"] for t in detail["trials"]] == [
            {"completed": "Complete", "pruned": "Pruned", "diverged": "Fail"}[t.status] for t in result.trials
        ]
        first = detail["trials"][0]
        assert {p["name"]: p["param_internal_value"] for p in first["params"]} == result.trials[0].hyperparams
        assert [v["value"] for v in first["intermediate_values"]] == result.trials[0].history["objective"]
        assert detail["trials"][7]["intermediate_values"] == [{"step": 2, "value": "inf"}]
        assert detail["has_intermediate_values"] and detail["best_trials"][0]["number"] == result.best.trial
        assert {p["name"] for p in detail["intersection_search_space"]} == set(SPACE)
        scores = _get(f"{base}/api/studies/{sid}/param_importances")["param_importances"][0]
        assert {s["name"] for s in scores} == set(SPACE)

        page = f"{base}/dashboard/studies/{sid}"
        dom = _chromium(page, tmp_path, "--dump-dom")
        assert "halving" in dom and "Hyperparameter Importance" in dom, dom[-2000:]
        png = tmp_path / "dashboard.png"
        _chromium(page, tmp_path, f"--screenshot={png}")
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 900)
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 100, f"a nearly blank dashboard screenshot: {len(colors)} colours"
