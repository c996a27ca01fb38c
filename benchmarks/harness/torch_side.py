"""The PyTorch baselines' process: which Python runs them, and a long-lived worker
(`torch_baseline.py serve`) asked for one measurement at a time."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

#: The folder of the benchmark scripts (torch_baseline.py, time_to_accuracy.py).
BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The Python of a PyTorch environment for the torch baselines (see torch_baseline.py);
#: `--torch-python` or the KCNN_TORCH_PYTHON environment variable override it.
DEFAULT_TORCH_PYTHON = "/tmp/torchenv/bin/python"
TORCH_SCRIPT = os.path.join(BENCHMARKS, "torch_baseline.py")
TORCH_VENV_HELP = (
    "python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy"
)


def torch_python(path: str | None = None) -> tuple[str | None, str]:
    """The Python that runs the torch baselines, and if there is none, why.

    PyTorch runs in a process of its own (`torch_baseline.py`), never in this one: the
    baseline then has its process, its threads and its memory to itself, as a PyTorch
    user's script would.
    """
    path = path or os.environ.get("KCNN_TORCH_PYTHON") or DEFAULT_TORCH_PYTHON
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return None, f"PyTorch baseline skipped: no Python at {path} (build one: {TORCH_VENV_HELP}; or pass --torch-python)"
    return path, ""


class TorchWorker:
    """A long-lived `torch_baseline.py serve` process, asked for one measurement at a time
    (JSON lines), so the torch side alternates with kcnn's without a process start and a
    model build per measurement.

    Args:
        python: the Python of a PyTorch environment.
        script: the worker script (default `TORCH_SCRIPT`).
        timeout: seconds each answer may take; then the worker is killed.
    """

    def __init__(self, python: str, script: str = TORCH_SCRIPT, timeout: float = 900):
        import subprocess

        self.timeout = timeout
        self.process = subprocess.Popen(
            [python, script, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def ask(self, request: Mapping[str, Any]) -> dict:
        """Sends `request`, returns the answer; raises RuntimeError on an error answer,
        a dead worker or a timeout (the worker is then killed: SIGKILL)."""
        import select

        if self.process.poll() is not None:
            raise RuntimeError(f"The torch worker has exited (code {self.process.returncode}).")
        self.process.stdin.write(json.dumps(dict(request)) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()  # stuck or dead: nothing more to ask it
            self.process.wait()
            why = f"no answer within {self.timeout:.0f} s" if not ready else "it exited"
            raise RuntimeError(f"The torch worker gave no answer to {request.get('op')!r}: {why}.")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"The torch worker failed on {request.get('op')!r}: {answer['error']}")
        return answer

    def close(self) -> int | None:
        """Asks the worker to quit; kills it if it has not within 10 s. Returns its exit code."""
        import subprocess

        if self.process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.write('{"op": "quit"}\n')
                self.process.stdin.flush()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
