"""Results object, exports, plots and the digits example (the notebook runs in the docs build)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pandas as pd
import pytest

from jopt import sweep
from tests.sweep_helpers import SPACE, make_task

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def result():
    cfgs = sweep.sample(SPACE, "halton", 7, seed=1) + [
        {"learning_rate": 1e6, "weight_decay": 1e-2, "b1": 0.9}
    ]
    return sweep.run(make_task(), SPACE, cfgs, steps=20, eval_every=10, progress=False, keep_states="all")


def test_results_object(result):
    assert len(result.trials) == 8
    assert result.by_status("diverged")[0].trial == 7
    ranked = result.ranked()
    finite = [t.objective for t in ranked if math.isfinite(t.objective)]
    assert finite == sorted(finite) and ranked[-1].trial == 7
    assert result.best is ranked[0] and result.best_config == ranked[0].hyperparams
    assert "7 completed" in result.summary() and "1 diverged" in result.summary()
    for t in result.trials:  # the diverged trial ends at its first evaluation
        assert t.history["step"] == ([10] if t.trial == 7 else [10, 20])
        assert set(t.history) >= {"objective", "train/loss", "eval/accuracy"}
    assert jax.tree.structure(result.params(3)) == jax.tree.structure(result.params())


def test_dataframe_csv_json(result, tmp_path):
    df = result.to_dataframe()
    assert len(df) == 8 and {"trial", "status", "objective", "learning_rate", "eval/accuracy"} <= set(
        df.columns
    )
    back = pd.read_csv(result.to_csv(tmp_path / "r.csv"))
    np.testing.assert_allclose(back["learning_rate"], df["learning_rate"])
    assert list(back["status"]) == list(df["status"])
    data = json.loads(result.to_json(tmp_path / "r.json"))
    assert data["best_trial"] == result.best.trial and len(data["trials"]) == 8
    assert data["trials"][7]["status"] == "diverged" and data["trials"][7]["objective"] == math.inf
    assert "objective" in result.table(top=3) and len(result.table(top=3).splitlines()) == 4


def test_plots_saved(result, tmp_path):
    fig = result.plot_learning_curves(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert len(fig.axes[0].lines) >= 8
    fig = result.plot_objective_vs(tmp_path / "obj.png")
    assert (tmp_path / "obj.png").stat().st_size > 1000
    xscales = {ax.get_xlabel(): ax.get_xscale() for ax in fig.axes if ax.get_xlabel()}
    assert xscales == {"learning_rate": "log", "weight_decay": "log", "b1": "linear"}


def test_digits_example_quick(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import digits_sweep
    finally:
        sys.path.pop(0)
    r = digits_sweep.main(["--quick", "--no-progress", "--out", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert "best configuration" in out and "Top trials" in out
    assert (tmp_path / "d_curves.png").exists() and (tmp_path / "d.csv").exists()
    assert len(r.trials) == 8 and r.stats["groups"] == 2
    assert r.best.history["eval/accuracy"][-1] > 0.6
