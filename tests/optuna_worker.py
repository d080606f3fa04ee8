"""One worker of a study shared through an Optuna storage (used by ``tests/test_sweep_optuna.py``).

Run as a script, one copy per process::

    python tests/optuna_worker.py --storage sqlite:///study.db --study-name s --trials 8 \
        --batch 2 --worker 0 --workers 2 --ready-dir /tmp/ready --out /tmp/worker0.json

Each worker imports JAX, then waits until every worker has started (files in ``--ready-dir``),
so that they really run at the same time -- and, with ``--go-file``, until that file exists --
then runs :func:`jopt.sweep.optuna_adapter.optuna_search` on the shared study (TPE, seeded with
the worker index; the study and its tables are created by whichever worker comes first) and
writes the trial numbers it evaluated as JSON. With ``--hang-file`` the worker writes that file
when its first segment starts and then hangs in it (its heartbeat thread still beating), to be
killed by the test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # device flags must be set before JAX is imported
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STEPS, EVAL_EVERY = 6, 3


def wait_for_all(ready_dir: Path, worker: int, workers: int, timeout: float) -> None:
    """Barrier: announce this worker and wait until ``workers`` have announced themselves."""
    ready_dir.mkdir(parents=True, exist_ok=True)
    (ready_dir / f"{os.getpid()}.ready").write_text(str(worker))  # a restarted worker has a new pid
    deadline = time.monotonic() + timeout
    while len(list(ready_dir.glob("*.ready"))) < workers:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(ready_dir.glob('*.ready')))} of {workers} workers started")
        time.sleep(0.02)


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.02)


def hang_in_training(hang_file: Path) -> None:
    """Make the first segment announce itself in ``hang_file`` and then never return."""
    from jopt.sweep.chunk import Chunk

    def segment(self, *args, **kwargs):
        hang_file.write_text(str(os.getpid()))
        while True:
            time.sleep(1)

    Chunk.segment = segment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study-name", required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--ready-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--heartbeat-interval", type=int, default=10)
    parser.add_argument("--grace-period", type=int, default=None)
    parser.add_argument("--go-file", default=None)
    parser.add_argument("--hang-file", default=None)
    args = parser.parse_args()

    import optuna

    from jopt.sweep.optuna_adapter import optuna_search
    from tests.sweep_helpers import SPACE, make_task

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = make_task()
    if args.hang_file:
        hang_in_training(Path(args.hang_file))
    wait_for_all(Path(args.ready_dir), args.worker, args.workers, timeout=60)
    if args.go_file:
        wait_for_file(Path(args.go_file), timeout=90)
    result = optuna_search(
        task, SPACE, args.trials, batch=args.batch, steps=STEPS, eval_every=EVAL_EVERY,
        storage=args.storage, study_name=args.study_name, sampler_seed=args.worker,
        heartbeat_interval=args.heartbeat_interval, grace_period=args.grace_period,
        seed=0, devices=1, progress=False,
    )  # fmt: skip
    out = {
        "pid": os.getpid(),
        "evaluated": [t.trial for t in result.trials],
        "objectives": [t.objective for t in result.trials],
        "statuses": [t.status for t in result.trials],
        **{k: result.stats[k] for k in ("cancelled", "waits", "lost", "requeued")},
    }
    Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
