"""Several processes creating the same Optuna study on new SQLite files at the same moment (used
by ``tests/test_optuna_workers.py``).

Run as a script, one copy per process::

    python tests/optuna_create_race.py --dir /tmp/race --processes 3 --rounds 6

Round ``i``: wait until every process has announced round ``i`` (files in ``--dir``), then call
:func:`jopt.sweep.optuna_study.create_study` on the new database ``--dir/i.db``. The module is
loaded from its file (it imports nothing of jopt), so no process pays for importing JAX. Prints
the rounds' study ids as JSON; any error ends the process with a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "jopt" / "sweep" / "optuna_study.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("optuna_study", MODULE)
    study_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study_module)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root, ids = Path(args.dir), []
    for i in range(args.rounds):
        ready = root / f"round{i}"
        ready.mkdir(parents=True, exist_ok=True)
        (ready / str(os.getpid())).write_text("")
        deadline = time.monotonic() + 60
        while len(list(ready.iterdir())) < args.processes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"round {i}: not every process arrived")
            time.sleep(0.001)
        study = study_module.create_study(
            storage=f"sqlite:///{root / f'{i}.db'}", study_name="s", heartbeat_interval=1
        )
        ids.append(study._study_id)
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
