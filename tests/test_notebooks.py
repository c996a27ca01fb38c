"""The notebooks: committed executed and clean, and they run end to end with small parameters.

Each notebook is executed with nbclient in the Jupyter kernel "python3" of this interpreter
(the kernelspec's `python` is started as `sys.executable`), with a cell overriding its
parameters injected after the cell tagged "parameters", as papermill does. The notebooks
write their run folders to a temporary folder and a summary of their results to a JSON
file, which the tests check.
"""

import csv
import importlib.util
import json
import pathlib
import sys

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = ["01_from_perceptron_to_resnet", "02_transfer_learning", "03_hyperparameter_tuning", "04_segmentation"]

_spec = importlib.util.spec_from_file_location("kcnn_notebooks_run_all", NOTEBOOK_DIR / "run_all.py")
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

# Small versions of the notebooks' parameters: together about three minutes on two busy CPU cores.
FAST = {
    "01_from_perceptron_to_resnet": {"EPOCHS": 3, "ARCHITECTURES": ["alexnet", "googlenet", "resnet18"]},
    # A smoke test: every section runs end to end and its results are wired, on 16x16
    # digits (the notebook's nets fit them) with a few epochs: each training's cost is
    # mostly its tracing, checkpoints and evaluations, paid per run and per epoch. Four
    # source epochs teach the VGG-like net the source task; the target task's two short
    # phases (1 + 2 epochs) are not long enough to learn it: the committed notebook shows
    # what 30 epochs do. Section 4 fine-tunes ResNet-18 (torchvision's weights, a stand-in
    # file) instead of ResNet-50.
    "02_transfer_learning": {
        "IMAGE_SIZE": 16,
        "SOURCE_EPOCHS": 4,
        "BATCH_SIZE": 5,
        "TARGET_EPOCHS": 3,
        "HEAD_EPOCHS": 1,
        "VALIDATION_PER_CLASS": 4,
        "QUERIES": 2,
        "NEIGHBOURS": 3,
        "IMAGENET_MODEL": "resnet18",
        "IMAGENET_ARGS": {"variant": "v1.5"},
        "IMAGENET_SIZE": 32,
        "IMAGENET_EPOCHS": 1,
    },
    # One seed: the finish's repeats over seeds are tested in test_tune.py.
    "03_hyperparameter_tuning": {
        "SEEDS": 1,
        "MAX_TRIALS": 2,
        "MAX_EPOCHS": 1,
        "TOP_K": 2,
        "FINISH_EPOCHS": 1,
        "REFERENCES": "lenet5",
        "RANGES": {"depth": 2, "filters": 8, "kernel_size": 3, "convs_per_stage": 1, "batch_norm": False},
    },
    # An epoch of each segmentation model on 64 scenes of 32x32, kcnn's FCNs at 1/32 of VGG-16's
    # widths and a U-Net on LeNet-5: the path runs, the scores are chance.
    "04_segmentation": {
        "SCENES": 64,
        "IMAGE_SIZE": 32,
        "EPOCHS": 1,
        "BATCH_SIZE": 16,
        "FCN_KWARGS": {"width_multiplier": 1 / 32},
        "UNET_BACKBONE": "lenet5",
        "UNET_KWARGS": {"decoder_width": 4},
        "PYRAMIDS": ["lenet5", "resnet18"],
        "SHOWN": 2,
    },
}


def run_fast(name, tmp_path, **parameters):
    """Executes a notebook with its fast parameters; returns it and its results JSON."""
    results = tmp_path / "results.json"
    parameters = {**FAST[name], "OUTPUT_DIR": str(tmp_path / "runs"), "RESULTS_JSON": str(results), **parameters}
    notebook = run_all.execute(NOTEBOOK_DIR / f"{name}.ipynb", parameters, timeout=600)
    return notebook, json.loads(results.read_text())


def outputs(notebook, kind=None):
    return [o for cell in notebook.cells for o in cell.get("outputs", []) if kind is None or o.get("output_type") == kind]


# --------------------------------------------------------------------------
# The committed notebooks (no kernel needed).


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_and_clean(name):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell holds the parameters"
    assert not any("injected-parameters" in cell.metadata.get("tags", []) for cell in code)
    # Executed in order, from a fresh kernel, without errors.
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1))
    assert not outputs(notebook, "error")
    assert any("image/png" in o.get("data", {}) for o in outputs(notebook)), "plots are committed"
    assert run_all.leaks(notebook) == []
    assert path.stat().st_size < 1_000_000


def test_committed_notebooks_are_small():
    assert sum((NOTEBOOK_DIR / f"{name}.ipynb").stat().st_size for name in NAMES) < 3_000_000


def test_parameters_are_injected_after_the_parameters_cell():
    notebook = nbformat.read(NOTEBOOK_DIR / f"{NAMES[0]}.ipynb", as_version=4)
    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    run_all.inject_parameters(notebook, {"EPOCHS": 1, "ARCHITECTURES": ["lenet5"]})
    injected = notebook.cells[index + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert "EPOCHS = 1\n" in injected.source and "ARCHITECTURES = ['lenet5']\n" in injected.source


# --------------------------------------------------------------------------
# Execution.


def test_kernel_is_this_interpreter(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys\nprint(sys.executable)\nprint(sys.prefix)")])
    path = tmp_path / "which.ipynb"
    nbformat.write(notebook, path)
    executed = run_all.execute(path)
    executable, prefix = "".join(o["text"] for o in outputs(executed, "stream")).split()
    # The same interpreter (in a virtual environment: the same environment), not the system's.
    assert executable == sys.executable and prefix == sys.prefix


def test_01_from_perceptron_to_resnet(tmp_path):
    notebook, results = run_fast(NAMES[0], tmp_path)
    assert results["conv_params"] == 456 and results["dense_equivalent_params"] == 3072 * 4704 + 4704
    assert results["lenet5_test_accuracy"] > 0.5
    architectures = results["architectures"]
    assert set(architectures) == set(FAST[NAMES[0]]["ARCHITECTURES"])
    assert architectures["alexnet"]["params"] == 60_965_224 and architectures["alexnet"]["year"] == 2012
    assert architectures["googlenet"]["params"] < architectures["alexnet"]["params"] / 8
    assert results["vgg16_fc_param_share"] > 0.85
    assert results["inception_5x5_macs"]["reduced"] < results["inception_5x5_macs"]["naive"] / 5
    assert results["blocks"]["bottleneck"] < results["blocks"]["basic"] / 10
    assert len([o for o in outputs(notebook) if "image/png" in o.get("data", {})]) >= 4
    assert not list((tmp_path / "runs").glob("**/checkpoint*")), "the LeNet-5 run finished"


def test_02_transfer_learning(tmp_path):
    _, results = run_fast(NAMES[1], tmp_path)
    runs = tmp_path / "runs"

    def tested(run):
        return json.loads((runs / run / "metadata.json").read_text())["metrics"]["test"]["accuracy"]

    # The results are the runs' (the committed notebook shows what the full-length runs reach).
    assert results["vgg_source_accuracy"] == pytest.approx(tested("vgg-source"))
    assert results["resnet_source_accuracy"] == pytest.approx(tested("resnet-source"))
    assert results["fine_tuned_accuracy"] == pytest.approx(tested("fine-tuned"))
    assert results["scratch_accuracy"] == pytest.approx(tested("from-scratch"))
    assert results["vgg_source_accuracy"] > 0.6  # the source task is learned in four epochs
    # Features of the pre-trained backbones find images of the same new class above chance
    # (0.2): the search reads a trained layer. (Whether fine-tuning beats training from
    # scratch on the target task takes the notebook's 30 epochs: not tested here.)
    for name in ("vgg", "resnet"):
        assert results[f"{name}_search_precision"] > 0.4
    scratch = json.loads((tmp_path / "runs" / "from-scratch" / "metadata.json").read_text())
    assert scratch["config"]["bn_momentum"] == 0.9
    assert {path.name for path in (tmp_path / "runs").iterdir()} >= {"vgg-source", "resnet-source", "fine-tuned", "from-scratch"}
    metadata = json.loads((tmp_path / "runs" / "fine-tuned" / "metadata.json").read_text())
    assert metadata["fine_tuning"]["head_epochs"] == FAST[NAMES[1]]["HEAD_EPOCHS"]
    assert metadata["fine_tuning"]["unfreeze"] == ["conv4"]
    # Section 4: ImageNet weights (a local stand-in file, served and hash-checked as the
    # published one) bring their normalization into the fine-tuned run.
    imagenet = json.loads((pathlib.Path(results["imagenet_run"]) / "metadata.json").read_text())
    assert results["imagenet_weights"] == imagenet["fine_tuning"]["weights"]["name"] == "resnet18.tv_in1k"
    assert imagenet["preprocessing"]["normalization"] == "none"
    assert imagenet["fine_tuning"]["weights"]["preprocessing"]["mode"] == "torch"


def test_03_hyperparameter_tuning(tmp_path):
    notebook, results = run_fast(NAMES[2], tmp_path)
    with open(pathlib.Path(results["project_dir"]) / "trials.csv", newline="") as file:
        trials = list(csv.DictReader(file))
    assert len(trials) == FAST[NAMES[2]]["MAX_TRIALS"]
    scores = {row["trial"]: float(row["score"]) for row in trials if row["status"] == "COMPLETED"}
    accuracies = {row["trial"]: float(row["val_accuracy"]) for row in trials if row["status"] == "COMPLETED"}
    # The best trial is the finish's best-ranked of the two trials it retrained and tested
    # (rank 1, unless the reference, ranked with them, is what best/ holds).
    assert scores[results["best_trial"]] == pytest.approx(results["best_score"])
    assert sorted(results["retrained"]) == sorted(scores)
    ranks = [run["rank"] for run in results["retrained"].values()]
    assert results["retrained"][results["best_trial"]]["rank"] == min(ranks) and sorted(ranks) in ([1, 2], [1, 3], [2, 3])
    retrained = {row["trial"]: float(row["retrained_test_accuracy"]) for row in trials if row["retrained_rank"]}
    assert retrained == pytest.approx({name: run["test"] for name, run in results["retrained"].items()})
    assert list(results["references"]) == ["lenet5"] and 0 <= results["references"]["lenet5"] <= 1
    assert results["trial_scores"] == pytest.approx(scores) and results["trial_accuracies"] == pytest.approx(accuracies)
    # The score charges the cost above the cheapest reference's MACs (LeNet-5's 416,520).
    assert results["target_macs"] == 416_520
    assert results["best_metric"] == pytest.approx(accuracies[results["best_trial"]])
    best_row = next(row for row in trials if row["trial"] == results["best_trial"])
    assert int(best_row["macs"]) == results["best_macs"] and int(best_row["params"]) == results["best_params"]
    # The best model's test accuracy is the saved best run's, evaluated afresh.
    from kcnn import train

    best_run = pathlib.Path(results["project_dir"]) / "best"
    assert results["test_accuracy"] == pytest.approx(train.evaluate(best_run)["accuracy"])
    assert any("image/png" in o.get("data", {}) for o in outputs(notebook)), "the Pareto plot is shown"


def test_04_segmentation(tmp_path):
    notebook, results = run_fast(NAMES[3], tmp_path)
    assert results["classes"] == ["background", "circle", "square", "triangle"]
    assert sum(results["pixel_shares"]) == pytest.approx(1.0)
    assert list(results["runs"]) == ["fcn32s", "fcn8s", "unet"]
    for name, run in results["runs"].items():
        assert 0 <= run["mean_iou"] <= 1 and 0 <= run["boundary_accuracy"] <= 1 and len(run["class_iou"]) == 4
        metadata = json.loads((tmp_path / "runs" / name / "metadata.json").read_text())
        assert metadata["status"] == "completed" and metadata["task"] == "segmentation"
        assert metadata["metrics"]["test"]["mean_iou"] == pytest.approx(run["mean_iou"])
    assert [run["model"] for run in results["runs"].values()] == ["fcn32s", "fcn8s", "unet"]  # kcnn's own builders
    assert results["runs"]["unet"]["params"] == 62_124
    assert list(results["pyramids"]) == FAST[NAMES[3]]["PYRAMIDS"]
    assert results["pyramids"]["resnet18"]["P5"] == [7, 7, 512]  # 224x224, its default size, at stride 32
    assert len([o for o in outputs(notebook) if "image/png" in o.get("data", {})]) >= 4
