"""A saved kcnn model reopens in a new process, whatever the entry point and whatever the
order in which kcnn, TensorFlow and Keras were imported: every `kcnn` command that reads
a run folder, every `kcnn.train` function that does, and plain Keras after `import
kcnn`. Only a fresh interpreter can show whether kcnn's custom layers are registered
there, so each case runs in one (killed after a timeout); one process covers every
family, so that the cases cost one TensorFlow start-up each."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from kcnn import data as kdata
from kcnn import train
from kcnn.train.driver import save_run

TIMEOUT = 300

# One small model per family with a custom layer: (registry name, builder arguments,
# input shape). The registry names (recorded as such in metadata.json) with arguments
# that keep each family's custom layers but shrink the rest: ResNet-18 at width 8 (its
# 70 layers, 0.2M parameters instead of 11M), GoogLeNet's stem (LRN) with two inception
# modules instead of nine; backbones without their 4096-wide tops keep the files small.
FAMILIES = {
    "resnet": ("resnet18", dict(include_top=False, pooling="avg", width=8, stem="small"), (16, 16, 3)),  # FusedBatchNormalization
    "vgg_bn": ("vgg11_bn", dict(include_top=False, pooling="avg"), (32, 32, 3)),  # FusedBatchNormalization
    "alexnet": ("alexnet", dict(include_top=False, pooling="avg"), (67, 67, 3)),  # LocalResponseNormalization
    "googlenet": (
        "googlenet",
        dict(include_top=False, pooling="avg", stages=(((8, 8, 8, 4, 4, 4),), ((8, 8, 8, 4, 4, 4),))),
        (32, 32, 3),
    ),  # LocalResponseNormalization
    "lenet_paper": ("lenet5", dict(variant="paper", classes=3), (32, 32, 1)),  # Subsampling2D, EuclideanRBF, lecun_tanh
}

ALL = tuple(sorted(FAMILIES))
# Exporting and fine-tuning cost seconds a model beyond reopening it: one family with
# each kind of kcnn layer (BatchNorm, LRN, LeNet's).
COSTLY = ("googlenet", "lenet_paper", "resnet")

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder with, per family, a run folder (model.keras + metadata.json) trained on
    nothing, its .npz dataset and a PNG image of its input size."""
    import kcnn

    folder = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    for family, (name, arguments, shape) in FAMILIES.items():
        x = rng.integers(0, 256, size=(36, *shape), dtype=np.uint8)
        np.savez(folder / f"{family}.npz", x=x, y=np.arange(36) % 3)
        Image.fromarray(x[0].squeeze(-1) if shape[-1] == 1 else x[0]).save(folder / f"{family}.png")
        dataset = kdata.load(str(folder / f"{family}.npz"), batch_size=8, seed=1)
        model = kcnn.create_model(name, input_shape=shape, **arguments)
        if not arguments.get("classes"):
            model = train.replace_head(model, 3)
        save_run(model, dataset, train.TrainConfig(epochs=1, batch_size=8, augment=None), folder / family)
    return folder


def run_fresh(code, cwd):
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


# The orders a user's script or notebook imports in. Keras is imported before kcnn
# (directly, or by TensorFlow), after it by kcnn itself, by the user, or by TensorFlow:
# `kcnn`, `tensorflow` is the command line's own order, and TensorFlow looks Keras up a
# dozen times before it imports it, which once used up the hook that registers kcnn's
# layers (no BatchNorm run reopened from the command line).
IMPORT_ORDERS = [("kcnn",), ("kcnn", "tensorflow", "keras"), ("kcnn", "keras"), ("tensorflow", "kcnn"), ("keras", "kcnn")]


@pytest.mark.parametrize("order", IMPORT_ORDERS, ids="-".join)
def test_every_python_entry_point_reopens_every_family(runs, order):
    # The README's order (`from kcnn import train`) runs every entry point that reads a
    # run folder; `train.fine_tune(run, ...)` is what `kcnn fine-tune` runs in a process
    # started alike (`kcnn_commands`, on one family per kind of kcnn layer), so it is
    # not run twice. The others reopen each file with Keras' own load_model, where the
    # registration of kcnn's layers shows (it is per process, not per entry point: what
    # kcnn's loaders add is tested in the first).
    every = order == ("kcnn",)
    out = run_fresh(
        f"""
        import importlib

        for module in {order!r}:
            importlib.import_module(module)

        import keras
        import numpy as np
        from kcnn import train

        for family in {sorted(FAMILIES)!r}:
            kinds = sorted({{type(layer).__name__ for layer in keras.models.load_model(f"{{family}}/model.keras").layers
                            if type(layer).__module__.startswith("kcnn")}})
            if {every}:
                print(family, ",".join(kinds), train.evaluate(family)["examples"])
                model, metadata = train.load(family)
                images = np.zeros((2, *model.input_shape[1:]), np.uint8)
                print(
                    "every", family, len(train.predict(family, images, top_k=1)),
                    train.feature_extractor(family).output_shape[-1] > 0,
                )
            else:
                print(family, ",".join(kinds), "-")
        """,
        runs,
    )
    lines = out.splitlines()
    for family in FAMILIES:
        [line] = [line.split() for line in lines if line.startswith(f"{family} ")]
        assert line[2] == ("6" if every else "-"), line
        if every:
            assert f"every {family} 2 True" in lines
    kinds = {kind for line in lines if not line.startswith("every") for kind in line.split()[1].split(",")}
    assert kinds == {
        "FusedBatchNormalization", "LocalResponseNormalization", "ConnectionTableConv2D", "EuclideanRBF", "Subsampling2D",
    }


# Every `kcnn` command that reads a run folder, each on every family's run (export and
# fine-tune on one family per kind of kcnn layer, COSTLY), in one fresh process as the
# `kcnn` script runs them (`from kcnn.cli import main`): one TensorFlow start-up for all.
COMMANDS = {
    "evaluate": ((), ALL),
    "predict": (("{family}.png", "--top-k", "1"), ALL),
    "explain": (("{family}.png", "--output", "{family}-explained.png", "--method", "saliency"), ALL),
    "export": (("--output", "{family}.tflite", "--overwrite"), COSTLY),
    "fine-tune": (
        ("--data", "{family}.npz", "--epochs", "1", "--head-epochs", "1", "--batch-size", "8", "--augment", "none",
         "--verbose", "0", "--output", "cli-tuned-{family}"),
        COSTLY,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def kcnn_commands(runs):
    """{command: (its stdout, its exit code per family)}."""
    run_fresh(
        f"""
        import contextlib, io, json
        from kcnn.cli import main

        results = {{}}
        for command, (arguments, families) in {COMMANDS!r}.items():
            with contextlib.redirect_stdout(io.StringIO()) as out:
                codes = [main([command, family, *[a.format(family=family) for a in arguments]]) for family in families]
            results[command] = [out.getvalue(), codes]
        with open("commands.json", "w") as file:
            json.dump(results, file)
        """,
        runs,
    )
    return json.loads((runs / "commands.json").read_text())


def kcnn_command(kcnn_commands, command):
    """The stdout of `kcnn COMMAND` on each family's run, all of whose exit codes are 0."""
    out, codes = kcnn_commands[command]
    assert codes == [0] * len(COMMANDS[command][1]), out
    return out


def test_kcnn_evaluate_reopens_every_family(kcnn_commands):
    out = kcnn_command(kcnn_commands, "evaluate")
    assert out.count("test accuracy:") == len(FAMILIES) and out.count("(6 images)") == len(FAMILIES)


def test_kcnn_predict_reopens_every_family(kcnn_commands):
    out = kcnn_command(kcnn_commands, "predict")
    assert [line.split(":")[0] for line in out.splitlines()] == [f"{family}.png" for family in sorted(FAMILIES)]


def test_kcnn_explain_reopens_every_family(runs, kcnn_commands):
    out = kcnn_command(kcnn_commands, "explain")
    assert all((runs / f"{family}-explained.png").stat().st_size > 0 for family in FAMILIES), out


def test_kcnn_export_reopens_every_kind_of_layer(runs, kcnn_commands):
    out = kcnn_command(kcnn_commands, "export")
    for family in COSTLY:
        assert (runs / f"{family}.tflite").stat().st_size > 0
        assert json.loads((runs / f"{family}.tflite.json").read_text())["class_names"] == ["0", "1", "2"]
    assert out.count("model written to") == len(COSTLY)


def test_kcnn_fine_tune_reopens_every_kind_of_layer(runs, kcnn_commands):
    kcnn_command(kcnn_commands, "fine-tune")
    for family in COSTLY:
        metadata = json.loads((runs / f"cli-tuned-{family}" / "metadata.json").read_text())
        assert metadata["status"] == "completed" and metadata["metrics"]["epochs"] == 1
