"""Executes the notebooks in place with their own (full) parameters, as committed.

    .venv/bin/python notebooks/run_all.py                 # all notebooks
    .venv/bin/python notebooks/run_all.py 02              # the ones whose name contains "02"

The tests (tests/test_notebooks.py) use `execute` with small parameters instead. Each
notebook runs in the Jupyter kernel "python3" of the interpreter that runs this script
(jupyter_client starts the kernelspec's `python` as `sys.executable`), in the notebooks/
folder, and writes its run folders to a temporary folder. The outputs are checked for
machine-specific paths before the notebook is saved.
"""

from __future__ import annotations

import getpass
import os
import pathlib
import re
import sys
import tempfile
import time

import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
KERNEL = "python3"
# TensorFlow's C++ start-up messages (oneDNN, CUDA) are written to file descriptor 2,
# which ipykernel forwards into the notebook by default; they stay in the terminal.
KERNEL_ARGUMENTS = ["--IPKernelApp.capture_fd_output=False"]


def inject_parameters(notebook: nbformat.NotebookNode, parameters: dict) -> nbformat.NotebookNode:
    """Inserts a cell assigning `parameters` after the cell tagged "parameters", as
    papermill does (the new cell is tagged "injected-parameters")."""
    if not parameters:
        return notebook
    index = next(
        (i for i, cell in enumerate(notebook.cells) if "parameters" in cell.get("metadata", {}).get("tags", [])), None
    )
    if index is None:
        raise ValueError("The notebook has no cell tagged 'parameters'")
    source = "# Parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(index + 1, cell)
    return notebook


def execute(path, parameters: dict | None = None, *, timeout: int = 900) -> nbformat.NotebookNode:
    """Runs a notebook (with `parameters` injected) and returns it with its outputs.

    Raises:
        nbclient.exceptions.CellExecutionError: if a cell fails.
    """
    path = pathlib.Path(path)
    notebook = inject_parameters(nbformat.read(path, as_version=4), parameters or {})
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=timeout,
        extra_arguments=KERNEL_ARGUMENTS,
        resources={"metadata": {"path": os.fspath(path.parent)}},
    )
    client.execute()
    return notebook


def private_strings() -> list[str]:
    """Strings that must not appear in committed outputs: this checkout's path, the home
    folder, the temporary folder and the user name."""
    strings = {os.fspath(HERE.parent), os.path.expanduser("~"), tempfile.gettempdir(), "/tmp/"}
    user = getpass.getuser()
    if len(user) > 2 and user != "root":  # "/root" is the home folder, checked above
        strings.add(user)
    return sorted(s for s in strings if len(s) > 1)


def leaks(notebook: nbformat.NotebookNode) -> list[str]:
    """The outputs that show a machine-specific path or the user name."""
    found = []
    pattern = re.compile("|".join(re.escape(s) for s in private_strings()))
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [
                value for key, value in output.get("data", {}).items() if key.startswith("text/")
            ] + ["\n".join(output.get("traceback", []))]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else text
                match = pattern.search(text)
                if match:
                    found.append(f"cell {number}: ...{text[max(0, match.start() - 60):match.end() + 60]}...")
    return found


def clean(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drops what changes on every run but says nothing: execution timestamps."""
    for cell in notebook.cells:
        cell.get("metadata", {}).pop("execution", None)
    return notebook


def main(argv=None) -> int:
    selected = [p for p in NOTEBOOKS if not argv or any(a in p.name for a in argv)]
    for path in selected:
        started = time.perf_counter()
        print(f"running {path.name} ...", flush=True)
        notebook = clean(execute(path))
        found = leaks(notebook)
        if found:
            print(f"{path.name}: outputs show machine-specific paths; not saved:\n  " + "\n  ".join(found))
            return 1
        nbformat.write(notebook, path)
        print(f"{path.name}: {time.perf_counter() - started:.0f} s, {path.stat().st_size / 1e3:.0f} kB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
