"""Search quality per unit of compute: the best validation loss each method finds in a time budget.

Two tasks, both a flax MLP trained with AdamW (learning rate x weight decay x beta1, the same
search space for every method, ``--steps`` training steps per full trial):

* ``digits``: classification of scikit-learn's 8x8 digits (64-128-128-10), validation
  cross-entropy;
* ``diabetes``: regression on scikit-learn's diabetes set (10-64-64-1, standardized target),
  validation mean squared error.

Methods, each in its own process (fresh compile caches), for several seeds:

* ``optuna``: the usual Optuna loop -- TPE, one jitted step function built per trial with
  Python-float hyperparameters, a Python loop over steps -- with ``--optuna-budget`` seconds
  (``study.optimize(timeout=...)``);
* jopt methods with ``--budget`` seconds (default: a quarter of Optuna's) as their ``timeout``:
  chunks of 32 slots refilled as trials end, until the time is spent (no segment starts that
  would end after it): ``random`` (an endless random stream on ``sweep.search``), ``bayes``
  (``sweep.bayesian``, batch 32), ``asha`` (``sweep.asha``, rungs at steps/9, steps/3, steps,
  eta 3), ``median`` (random stream with ``sweep.MedianStopping``), ``optuna-vec``
  (``sweep.optuna_search`` with TPE, 32 at a time), ``optuna-asha`` (the same with Optuna's
  ``SuccessiveHalvingPruner`` pruning through the engine); ``pbt`` (``sweep.pbt``, population
  32, ready every steps/6 steps) is repeated while another run fits the budget.

A second table compares ``bayes`` (GP, batch 8 after 16 Sobol points) with ``random`` at an
equal *trial* budget (``--trials``, default 64): the sample efficiency of the surrogate, compile
and GP time aside.

A method's score is the best validation objective among its trials' evaluations (a pruned or
time-cut trial's evaluations count: each is a trained model's validation loss). Prints one row
per (task, method): mean and standard deviation over seeds, trials evaluated, wall time used.

Usage:
  python benchmarks/search_quality.py                          # 5 seeds, 60 s Optuna / 15 s jopt
  python benchmarks/search_quality.py --seeds 1 --optuna-budget 20 --tasks digits
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("optuna", "random", "bayes", "asha", "median", "pbt", "optuna-vec", "optuna-asha")


def build(task_name: str):
    """The search space, the jopt task and the pieces the Optuna loop needs."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jopt
    from jopt import datasets, sweep

    class MLP(nn.Module):
        width: int
        out: int

        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(self.width)(x))
            x = nn.relu(nn.Dense(self.width)(x))
            y = nn.Dense(self.out)(x)
            return y if self.out > 1 else y[..., 0]

    def optimizer(hp):
        return jopt.adamw(hp["learning_rate"], b1=hp["b1"], weight_decay=hp["weight_decay"])

    space = sweep.Space(
        learning_rate=sweep.loguniform(1e-4, 3e-1),
        weight_decay=sweep.loguniform(1e-6, 1e-1),
        b1=sweep.uniform(0.7, 0.99),
    )
    if task_name == "digits":
        data = datasets.digits()
        model, batch = MLP(128, 10), 256
        task = sweep.supervised_task(model, optimizer, data, batch_size=batch)

        def loss_fn(params, x, y):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(params, x), y).mean()

    else:
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(x))
        x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)[order]
        y = ((y - y.mean()) / y.std()).astype(np.float32)[order]
        n_val = len(x) // 5
        data = datasets.Dataset(
            jnp.asarray(x[n_val:]), jnp.asarray(y[n_val:]), jnp.asarray(x[:n_val]), jnp.asarray(y[:n_val]), 0
        )
        model, batch = MLP(64, 1), 64

        def loss_fn(params, x, y):
            return jnp.mean((model.apply(params, x) - y) ** 2)

        def init(hp, key):
            params = model.init(key, data.x_train[:1])
            return params, optimizer(hp).init(params)

        def step(hp, state, key):
            params, opt_state = state
            idx = jax.random.randint(key, (batch,), 0, data.x_train.shape[0])
            loss, grads = jax.value_and_grad(loss_fn)(params, data.x_train[idx], data.y_train[idx])
            updates, opt_state = optimizer(hp).update(grads, opt_state, params)
            return (jopt.apply_updates(params, updates), opt_state), {"loss": loss}

        def evaluate(hp, state):
            loss = loss_fn(state[0], data.x_val, data.y_val)
            return loss, {"mse": loss}

        task = sweep.Task(init, step, evaluate, params=lambda s: s[0])
    return space, task, model, data, batch, loss_fn


def run_optuna_loop(space, model, data, batch, loss_fn, steps, budget, seed):
    """The usual way: TPE, one jitted step per trial (Python-float hyperparameters), Python loop."""
    import jax
    import optuna

    import jopt

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        lr = trial.suggest_float(
            "learning_rate", space["learning_rate"].low, space["learning_rate"].high, log=True
        )
        wd = trial.suggest_float(
            "weight_decay", space["weight_decay"].low, space["weight_decay"].high, log=True
        )
        b1 = trial.suggest_float("b1", space["b1"].low, space["b1"].high)
        opt = jopt.adamw(lr, b1=b1, weight_decay=wd)
        key = jax.random.key(trial.number)
        params = model.init(key, data.x_train[:1])
        state = opt.init(params)

        @jax.jit
        def train_step(params, state, key):
            idx = jax.random.randint(key, (batch,), 0, data.x_train.shape[0])
            loss, grads = jax.value_and_grad(loss_fn)(params, data.x_train[idx], data.y_train[idx])
            updates, state = opt.update(grads, state, params)
            return jopt.apply_updates(params, updates), state

        for k in jax.random.split(jax.random.fold_in(key, 1), steps):
            params, state = train_step(params, state, k)
        value = float(loss_fn(params, data.x_val, data.y_val))
        return value if value == value else float("inf")

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, timeout=budget)
    values = [t.value for t in study.trials if t.value is not None]
    return min(values), len(study.trials)


def child(args) -> None:
    """Run one (task, method, seed) in this process and print one JSON line."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    sys.path.insert(0, ROOT)
    from jopt import sweep

    space, task, model, data, batch, loss_fn = build(args.task)
    steps, budget, seed = args.steps, args.budget, args.seed
    t0 = time.perf_counter()

    def left() -> float:
        return budget - (time.perf_counter() - t0)

    last = {"start": t0, "seconds": 0.0}

    def another_fits() -> bool:
        """Start another round only if one as long as the last one ends within the budget."""
        now = time.perf_counter()
        last["seconds"], last["start"] = now - last["start"], now
        return left() >= last["seconds"]

    def finite_best(result) -> float:
        vals = [t.best_objective for t in result.trials if t.status != "diverged"]
        vals = [v for v in vals if v == v and abs(v) != float("inf")]
        return min(vals, default=float("inf"))

    def repeat(one_round, per_round: int) -> tuple[float, int]:
        """Run ``one_round(rep)`` (``per_round`` trials each) while another round fits the budget."""
        best, rep = float("inf"), 0
        while rep == 0 or another_fits():
            best, rep = min(best, finite_best(one_round(rep))), rep + 1
        return best, rep * per_round

    quiet = dict(progress=False, keep_states="none")
    timed = dict(quiet, timeout=budget, seed=seed)
    rungs = [steps // 9, steps // 3, steps]
    if args.method == "optuna":
        best, trials = run_optuna_loop(space, model, data, batch, loss_fn, steps, args.budget, seed)
    elif args.method == "random":  # an endless random stream, 32 trials at a time, until the budget
        sampler = sweep.StreamSampler(space, "random", seed)
        r = sweep.search(task, space, sampler, steps=steps, eval_every=steps // 3, parallel=32, **timed)
        best, trials = finite_best(r), len(r.trials)
    elif args.method == "bayes":
        r = sweep.bayesian(task, space, 100_000, steps=steps, eval_every=steps // 3, batch=32, initial=32,
                           **timed)  # fmt: skip
        best, trials = finite_best(r), len(r.trials)
    elif args.method == "random-n":
        configs = sweep.sample(space, "random", args.trials, seed=seed)
        r = sweep.run(task, space, configs, steps=steps, eval_every=steps, seed=seed, progress=False)
        best, trials = finite_best(r), len(r.trials)
    elif args.method == "bayes-n":
        r = sweep.bayesian(
            task, space, args.trials, steps=steps, batch=8, initial=16, seed=seed, progress=False
        )
        best, trials = finite_best(r), len(r.trials)
    elif args.method == "asha":  # asynchronous halving, slots refilled, until the budget
        r = sweep.asha(task, space, None, budgets=rungs, eta=3, parallel=32, **timed)
        best, trials = finite_best(r), len(r.trials)
    elif args.method == "median":  # random stream with the median stopping rule
        sampler = sweep.StreamSampler(space, "random", seed)
        r = sweep.search(task, space, sampler, sweep.MedianStopping(min_trials=8, grace_steps=steps // 9),
                         steps=steps, eval_every=steps // 9, parallel=32, **timed)  # fmt: skip
        best, trials = finite_best(r), len(r.trials)
    elif args.method == "pbt":

        def pbt_round(rep):
            return sweep.pbt(
                task, space, 32, steps=steps, eval_every=steps // 6, seed=seed * 1000 + rep, **quiet
            )

        best, trials = repeat(pbt_round, 32)
    elif args.method in ("optuna-vec", "optuna-asha"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=steps // 9, reduction_factor=3)
        kw = {"pruner": pruner} if args.method == "optuna-asha" else {}
        r = sweep.optuna_search(task, space, 1_000_000, steps=steps, eval_every=steps // 9, batch=32,
                                sampler="tpe", **kw, **timed)  # fmt: skip
        best, trials = finite_best(r), len(r.trials)
    print(json.dumps({"best": best, "trials": trials, "wall": time.perf_counter() - t0}))


def run_method(args, task: str, method: str, budget: float) -> list[dict]:
    """One child process per seed; their JSON results."""
    rows = []
    for seed in range(args.seeds):
        cmd = [sys.executable, __file__, "--child", "--task", task, "--method", method]
        cmd += ["--seed", str(seed), "--steps", str(args.steps), "--budget", str(budget)]
        cmd += ["--devices", str(args.devices), "--trials", str(args.trials)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{task}/{method}/seed {seed} failed")
        rows.append(json.loads(lines[-1]))
    return rows


def summary(rows: list[dict]) -> tuple[float, float, int]:
    """Mean, standard error and count of the seeds' best values."""
    bests = [r["best"] for r in rows]
    sd = statistics.stdev(bests) if len(bests) > 1 else 0.0
    return statistics.mean(bests), sd / len(bests) ** 0.5, len(bests)


def print_comparison(task: str, rows: dict[str, list[dict]]) -> None:
    """Each jopt method against the Optuna loop: difference of means and the combined standard error."""
    if "optuna" not in rows:
        return
    m0, se0, _ = summary(rows["optuna"])
    for method, rs in rows.items():
        if method == "optuna":
            continue
        m, se, _ = summary(rs)
        combined = (se0**2 + se**2) ** 0.5
        verdict = "better" if m0 - m > combined else ("worse" if m - m0 > combined else "within 1 SE")
        gap = f"optuna - method = {m0 - m:+.4f}, combined SE {combined:.4f}"
        print(f"{task:>8} | {method:>11} | {gap}: {verdict}")
    print(f"{task:>8} | per-seed best: " + "; ".join(
        f"{k} " + ", ".join(f"{r['best']:.4f}" for r in v) for k, v in rows.items()))  # fmt: skip


def print_row(task: str, method: str, rows: list[dict]) -> None:
    bests = [r["best"] for r in rows]
    std = statistics.stdev(bests) if len(bests) > 1 else 0.0
    trials = statistics.mean(r["trials"] for r in rows)
    wall = statistics.mean(r["wall"] for r in rows)
    print(
        f"{task:>8} | {method:>10} | {statistics.mean(bests):>15.4f} | {std:>8.4f} | "
        f"{trials:>6.0f} | {wall:>6.1f}",
        flush=True,
    )


def print_header() -> None:
    header = (
        f"{'task':>8} | {'method':>10} | {'best val (mean)':>15} | {'std':>8} | {'trials':>6} | {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["digits", "diabetes"], choices=["digits", "diabetes"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=270)
    parser.add_argument("--optuna-budget", type=float, default=60.0)
    parser.add_argument("--budget", type=float, default=None, help="jopt budget (default: optuna / 4)")
    parser.add_argument("--trials", type=int, default=64, help="trials of the equal-trial-budget table")
    parser.add_argument("--tables", nargs="+", default=["time", "trials"], choices=["time", "trials"])
    parser.add_argument("--devices", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="digits", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="random", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    jopt_budget = args.budget if args.budget is not None else args.optuna_budget / 4
    if "time" in args.tables:
        print(
            f"# equal wall-clock budget: optuna {args.optuna_budget:.0f} s, jopt {jopt_budget:.0f} s; "
            f"{args.steps} steps per full trial; {args.seeds} seeds; {args.devices} CPU devices for jopt"
        )
        print_header()
        done: dict[str, dict[str, list[dict]]] = {}
        for task in args.tasks:
            for method in args.methods:
                budget = args.optuna_budget if method == "optuna" else jopt_budget
                done.setdefault(task, {})[method] = run_method(args, task, method, budget)
                print_row(task, method, done[task][method])
        print()
        for task, rows in done.items():
            print_comparison(task, rows)
    if "trials" in args.tables:
        print(f"\n# equal trial budget: {args.trials} trials of {args.steps} steps; {args.seeds} seeds")
        print_header()
        for task in args.tasks:
            for method in ("random-n", "bayes-n"):
                print_row(task, method, run_method(args, task, method, 0.0))


if __name__ == "__main__":
    main()
