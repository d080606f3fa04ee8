"""Independent Optuna workers (separate processes, tests/optuna_worker.py) sharing one SQLite study.

Scenarios a user running a sweep on several processes meets, each ending with the study holding
exactly the requested number of complete trials, none trained twice:

- ``fresh``: two workers start at the same moment on a new database file (no study, no tables:
  they race to create both) and share the work;
- ``killed``: worker 0 asks its trials and hangs in training; worker 1 trains the rest of the
  budget and then waits (worker 0's trials still count), until worker 0 is SIGKILLed; then its
  trials go stale (heartbeat every 1 s, grace period 2 s), are failed and queued again, and worker
  1 trains their retries;
- ``restart``: as ``killed``, and worker 0 is restarted right after the kill, next to worker 1.

And the storage races alone, many times over (tests/optuna_storage_race.py, without JAX):
processes creating the same study on new files at the same moment all get it, and processes
asking trials from one queue at once never get the same one (SQLite has no row locks).

All processes import JAX before a barrier (a few seconds each, in parallel). Workers run one
device; the cross-process check reruns the trials here on 8 (rtol=1e-5, atol=1e-6).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from jopt import sweep
from jopt.sweep.optuna_adapter import config_from_params
from tests import optuna_worker
from tests.sweep_helpers import SPACE, make_task

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120  # every process is killed after this (several seconds each on an idle machine)
TRIALS, BATCH = 6, 2
RTOL, ATOL = 1e-5, 1e-6

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Workers:
    """Worker processes on one study; ``start`` spawns one, ``finish`` collects their reports."""

    def __init__(self, tmp: Path, workers: int):
        self.tmp, self.workers = tmp, workers
        self.url, self.name = f"sqlite:///{tmp / 'shared.db'}", "shared"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        self.env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
        self.deadline = time.monotonic() + TIMEOUT_S

    def start(self, label: str, index: int, **flags: str) -> None:
        args = dict(storage=self.url, study_name=self.name, trials=TRIALS, batch=BATCH, worker=index,
                    workers=self.workers, ready_dir=self.tmp / "ready", out=self.tmp / f"{label}.json",
                    heartbeat_interval=1, grace_period=2, **flags)  # fmt: skip
        cmd = [sys.executable, str(ROOT / "tests" / "optuna_worker.py")]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]
        self.procs[label] = subprocess.Popen(
            cmd, env=self.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def wait_until(self, condition, what: str) -> None:
        while not condition():
            finished = {k: p.returncode for k, p in self.procs.items() if p.poll() is not None}
            assert time.monotonic() < self.deadline, f"timed out waiting for {what}"
            assert not any(finished.values()), f"a worker failed while waiting for {what}: {self.output()}"
            time.sleep(0.05)

    def kill(self, label: str) -> None:
        self.procs[label].send_signal(signal.SIGKILL)
        self.procs[label].wait()

    def output(self) -> str:
        outs = []
        for label, p in self.procs.items():
            if p.poll() is not None and p.stdout is not None and not p.stdout.closed:
                outs.append(f"{label}: {p.stdout.read()}")
        return "\n---\n".join(outs)

    def finish(self, labels: list[str]) -> list[dict]:
        try:
            for label in labels:
                p = self.procs[label]
                out = p.communicate(timeout=max(1.0, self.deadline - time.monotonic()))[0]
                assert p.returncode == 0, f"{label}:\n{out}"
        finally:
            for p in self.procs.values():
                if p.poll() is None:
                    p.kill()
        return [json.loads((self.tmp / f"{label}.json").read_text()) for label in labels]


def complete(study) -> list:
    return [t for t in study.get_trials() if t.state == TrialState.COMPLETE]


@pytest.mark.parametrize("scenario", ["fresh", "killed", "restart"])
def test_workers_end_with_exactly_the_requested_trials(tmp_path, scenario):
    w = Workers(tmp_path, workers=2 if scenario != "restart" else 3)
    if scenario == "fresh":
        w.start("a", 0)
        w.start("b", 1)
        reports = w.finish(["a", "b"])
        dead_pid = None
    else:
        hang, go, go_again = tmp_path / "hang", tmp_path / "go", tmp_path / "go-again"
        w.start("dead", 0, hang_file=hang)
        w.start("b", 1, go_file=go)
        if scenario == "restart":  # the killed worker's restart, started in advance
            w.start("again", 0, go_file=go_again)
        w.wait_until(hang.exists, "worker 0 in training")  # its BATCH trials are RUNNING
        dead_pid = int(hang.read_text())
        go.write_text("")

        def rest_done() -> bool:
            return len(complete(optuna.load_study(study_name=w.name, storage=w.url))) >= TRIALS - BATCH

        w.wait_until(rest_done, "worker 1 to train the rest of the budget")  # now it waits
        w.kill("dead")
        if scenario == "restart":
            go_again.write_text("")
        reports = w.finish(["b"] if scenario == "killed" else ["b", "again"])

    study = optuna.load_study(study_name=w.name, storage=w.url)
    done = complete(study)
    assert len(done) == TRIALS
    evaluated = [set(r["evaluated"]) for r in reports]
    assert set().union(*evaluated) == {t.number for t in done}
    assert sum(map(len, evaluated)) == TRIALS  # nothing trained twice
    for rep in reports:  # each trial was asked by the process that trained it
        assert all(
            study.trials[n].user_attrs["jopt_host"].endswith(f":{rep['pid']}") for n in rep["evaluated"]
        )
    dead = [t for t in study.trials if t.user_attrs.get("jopt_host", "").endswith(f":{dead_pid}")]
    others = [t for t in study.trials if t.state != TrialState.COMPLETE and t not in dead]
    # a second copy of a retry (two workers failed a dead trial at once) may be left queued
    queued = [t for t in others if t.state == TrialState.WAITING]
    retried = [t.user_attrs.get("jopt_retry_of") for t in done]
    assert all(t.user_attrs["jopt_retry_of"] in retried for t in queued)
    cancelled = [t for t in others if t not in queued]
    assert all(t.user_attrs["jopt_status"] == "cancelled" for t in cancelled)  # lost a race, never trained
    assert sum(r["cancelled"] for r in reports) == len(cancelled)
    if scenario == "fresh":
        assert all(evaluated)  # both contributed
        check_reproducible(done)
        return
    assert len(dead) == BATCH and all(t.state == TrialState.FAIL for t in dead)  # failed as stale ...
    for t in dead:  # ... and trained again, once
        retries = [r for r in done if r.user_attrs.get("jopt_retry_of") == t.number]
        assert len(retries) == 1 and retries[0].params == t.params
        assert retries[0].user_attrs["jopt_retry_reason"] == "stale"
    assert reports[0]["waits"] > 0  # worker 1 waited for the dead worker's trials, did not end


def check_reproducible(done) -> None:
    """A trial's result depends on its configuration and number, not on the process: rerun here."""
    configs = [config_from_params(SPACE, t.params) for t in done]
    kw = dict(steps=optuna_worker.STEPS, eval_every=optuna_worker.EVAL_EVERY, progress=False)
    here = sweep.run(make_task(), SPACE, configs, trial_ids=[t.number for t in done], seed=0, **kw)
    np.testing.assert_allclose(
        [t.objective for t in here.trials], [t.value for t in done], rtol=RTOL, atol=ATOL
    )


def test_processes_racing_on_new_databases_and_one_queue_all_succeed_once(tmp_path):
    processes, rounds, queued = 3, 6, 80  # unhandled: a third of the creations fail, pops collide
    queue = optuna.create_study(storage=f"sqlite:///{tmp_path / 'queue.db'}", study_name="s")
    for i in range(queued):
        queue.enqueue_trial({}, user_attrs={"queued": i})
    cmd = [sys.executable, str(ROOT / "tests" / "optuna_storage_race.py"), f"--dir={tmp_path}"]
    cmd += [f"--processes={processes}", f"--rounds={rounds}"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(processes)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n---\n".join(outputs)
    reports = [json.loads(out.splitlines()[-1]) for out in outputs]
    assert [r["ids"] for r in reports] == [[1] * rounds] * processes
    for i in range(rounds):  # one study in each database
        assert optuna.get_all_study_names(f"sqlite:///{tmp_path / f'{i}.db'}") == ["s"]
    got = [n for r in reports for n in r["got"]]
    assert sorted(got) == list(range(queued))  # every queued trial asked by exactly one process
