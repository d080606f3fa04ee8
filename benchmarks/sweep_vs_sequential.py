"""jopt.sweep against the usual Optuna loop and the best hand-written sequential loop.

Same task for every method: an MLP 64-128-128-10 (flax) trained with AdamW on scikit-learn's
digits, batch 256, ``--steps`` steps, on the same ``--trials`` configurations of learning rate x
weight decay x beta1 (Sobol, seed 0). Each method runs in its own process (peak memory and
compile counts are per process):

* ``sweep``: ``jopt.sweep.run`` -- vectorized chunks, trial axis sharded over ``--devices`` CPU
  devices, memory budget ``--memory-budget``.
* ``vmap``: the best hand-written vectorized sweep -- ``jit(shard_map(vmap(train)))`` of the same
  train function (init, ``lax.scan`` over the steps, evaluate) with traced hyperparameters, every
  trial at once, the trial axis over ``--devices`` CPU devices; nothing else (no divergence
  checks, no metrics, no chunks).
* ``scan``: one jitted ``lax.scan`` train function with traced hyperparameters, called once per
  trial (compiles once).
* ``optuna``: the usual Optuna loop -- TPE sampler (the same configurations enqueued, so results
  are comparable), one jitted step function built per trial with Python-float hyperparameters,
  Python loop over steps.

Prints wall time, compile time, time per trial, number of XLA compiles, best validation accuracy,
peak memory (max RSS), achieved FLOP/s against the machine's measured matmul peak (a batch of
float32 matmuls sharded over one CPU device per core, every core busy), the speedups, and
the largest per-trial difference of final validation loss against ``scan``.

Methods are interleaved (``--repeats`` rounds of every method, each run in a fresh process) and
the table shows each method's median over the rounds, so that load changes of a shared machine hit
every method alike.

Usage:
  python benchmarks/sweep_vs_sequential.py                 # 64 trials, all methods
  python benchmarks/sweep_vs_sequential.py --trials 256 --methods sweep scan
  python benchmarks/sweep_vs_sequential.py --methods sweep vmap --devices 1 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN = 128
BATCH = 256


def child(args) -> None:
    """Run one method in this process and print one JSON line."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax  # noqa: F401  (devices are fixed from here on)

    jax.config.update("jax_num_cpu_devices", args.devices)
    import resource

    import flax.linen as nn
    import jax.numpy as jnp
    import numpy as np

    if args.method == "peak":  # the machine's matmul peak: every core busy
        print("RESULT " + json.dumps({"peak_gflops": measure_matmul_peak(jax, jnp, args.devices) / 1e9}))
        return

    sys.path.insert(0, ROOT)
    import jopt
    from jopt import datasets, sweep
    from jopt.sweep.programs import member_keys
    from jopt.sweep.space import Hyperparams

    compiles = [0]

    def on_event(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[0] += 1
            compile_time[0] += duration

    compile_time = [0.0]
    jax.monitoring.register_event_duration_secs_listener(on_event)

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(HIDDEN)(x))
            x = nn.relu(nn.Dense(HIDDEN)(x))
            return nn.Dense(10)(x)

    def optimizer(hp):
        if hasattr(jopt, "adamw"):
            return jopt.adamw(learning_rate=hp["learning_rate"], b1=hp["b1"], weight_decay=hp["weight_decay"])
        import optax

        return jopt.chain(
            optax.scale_by_adam(b1=hp["b1"]),
            jopt.add_decayed_weights(hp["weight_decay"]),
            jopt.scale_by_learning_rate(hp["learning_rate"]),
        )

    data = datasets.digits()
    space = sweep.Space(
        learning_rate=sweep.loguniform(1e-4, 3e-2),
        weight_decay=sweep.loguniform(1e-6, 1e-2),
        b1=sweep.uniform(0.8, 0.95),
    )
    configs = sweep.sample(space, "sobol", args.trials, seed=0)
    task = sweep.supervised_task(MLP(), optimizer, data, batch_size=BATCH)
    compiles[0], compile_time[0] = 0, 0.0
    t0 = time.perf_counter()
    losses, accs = [], []

    if args.method == "sweep":
        r = sweep.run(
            task, space, configs, steps=args.steps, eval_every=args.steps, progress=False,
            devices=args.devices, memory_budget=args.memory_budget,
        )  # fmt: skip
        losses = [t.final_objective for t in r.trials]
        accs = [t.history["eval/accuracy"][-1] for t in r.trials]
        extra = {"chunk_sizes": r.stats["chunk_sizes"], "bytes_per_member": r.stats["bytes_per_member"]}
    elif args.method == "scan":
        init_keys, train_keys = member_keys(0, np.arange(len(configs)), np.zeros(len(configs), np.int32))

        @jax.jit
        def train(hp, init_key, train_key):
            h = Hyperparams(hp)
            state = task.init(h, jax.random.wrap_key_data(init_key))

            def body(c, _):
                s, k = c
                k, sub = jax.random.split(k)
                s, m = task.step(h, s, sub)
                return (s, k), m["loss"]

            (state, _), _ = jax.lax.scan(
                body, (state, jax.random.wrap_key_data(train_key)), None, length=args.steps
            )
            return task.evaluate(h, state)

        for i, cfg in enumerate(configs):
            hp = {k: jnp.float32(v) for k, v in cfg.items()}
            loss, m = train(hp, init_keys[i], train_keys[i])
            losses.append(float(loss))
            accs.append(float(m["accuracy"]))
        extra = {}
    elif args.method == "vmap":
        from jax.sharding import PartitionSpec

        init_keys, train_keys = member_keys(0, np.arange(len(configs)), np.zeros(len(configs), np.int32))
        mesh = jax.make_mesh((args.devices,), ("trials",), axis_types=(jax.sharding.AxisType.Auto,))
        n = len(configs)
        pad = -n % args.devices
        hp = {k: np.asarray([c[k] for c in configs] + [configs[0][k]] * pad, np.float32) for k in configs[0]}
        ik = np.concatenate([init_keys, init_keys[:pad]])
        tk = np.concatenate([train_keys, train_keys[:pad]])

        def train_one(hp, init_key, train_key):
            h = Hyperparams(hp)
            state = task.init(h, jax.random.wrap_key_data(init_key))

            def body(c, _):
                s, k = c
                k, sub = jax.random.split(k)
                s, m = task.step(h, s, sub)
                return (s, k), m["loss"]

            (state, _), _ = jax.lax.scan(
                body, (state, jax.random.wrap_key_data(train_key)), None, length=args.steps
            )
            return task.evaluate(h, state)

        spec = PartitionSpec("trials")
        shard = jax.shard_map(jax.vmap(train_one), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
        train_all = jax.jit(shard)
        placed = jax.device_put((hp, ik, tk), jax.sharding.NamedSharding(mesh, spec))
        loss, m = jax.device_get(train_all(*placed))
        losses = [float(v) for v in loss[:n]]
        accs = [float(v) for v in m["accuracy"][:n]]
        extra = {}
    elif args.method == "optuna":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
        for cfg in configs:
            study.enqueue_trial(cfg)
        model = MLP()
        x_tr, y_tr = data.x_train, data.y_train

        def objective(trial):
            lr = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
            wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
            b1 = trial.suggest_float("b1", 0.8, 0.95)
            tx = optimizer({"learning_rate": lr, "weight_decay": wd, "b1": b1})
            params = model.init(jax.random.key(trial.number), x_tr[:1])
            opt_state = tx.init(params)

            @jax.jit
            def step(params, opt_state, key):
                idx = jax.random.randint(key, (BATCH,), 0, x_tr.shape[0])

                def loss_fn(p):
                    logp = jax.nn.log_softmax(model.apply(p, x_tr[idx]))
                    return -jnp.mean(jnp.take_along_axis(logp, y_tr[idx][:, None], 1))

                loss, g = jax.value_and_grad(loss_fn)(params)
                u, opt_state = tx.update(g, opt_state, params)
                return jopt.apply_updates(params, u), opt_state, loss

            key = jax.random.key(1000 + trial.number)
            for _ in range(args.steps):
                key, sub = jax.random.split(key)
                params, opt_state, _ = step(params, opt_state, sub)
            logits = model.apply(params, data.x_val)
            logp = jax.nn.log_softmax(logits)
            loss = float(-jnp.mean(jnp.take_along_axis(logp, data.y_val[:, None], 1)))
            accs.append(float(jnp.mean(jnp.argmax(logits, -1) == data.y_val)))
            losses.append(loss)
            return loss

        study.optimize(objective, n_trials=len(configs))
        extra = {}
    else:
        raise SystemExit(f"unknown method {args.method}")
    wall = time.perf_counter() - t0
    n = len(configs)
    flops = 6.0 * BATCH * (64 * HIDDEN + HIDDEN * HIDDEN + HIDDEN * 10) * args.steps * n
    peak = measure_matmul_peak(jax, jnp, args.devices)
    out = {
        "method": args.method, "trials": n, "steps": args.steps, "devices": args.devices, "wall_s": wall,
        "compile_s": compile_time[0], "compiles": compiles[0], "per_trial_s": wall / n,
        "best_val_accuracy": max(accs), "best_val_loss": min(losses), "losses": losses,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gflops": flops / wall / 1e9, "peak_gflops": peak / 1e9, **extra,
    }  # fmt: skip
    print("RESULT " + json.dumps(out))


def measure_matmul_peak(jax, jnp, devices: int, n: int = 1024, reps: int = 5) -> float:
    """FLOP/s of a float32 matmul batch sharded over all ``devices`` (best of ``reps``)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((devices,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    a = jax.device_put(jnp.ones((devices, n, n), jnp.float32), NamedSharding(mesh, PartitionSpec("d")))
    f = jax.jit(lambda x: jnp.einsum("bij,bjk->bik", x, x))
    f(a).block_until_ready()
    best = min(_timed(f, a) for _ in range(reps))
    return 2.0 * devices * n**3 / best


def _timed(f, a) -> float:
    t = time.perf_counter()
    f(a).block_until_ready()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--methods", nargs="+", default=["sweep", "vmap", "scan", "optuna"])
    p.add_argument("--devices", type=int, default=os.cpu_count() or 1, help="CPU devices for sweep and vmap")
    p.add_argument("--memory-budget", default="512MB")
    p.add_argument("--repeats", type=int, default=1, help="interleaved rounds of every method")
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method:
        return child(args)
    cpus = os.cpu_count() or 1
    runs: dict[str, list[dict]] = {m: [] for m in ["peak", *args.methods]}
    for _ in range(args.repeats):
        for m in runs:
            if m == "peak" and runs["peak"]:
                continue
            runs[m].append(
                run_child(args, m, {"sweep": args.devices, "vmap": args.devices, "peak": cpus}.get(m, 1))
            )
    machine_peak = runs.pop("peak")[0]["peak_gflops"]
    results = {m: median_run(rs) for m, rs in runs.items()}
    print(
        f"\n{args.trials} trials x {args.steps} steps, MLP 64-{HIDDEN}-{HIDDEN}-10, batch {BATCH}, "
        f"{cpus} CPUs, {args.devices} device(s) for sweep/vmap, measured matmul peak {machine_peak:.1f} "
        f"GFLOP/s (all cores); median of {args.repeats} interleaved run(s), each in a fresh process"
    )
    head = f"{'method':8} {'wall s':>8} {'min s':>7} {'compile s':>9} {'train s':>8} {'s/trial':>8} "
    head += f"{'compiles':>8} "
    head += f"{'best acc':>8} {'peak MB':>8} {'GFLOP/s':>8} {'% peak':>7}"
    print(head)
    for m, r in results.items():
        print(
            f"{m:8} {r['wall_s']:8.2f} {min(x['wall_s'] for x in runs[m]):7.2f} {r['compile_s']:9.2f} "
            f"{r['wall_s'] - r['compile_s']:8.2f} {r['per_trial_s']:8.3f} {r['compiles']:8d} "
            f"{r['best_val_accuracy']:8.4f} {r['peak_rss_mb']:8.0f} {r['gflops']:8.1f} "
            f"{100 * r['gflops'] / machine_peak:6.1f}%"
        )
    if "sweep" in results:
        s = results["sweep"]
        print(
            f"sweep: devices {s['devices']}, chunk sizes {s['chunk_sizes']}, "
            f"est. {s['bytes_per_member']} B/trial, memory budget {args.memory_budget}"
        )
        for m in ("optuna", "scan", "vmap"):
            if m in results:
                print(f"wall time of {m} / sweep: {results[m]['wall_s'] / s['wall_s']:.2f}x")
        for m in ("scan", "vmap"):
            if m in results:
                ls, lq = s["losses"], results[m]["losses"]
                diffs = sorted(abs(a - b) / abs(b) for a, b in zip(ls, lq, strict=True))
                best = min(range(len(ls)), key=ls.__getitem__) == min(range(len(lq)), key=lq.__getitem__)
                print(
                    f"per-trial relative |val loss sweep - {m}| (same keys and configurations): median "
                    f"{diffs[len(diffs) // 2]:.1e}, max {diffs[-1]:.1e}; same best trial: {best}"
                )


def run_child(args, method: str, devices: int) -> dict:
    """One method in a fresh process; its JSON result."""
    cmd = [
        sys.executable,
        __file__,
        "--method",
        method,
        "--trials",
        str(args.trials),
        "--steps",
        str(args.steps),
    ]
    cmd += ["--devices", str(devices), "--memory-budget", args.memory_budget]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not line:
        print(proc.stderr[-3000:])
        raise SystemExit(f"method {method} failed")
    return json.loads(line[0][7:])


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time."""
    return sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]


if __name__ == "__main__":
    main()
