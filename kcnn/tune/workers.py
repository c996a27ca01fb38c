"""`kcnn tune ... --workers N`: a distributed keras-tuner search on one machine.

keras-tuner distributes a search over processes that find each other through
environment variables: a chief that serves the oracle (`KERASTUNER_TUNER_ID=chief`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`) and workers that ask it for trials
and run them. `kcnn tune --chief HOST:PORT [--worker ID]` sets them
(`kcnn.tune.search`); this module starts the chief and N workers of one command on
a free local port, each worker pinned to one accelerator through
`CUDA_VISIBLE_DEVICES` (round robin over the visible ones; on a CPU machine the N
workers share the cores), and stops them all cleanly on Ctrl-C or as soon as one
of them fails.

It imports neither TensorFlow nor keras-tuner: the processes it starts do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

#: Seconds a process is given to end after SIGTERM before it is SIGKILLed.
GRACE_SECONDS = 10.0


def visible_accelerators(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs the workers share out: `CUDA_VISIBLE_DEVICES` when set (its entries),
    else those `nvidia-smi -L` lists (their indices), else none."""
    environ = os.environ if environ is None else environ
    given = environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def cluster_commands(argv: Sequence[str], workers: int, *, port: int, devices: Sequence[str] = ()) -> list[tuple[str, list[str], dict[str, str]]]:
    """The `(name, command, environment changes)` of the chief and each worker.

    Args:
        argv: the `kcnn tune ...` arguments without `--workers`.
        workers: how many workers.
        port: the chief's port on 127.0.0.1.
        devices: the accelerators to share out (`visible_accelerators`); worker k
            gets `devices[k % len(devices)]`.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`--workers` must be an int >= 1. Received: workers={workers!r}")
    if any(arg in ("--chief", "--worker") or arg.startswith(("--chief=", "--worker=")) for arg in argv):
        raise ValueError(f"`--workers` starts the chief and the workers itself: drop --chief and --worker. Received: {list(argv)}")
    base = [sys.executable, "-m", "kcnn", *argv, "--chief", f"127.0.0.1:{port}"]
    # Each process takes GPU memory as it needs it, not all of it at once.
    common = {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    commands = [("chief", base, {**common, **({"CUDA_VISIBLE_DEVICES": devices[0]} if devices else {})})]
    for index in range(workers):
        pinned = {"CUDA_VISIBLE_DEVICES": devices[index % len(devices)]} if devices else {}
        commands.append((f"w{index}", [*base, "--worker", f"w{index}"], {**common, **pinned}))
    return commands


def run_cluster(commands, *, out=None, poll_seconds: float = 0.2) -> int:
    """Runs the processes of `cluster_commands` until the chief ends; stops every one
    of them when one fails, on Ctrl-C, or when the chief is done.

    Every line a process prints is copied to `out` (default stdout), the workers'
    prefixed with their name.

    Returns:
        The chief's exit code; else the first failing process' (130 on Ctrl-C).
    """
    out = out or sys.stdout
    lock = threading.Lock()
    processes: dict[str, subprocess.Popen] = {}
    pumps = []
    for name, command, changes in commands:
        env = {**os.environ, **changes}
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        processes[name] = process
        prefix = "" if name == "chief" else f"[{name}] "
        pump = threading.Thread(target=_copy_lines, args=(process.stdout, out, prefix, lock), daemon=True)
        pump.start()
        pumps.append(pump)
    code = None
    try:
        while code is None:
            chief = processes["chief"].poll()
            failed = next(
                (name for name, p in processes.items() if p.poll() not in (None, 0)), None
            )
            if failed is not None:
                code = processes[failed].returncode
                if failed != "chief":
                    _say(out, lock, f"kcnn tune: {failed} ended with exit code {code}; stopping the search")
            elif chief is not None:
                code = chief
            else:
                time.sleep(poll_seconds)
    except KeyboardInterrupt:
        _say(out, lock, "\nkcnn tune: interrupted; stopping the chief and the workers (run the same command to resume)")
        code = 130
    finally:
        stop(processes.values())
        for pump in pumps:
            pump.join(timeout=5)
    return code


def stop(processes, grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to each live process (and its process group), SIGKILL after `grace` s."""
    live = [p for p in processes if p.poll() is None]
    for process in live:
        _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in live:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            process.wait()


def _signal(process, sig) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # The process and anything it started.


def _copy_lines(stream, out, prefix, lock) -> None:
    for line in stream:
        _say(out, lock, prefix + line.rstrip("\n"))
    stream.close()


def _say(out, lock, text) -> None:
    with lock:
        print(text, file=out, flush=True)
