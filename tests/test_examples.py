"""The plain training example and the width-sweep example run on real data and learn."""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import jopt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import train_digits  # noqa: E402
import width_sweep  # noqa: E402

sys.path.pop(0)


def test_train_digits_learns_in_a_few_steps(capsys):
    result = train_digits.main(["--steps", "60", "--batch-size", "64"])
    out = capsys.readouterr().out
    assert out.count("val accuracy") == 6 and "final validation accuracy" in out
    # chance is 0.1; 60 AdamW steps on digits reach well above 0.8
    assert result["val_accuracy"] > 0.8
    assert np.isfinite(result["train_loss"]) and result["val_loss"] < 1.0


def test_train_digits_optimizer_logs_the_scheduled_learning_rate():
    steps = 50
    opt = train_digits.make_optimizer(steps, peak_lr=1e-2)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    state = opt.init(params)
    for _ in range(7):
        _, state = opt.update(params, state, params)
    expected = jopt.schedules.warmup_cosine_decay(0.0, 1e-2, 5, steps, end_value=1e-4)(6)
    np.testing.assert_allclose(jopt.current_hyperparams(state)["learning_rate"], expected, rtol=1e-6)


def test_width_sweep_tunes_two_traced_widths_in_one_static_group(capsys):
    result = width_sweep.main(["--quick", "--no-progress"])
    widths = {(t.hyperparams["width1"], t.hyperparams["width2"]) for t in result.trials}
    assert len(widths) == len(result.trials) == 8  # distinct widths, ...
    assert result.stats["groups"] == 1  # ... one program for all of them
    assert all(t.status == "completed" for t in result.trials)
    assert result.best.objective < float(np.log(10))  # better than chance
    assert "padding wastes" in capsys.readouterr().out
