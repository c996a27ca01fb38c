"""The README as a new user follows it: every Python block runs as written, in order, in
a fresh interpreter (each block in its own namespace, so each must import what it uses),
and every `kcnn` command line it shows is one the command line accepts.

Only the training is shortened, by a shim the blocks do not see: one epoch per run, a
one-trial, one-epoch search of a small space, and the same `train.fit(model, data)` call
(the blocks' `train.fit("lenet5", "digits")`) trained once and its run reused, so the
README's full-length examples run in about a minute. Everything else, downloads
excepted, is what a user's copy-paste does.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

from kcnn.cli import build_parser

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
TIMEOUT = 600

SHIM = textwrap.dedent(
    '''
    import dataclasses

    import kcnn.train
    import kcnn.tune
    from kcnn.train.config import TrainConfig

    _fit, _fine_tune, _search = kcnn.train.fit, kcnn.train.fine_tune, kcnn.tune.search


    def _short(config):
        config = config or TrainConfig()
        return dataclasses.replace(config, epochs=1)


    # Several blocks train the same network on the same data with the defaults
    # (`train.fit("lenet5", "digits")`): the first trains it, the others get its run. A
    # training costs seconds of tracing whatever its epochs, and the blocks read the run only.
    _trained = {}


    def fit(model, data="digits", config=None, **options):
        key = (model, data) if isinstance(model, str) and isinstance(data, str) and config is None and not options else None
        if key is None or key not in _trained:
            run = _fit(model, data, _short(config), **options)
            if key is None:
                return run
            _trained[key] = run
        return _trained[key]


    def fine_tune(model, data, config=None, **options):
        return _fine_tune(model, data, _short(config), **options)


    def search(space="convnet", data="digits", config=None, **options):
        short = {"max_trials": 1, "max_epochs": 1, "top_k": 1, "finish_epochs": 1, "seeds": 1, "references": None}
        # A small corner of the space (its choices, narrowed): the same search, cheaper models.
        ranges = {"depth": 2, "filters": 8, "convs_per_stage": 1, "hidden_units": 32, **options.pop("ranges", {})}
        return _search(space, data, config, ranges=ranges, **{**options, **short})


    kcnn.train.fit, kcnn.train.fine_tune, kcnn.tune.search = fit, fine_tune, search

    # No network: the ImageNet weight files the blocks ask for are stand-ins with random
    # weights, served from file:// URLs with their true hashes (tests/fixtures/local_weights.py).
    import sys

    sys.path.insert(0, TESTS)
    from fixtures.local_weights import serve_locally

    serve_locally(["resnet50.keras_in1k", "resnet50.tv_in1k"], "weight_files", "kcnn_home")
    '''
)

RUNNER = textwrap.dedent(
    '''
    import json
    import sys

    blocks = json.loads(sys.argv[1])
    for number, block in enumerate(blocks, 1):
        print(f"--- README python block {number}", flush=True)
        exec(compile(block, f"README.md python block {number}", "exec"), {"__name__": "__main__"})
    print("--- all blocks ran", flush=True)
    '''
)


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def command_lines():
    """The `kcnn ...` lines of the README's shell examples (fenced or indented),
    continuation lines joined."""
    text = README.read_text().replace("\\\n", " ")
    lines = []
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True) if line.strip().startswith("kcnn ") else []
        if words:
            lines.append(words)
    return lines


def test_the_readme_has_blocks_to_run():
    assert len(python_blocks()) >= 6 and len(command_lines()) >= 10


def test_every_python_block_runs_as_written(tmp_path):
    import json

    completed = subprocess.run(
        [sys.executable, "-c", f"TESTS = {str(README.parent / 'tests')!r}\n" + SHIM + RUNNER, json.dumps(python_blocks())],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    assert completed.stdout.rstrip().endswith("--- all blocks ran")
    # What the blocks write goes under saved_models/, as kcnn's runs do (ignored by git),
    # not into the folder a user runs them from (the repository's root); the shim's
    # stand-in weight files aside.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kcnn_home", "saved_models", "weight_files"]


@pytest.mark.parametrize("words", command_lines(), ids=lambda words: " ".join(words)[:60])
def test_every_command_line_parses(words):
    assert words[0] == "kcnn"
    build_parser().parse_args(words[1:])
