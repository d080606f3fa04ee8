"""Launching a multi-process JAX job on localhost from a test (one coordinator port, N copies of
a worker script that differ only in ``--process-id``), bounded by a deadline."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_once(script: str, args: Sequence[str], processes: int, timeout: float) -> tuple[list[int], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the worker sets its own
    env["PYTHONPATH"] = str(ROOT)
    common = [sys.executable, str(ROOT / "tests" / script), f"--coordinator=127.0.0.1:{port}",
              f"--num-processes={processes}"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*common, f"--process-id={i}", *(a.format(i=i) for a in args)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(processes)
    ]
    deadline = time.monotonic() + timeout
    try:
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        outputs = [p.communicate()[0] for p in procs]
        raise AssertionError(f"{script} exceeded {timeout}s:\n" + "\n---\n".join(outputs)) from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [p.returncode for p in procs], "\n---\n".join(outputs)


def launch(script: str, args: Sequence[str], processes: int = 2, timeout: float = 60) -> str:
    """Run ``tests/<script>`` as ``processes`` processes of one job and return their output;
    ``{i}`` in an argument becomes the process id. Retried once if the port was taken meanwhile.

    Raises:
      AssertionError: a process failed or the job exceeded ``timeout`` seconds.
    """
    codes, output = _run_once(script, args, processes, timeout)
    if any(codes) and "in use" in output.lower():
        codes, output = _run_once(script, args, processes, timeout)
    assert codes == [0] * processes, output
    return output


def worker_arguments(description: str, extra: Sequence[tuple[str, dict]] = (), timeout: int = 30):
    """A worker script's arguments (the job's coordinator, process count and id, simulated
    devices, output path, join timeout, plus ``extra`` ``(flag, add_argument kwargs)``), parsed;
    then the process is set up to simulate its devices on the CPU and import the repository.
    Call before JAX is imported."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--local-devices", type=int, default=2)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--timeout", type=int, default=timeout, help="seconds to wait for the other processes"
    )
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    args = parser.parse_args()
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.local_devices}"
    sys.path.insert(0, str(ROOT))
    return args


def join_job(args) -> None:
    """``jax.distributed.initialize`` with a worker's arguments (CPU collectives through gloo)."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        initialization_timeout=args.timeout,
    )
