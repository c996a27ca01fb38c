"""`kcnn train`, `kcnn evaluate`, `kcnn predict`, `kcnn finetune`, in process."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from kcnn import data, train
from kcnn.cli import build_parser, main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of LeNet-5 on the digits, through the command line."""
    output = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "lenet5", "--epochs", "1", "--lr", "0.01", "--augment", "none", "--output", str(output), "--verbose", "0"])
    assert code == 0
    return output


def test_train_writes_the_documented_files(trained, capsys):
    names = {p.name for p in trained.iterdir()}
    assert {"model.keras", "metadata.json", "history.csv", "curves.png"} <= names
    metadata = json.loads((trained / "metadata.json").read_text())
    assert metadata["status"] == "completed"
    assert metadata["model"]["builder_arguments"] == {"input_shape": [32, 32, 1], "classes": 10}
    assert metadata["dataset"]["name"] == "digits"
    # Flags map onto TrainConfig fields; the others keep their defaults.
    expected = dataclasses.replace(train.TrainConfig(), epochs=1, learning_rate=0.01, augment=None)
    assert metadata["config"] == expected.to_dict()


def test_train_prints_test_accuracy_and_folder(tmp_path, capsys):
    output = tmp_path / "run"
    arrays = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(arrays, x=rng.integers(0, 256, (40, 16, 16, 1), dtype=np.uint8), y=np.arange(40) % 2)
    code = main(["train", "convnet", "--dataset", str(arrays), "--model-arg", "filters=(4,)", "--model-arg", "dense_units=()",
                 "--epochs", "1", "--batch-size", "8", "--output", str(output), "--verbose", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"run folder: {output}" in out and "test accuracy:" in out and f"model saved to {output}" in out


def test_predict_prints_the_class_of_a_digit_image(trained, tmp_path, capsys):
    digits = data.load("digits", batch_size=512)
    images, labels = data.as_numpy(digits.test)
    probabilities = train.load(trained)[0].predict(images, verbose=0)
    index = int(np.flatnonzero(probabilities.argmax(1) == labels)[0])  # one the model gets right
    path = tmp_path / "digit.png"
    Image.fromarray((images[index, ..., 0] * 255).round().astype(np.uint8), mode="L").save(path)
    assert main(["predict", str(trained), str(path), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}: {labels[index]} (") and line.count("%") == 2


def test_evaluate_prints_accuracy(trained, capsys):
    assert main(["evaluate", str(trained)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((trained / "metadata.json").read_text())["metrics"]["test"]
    assert out.startswith(f"test accuracy: {metrics['accuracy']:.2%}") and "(359 images)" in out


def test_finetune_replaces_the_head(trained, tmp_path, capsys):
    arrays = tmp_path / "three.npz"
    rng = np.random.default_rng(1)
    np.savez(arrays, x=rng.integers(0, 256, (48, 32, 32, 1), dtype=np.uint8), y=np.arange(48) % 3)
    output = tmp_path / "tuned"
    code = main(["finetune", str(trained), "--dataset", str(arrays), "--epochs", "2", "--batch-size", "16", "--output", str(output), "--verbose", "0"])
    assert code == 0, capsys.readouterr().err
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["kind"] == "fine_tune" and metadata["fine_tuning"]["unfreeze"] == ["conv5"]
    assert metadata["model"]["classes"] == 3 and len(metadata["class_names"]) == 3


def test_every_config_field_has_a_flag():
    parser = build_parser()
    for field in dataclasses.fields(train.TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in parser._subparsers._group_actions[0].choices["train"]._option_string_actions


def test_bad_flags_are_reported(capsys):
    assert main(["train", "--epochs", "0"]) == 2
    assert "Received: epochs=0" in capsys.readouterr().err
    assert main(["train", "--model-arg", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--optimizer", "rmsprop"])


def test_diverging_training_exits_with_a_message(tmp_path, capsys):
    code = main(["train", "--epochs", "1", "--optimizer", "sgd", "--lr", "1e30", "--warmup-epochs", "0", "--augment", "none",
                 "--output", str(tmp_path / "run"), "--verbose", "0"])
    assert code == 1
    assert "Training diverged" in capsys.readouterr().err


def test_data_dir_and_download_reach_the_tfds_loader(tmp_path, capsys):
    # An unprepared TFDS dataset in an empty data_dir: the loader is asked with the
    # flags' values and says how to get the data.
    from kcnn.cli import main

    code = main(["train", "lenet5", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--output", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "download=True" in err and str(tmp_path) in err


def test_steps_per_execution_flag_takes_a_number_or_auto():
    from kcnn.cli.train import _config

    parser = build_parser()
    for text, value in (("auto", "auto"), ("4", 4)):
        args = parser.parse_args(["train", "--steps-per-execution", text])
        assert _config(args).steps_per_execution == value
    assert main(["train", "--steps-per-execution", "often"]) == 2
