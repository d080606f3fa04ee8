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
* jopt methods with ``--budget`` seconds (default: a quarter of Optuna's), repeated while
  another round as long as the last one fits in the budget: ``random`` (``sweep.run``, 32
  random trials per call), ``bayes`` (``sweep.bayesian``, batch 32, stopped by its
  callback), ``asha`` (``sweep.successive_halving``, 243 trials, rungs at steps/9, steps/3,
  steps, eta 3), ``pbt`` (``sweep.pbt``, population 32, ready every steps/6 steps) and
  ``optuna-vec`` (``sweep.optuna_search`` with TPE, batch 16).

A second table compares ``bayes`` (GP, batch 8 after 16 Sobol points) with ``random`` at an
equal *trial* budget (``--trials``, default 64): the sample efficiency of the surrogate, compile
and GP time aside.

A method's score is the best validation objective among its trials (for ASHA and PBT: among the
trials it trained; a pruned ASHA trial's objective is the one at its last rung). Prints one row
per (task, method): mean and standard deviation over seeds, trials evaluated, wall time used.

Usage:
  python benchmarks/search_quality.py                          # 3 seeds, 60 s Optuna / 15 s jopt
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
METHODS = ("optuna", "random", "bayes", "asha", "pbt", "optuna-vec")


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
    if args.method == "optuna":
        best, trials = run_optuna_loop(space, model, data, batch, loss_fn, steps, args.budget, seed)
    elif args.method == "random":

        def random_round(rep):
            configs = sweep.sample(space, "random", 32, seed=seed * 1000 + rep)
            ids = list(range(rep * 32, rep * 32 + 32))
            return sweep.run(
                task, space, configs, steps=steps, eval_every=steps, seed=seed, trial_ids=ids, **quiet
            )

        best, trials = repeat(random_round, 32)
    elif args.method == "bayes":
        r = sweep.bayesian(
            task, space, 100_000, steps=steps, eval_every=steps, batch=32, initial=32, seed=seed,
            callback=lambda i, res: not another_fits(), **quiet,
        )  # fmt: skip
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
    elif args.method == "asha":

        def asha_round(rep):
            budgets = [steps // 9, steps // 3, steps]
            return sweep.successive_halving(
                task, space, 243, budgets=budgets, eta=3, seed=seed * 1000 + rep, **quiet
            )

        best, trials = repeat(asha_round, 243)
    elif args.method == "pbt":

        def pbt_round(rep):
            return sweep.pbt(
                task, space, 32, steps=steps, eval_every=steps // 6, seed=seed * 1000 + rep, **quiet
            )

        best, trials = repeat(pbt_round, 32)
    elif args.method == "optuna-vec":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))

        def optuna_round(rep):  # the study grows by 16 trials per round
            total = 16 * (rep + 1)
            return sweep.optuna_search(
                task, space, total, steps=steps, eval_every=steps, batch=16, study=study, seed=seed, **quiet
            )

        best, trials = repeat(optuna_round, 16)
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
    parser.add_argument("--seeds", type=int, default=3)
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
        for task in args.tasks:
            for method in args.methods:
                budget = args.optuna_budget if method == "optuna" else jopt_budget
                print_row(task, method, run_method(args, task, method, budget))
    if "trials" in args.tables:
        print(f"\n# equal trial budget: {args.trials} trials of {args.steps} steps; {args.seeds} seeds")
        print_header()
        for task in args.tasks:
            for method in ("random-n", "bayes-n"):
                print_row(task, method, run_method(args, task, method, 0.0))


if __name__ == "__main__":
    main()
