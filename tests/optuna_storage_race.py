"""Several processes racing on SQLite files through :mod:`jopt.sweep.optuna_study` (used by
``tests/test_optuna_workers.py``).

Run as a script, one copy per process::

    python tests/optuna_storage_race.py --dir /tmp/race --processes 3 --rounds 6

Round ``i`` (``0 <= i < rounds``): wait until every process has arrived (files in ``--dir``),
then call :func:`jopt.sweep.optuna_study.create_study` on the new database ``--dir/i.db``. Then,
on the study ``--dir/queue.db`` (made by the caller, with queued trials), all ask and tell trials
at once until none is queued. The module is loaded from its file (it imports nothing of jopt),
so no process pays for importing JAX. Prints the rounds' study ids and the numbers of the queued
trials this process got as JSON; any error ends the process with a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "jopt" / "sweep" / "optuna_study.py"


def barrier(folder: Path, processes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).write_text("")
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < processes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder.name}: not every process arrived")
        time.sleep(0.001)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("optuna_study", MODULE)
    ost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ost)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root, ids, got = Path(args.dir), [], []
    for i in range(args.rounds):
        barrier(root / f"round{i}", args.processes)
        url = f"sqlite:///{root / f'{i}.db'}"
        study = ost.create_study(storage=url, study_name="s", heartbeat_interval=1)
        ids.append(study._study_id)
    study = ost.create_study(
        storage=f"sqlite:///{root / 'queue.db'}", study_name="s", heartbeat_interval=None
    )
    barrier(root / "queue", args.processes)
    while study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        trial = study.ask()
        if "queued" in trial.user_attrs:  # else the queue emptied meanwhile: a new trial
            got.append(trial.number)
        study.tell(trial, 1.0)  # raises if another process popped the same trial and told it
    print(json.dumps({"ids": ids, "got": got}))


if __name__ == "__main__":
    main()
