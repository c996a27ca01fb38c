"""The package's shape: lazy public names, a command line that starts without
TensorFlow, and kcnn's layers registered with Keras whatever the import order."""

import importlib
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

import kcnn

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT = 120


def run_python(code, timeout=SUBPROCESS_TIMEOUT):
    """Runs `code` in a fresh interpreter (killed after `timeout` s); returns its stdout."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


@pytest.mark.parametrize(
    "package,modules",
    [
        ("kcnn", ["kcnn.models", "kcnn.registry", "kcnn.dense.fcn_vgg", "kcnn.dense.unet_decoder"]),
        ("kcnn.dense", [f"kcnn.dense.{m}" for m in ("fcn_vgg", "unet_decoder", "pyramid", "layers")]),
        ("kcnn.train", [f"kcnn.train.{m}" for m in ("config", "distribute", "compile", "runs", "callbacks", "inputs", "phases", "driver", "inference", "transfer")]),
        ("kcnn.tune", [f"kcnn.tune.{m}" for m in ("config", "spaces", "driver", "report", "_keras_tuner")]),
    ],
)
def test_public_names_are_the_objects_not_modules_of_the_same_name(package, modules):
    for module in modules:
        importlib.import_module(module)  # A sub-module import binds its name on the package.
    package = importlib.import_module(package)
    for name in package.__all__:
        value = getattr(package, name)
        assert not isinstance(value, type(kcnn)), f"{package.__name__}.{name} is a module"
    assert set(package.__all__) <= set(dir(package))


def test_internals_are_not_exported():
    from kcnn import train, tune

    for name in ("with_targets", "RunFolder", "save_run", "load_data", "prepare_model"):
        assert name not in train.__all__ and not hasattr(train, name)
    for name in ("parse_address", "collect_trials", "make_tuner"):
        assert name not in tune.__all__ and not hasattr(tune, name)


def test_submodules_are_reachable_after_a_bare_import():
    out = run_python("import kcnn\nprint(kcnn.shapes.conv_output_size(7, 3, stride=2), kcnn.data.load.__name__)")
    assert out.split() == ["3", "load"]


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["list", "--names"], ["list", "--names-only"], ["list", "resnet*"], ["train", "--help"], ["tune", "--help"], ["weights", "list", "vgg*"]],
)
def test_the_command_line_starts_without_tensorflow(argv):
    code = (
        "import sys\nfrom kcnn.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('LOADED', *sorted(m for m in ('tensorflow', 'keras', 'keras_tuner') if m in sys.modules))"
    )
    assert run_python(code).splitlines()[-1] == "LOADED"


def test_version_is_the_projects():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert kcnn.__version__ == version
    assert run_python("from kcnn.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass").strip() == f"kcnn {version}"


def test_tensorflow_start_up_lines_stay_off_the_terminal(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [sys.executable, "-m", "kcnn", "summary", "lenet5"],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env, cwd=tmp_path,
    )
    assert completed.returncode == 0 and "Total params: 61,706" in completed.stdout
    assert "cuInit" not in completed.stderr and "oneDNN" not in completed.stderr and "cuda" not in completed.stderr.lower()
