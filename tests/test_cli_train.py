"""`kcnn train`, `kcnn evaluate`, `kcnn predict`, `kcnn finetune`, in process."""

import dataclasses
import json
import warnings

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
    code = main(["train", "convnet", "--data", str(arrays), "--model-kwargs", "filters=(4,)", "--model-kwargs", "hidden_units=()",
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


def test_predict_warns_in_one_line_about_an_inverted_image(trained, tmp_path, capsys):
    raw, _ = data.as_numpy(data.load("digits", normalize=False).test)
    path = tmp_path / "black-on-white.png"
    Image.fromarray(255 - raw[0, ..., 0].astype(np.uint8), mode="L").save(path)
    with pytest.warns(UserWarning, match="looks inverted") as caught:
        assert main(["predict", str(trained), str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ")  # predicted all the same
    # Shown as one line, without the warning's class and place in kcnn's code.
    shown = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    assert shown.startswith(f"kcnn: warning: {path} looks inverted") and "UserWarning" not in shown


def test_evaluate_prints_accuracy(trained, capsys):
    assert main(["evaluate", str(trained)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((trained / "metadata.json").read_text())["metrics"]["test"]
    assert out.startswith(f"test accuracy: {metrics['accuracy']:.2%}") and "(359 images)" in out
    # The run trained with label smoothing 0.1: both losses, named apart.
    assert f"loss {metrics['loss']:.4f} (label-smoothed, as in training), cross-entropy {metrics['crossentropy']:.4f}" in out
    assert metrics["loss"] > metrics["crossentropy"]
    # In bfloat16 (float32 is what "auto" picks for LeNet-5): the same images, within rounding.
    assert main(["evaluate", str(trained), "--mixed-precision", "mixed_bfloat16"]) == 0
    rounded = capsys.readouterr().out
    accuracy = float(rounded.split("test accuracy: ")[1].split("%")[0]) / 100
    assert abs(accuracy - metrics["accuracy"]) <= 2 / 359 and "(359 images)" in rounded


def test_finetune_replaces_the_head(trained, tmp_path, capsys):
    arrays = tmp_path / "three.npz"
    rng = np.random.default_rng(1)
    np.savez(arrays, x=rng.integers(0, 256, (48, 32, 32, 1), dtype=np.uint8), y=np.arange(48) % 3)
    output = tmp_path / "tuned"
    code = main(["finetune", str(trained), "--data", str(arrays), "--epochs", "2", "--batch-size", "16", "--output", str(output), "--verbose", "0"])
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
    assert main(["train", "--model-kwargs", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    # A builder's TypeError for a keyword it does not take is reported like a ValueError.
    assert main(["train", "convnet", "--model-kwargs", "dense_units=(8,)", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "`dense_units` is now `hidden_units`" in err and "Traceback" not in err
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

    code = main(["train", "lenet5", "--data", "mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--output", str(tmp_path / "run")])
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


def test_no_run_folder_is_announced_when_loading_fails(tmp_path, capsys):
    output = tmp_path / "run"
    code = main(["train", "--data", "mnist", "--data-dir", str(tmp_path), "--epochs", "1", "--output", str(output)])
    assert code == 2
    assert "run folder:" not in capsys.readouterr().out
    assert not output.exists()


def test_interrupting_before_training_says_there_is_nothing_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load", interrupted)
    assert main(["train", "--epochs", "1", "--output", str(tmp_path / "run")]) == 130
    captured = capsys.readouterr()
    assert "run folder:" not in captured.out
    assert "interrupted: before training began, nothing to resume" in captured.err


def test_a_worker_that_is_not_the_chief_says_the_chief_saves_the_model(tmp_path, capsys, monkeypatch):
    import types

    from kcnn.train import distribute

    # Worker 1 of a two-worker cluster (the strategy stands in: no cluster runs here).
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}))
    resolver = types.SimpleNamespace(
        task_type="worker", task_id=1, cluster_spec=lambda: types.SimpleNamespace(as_dict=lambda: {"worker": ["a:1", "b:2"]})
    )
    monkeypatch.setattr(distribute, "multi_worker_strategy", lambda: types.SimpleNamespace(cluster_resolver=resolver))
    monkeypatch.setattr(train, "fit", lambda *args, **kwargs: types.SimpleNamespace(path=kwargs["output"], metrics={}))
    assert main(["train", "--epochs", "1", "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "saved to" not in out
    assert out.splitlines()[-1] == f"this worker's part is done; the chief saves the model to {tmp_path / 'run'}"


def test_predict_takes_a_folder_of_images(trained, tmp_path, capsys):
    for name in ("b.png", "a.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="Not read under .*notes.txt"):
        assert main(["predict", str(trained), str(tmp_path), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]


def test_predict_names_what_it_cannot_read_and_predicts_the_rest(trained, tmp_path, capsys):
    """Issue 27: one unreadable image stopped a whole `kcnn predict`, and .tif and .webp
    files in a folder were skipped without a word."""
    from kcnn import train

    for name in ("c.png", "b.webp", "a.tif"):  # Pillow reads all three (TensorFlow no TIFF).
        Image.fromarray(np.full((8, 8), 200, np.uint8), mode="L").save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning) as record:
        assert main(["predict", str(trained), str(tmp_path), "--top-k", "1"]) == 1
    captured = capsys.readouterr()
    assert [line.split(": ")[0] for line in captured.out.splitlines()] == [str(tmp_path / n) for n in ("a.tif", "b.webp", "c.png")]
    assert "kcnn: 1 of 4 image(s) could not be read" in captured.err
    messages = [str(w.message) for w in record]
    assert any(f"Could not read an image from {str(tmp_path / 'broken.png')!r}" in m and "not predicted" in m for m in messages)
    assert any(f"Not read under {str(tmp_path)!r}: 1 file(s) without an image extension" in m and "notes.txt" in m for m in messages)
    # From Python the unreadable file raises by default, and keeps its place as None when skipped.
    with pytest.raises(ValueError, match="broken.png"):
        train.predict(trained, [tmp_path / "a.tif", tmp_path / "broken.png"])
    with pytest.warns(UserWarning, match="broken.png"):
        top = train.predict(trained, [tmp_path / "broken.png", tmp_path / "a.tif"], top_k=1, skip_unreadable=True)
    assert top[0] is None and len(top[1]) == 1
    with pytest.warns(UserWarning, match="broken.png"):
        assert train.predict(trained, [tmp_path / "broken.png"], skip_unreadable=True) == [None]


def test_lenet5_trains_on_28x28_arrays_at_its_own_32x32(tmp_path, capsys):
    arrays = tmp_path / "mnist_like.npz"
    rng = np.random.default_rng(2)
    np.savez(arrays, x=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), y=np.arange(40) % 2)
    output = tmp_path / "run"
    code = main(["train", "lenet5", "--data", str(arrays), "--epochs", "1", "--batch-size", "8", "--output", str(output), "--verbose", "0"])
    assert code == 0, capsys.readouterr().err
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["model"]["builder_arguments"]["input_shape"] == [32, 32, 1]


class _Stop(Exception):
    """Raised instead of training: the model and data are built, nothing trains."""


@pytest.fixture
def built(monkeypatch):
    """`kcnn train` / `fine-tune` stop where training would start; the model and data
    they would train are recorded."""
    from kcnn.train import driver, transfer

    seen = {}

    def record(run, metadata, model, data, phases, **kwargs):
        seen.update(model=model, data=data)
        raise _Stop

    monkeypatch.setattr(driver, "train_phases", record)
    monkeypatch.setattr(transfer, "train_phases", record)
    return seen


@pytest.fixture
def npz16(tmp_path):
    path = tmp_path / "sixteen.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (30, 16, 16, 1), dtype=np.uint8), y=np.arange(30) % 3)
    return str(path)


def test_image_size_and_channels_flags_set_the_model_input(built, npz16, tmp_path):
    with pytest.raises(_Stop):
        main(["train", "convnet", "--data", npz16, "--image-size", "24x20", "--channels", "3", "--output", str(tmp_path / "r")])
    assert built["data"].input_shape == (24, 20, 3)
    assert built["model"].input_shape == (None, 24, 20, 3)


def test_a_model_whose_top_flattens_gets_its_own_size(built, npz16, tmp_path):
    with pytest.raises(_Stop):
        main(["train", "mlp", "--data", npz16, "--output", str(tmp_path / "r")])
    assert built["model"].input_shape == (None, 32, 32, 1)  # mlp's own 32x32, the source's one channel


def test_other_models_take_the_source_size_or_their_own_for_folders(built, tmp_path):
    arrays = tmp_path / "forty.npz"
    np.savez(arrays, x=np.zeros((12, 40, 40, 3), np.uint8), y=np.arange(12) % 2)
    with pytest.raises(_Stop):
        main(["train", "resnet18", "--data", str(arrays), "--output", str(tmp_path / "r1")])
    assert built["model"].input_shape == (None, 40, 40, 3)
    for label in ("a", "b"):
        for i in range(3):
            (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((50, 60), np.uint8), mode="L").save(tmp_path / "folder" / label / f"{i}.png")
    with pytest.raises(_Stop):
        main(["train", "resnet18", "--data", str(tmp_path / "folder"), "--output", str(tmp_path / "r2")])
    assert built["model"].input_shape == (None, 224, 224, 1)


def test_lenet5_on_a_folder_with_a_stray_photo(built, tmp_path):
    # One 640x480 photo among 28x28 digits: warned about, and LeNet-5 stays LeNet-5.
    for label in ("3", "7"):
        for i in range(3):
            (tmp_path / "digits" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((28, 28), np.uint8), mode="L").save(tmp_path / "digits" / label / f"{i}.png")
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(tmp_path / "digits" / "7" / "photo.jpg")
    with (
        pytest.warns(UserWarning, match=r"differ in size: 2 sizes .*: 28x28 \(6\), 480x640 \(1\)\. All are resized to 32x32"),
        pytest.raises(_Stop),
    ):
        main(["train", "lenet5", "--data", str(tmp_path / "digits"), "--output", str(tmp_path / "r")])
    assert built["model"].input_shape == (None, 32, 32, 3)
    assert built["model"].count_params() < 70_000


def test_fine_tune_refuses_a_size_its_model_does_not_take(trained, npz16, tmp_path, capsys):
    code = main(["fine-tune", str(trained), "--data", npz16, "--image-size", "16", "--output", str(tmp_path / "r")])
    assert code == 2
    assert "contradicts the model: the model takes 32x32 images. Received: image_size=(16, 16)" in capsys.readouterr().err


def test_fine_tune_data_flags_reach_the_loader(built, trained, npz16, tmp_path):
    with pytest.raises(_Stop):
        main(["fine-tune", str(trained), "--data", npz16, "--channels", "1", "--output", str(tmp_path / "r")])
    assert built["data"].input_shape == (32, 32, 1)


def test_data_options_are_for_data_loaded_by_name():
    with pytest.raises(ValueError, match=r"a kcnn.data.Dataset is loaded already .*Received: data_options=\{'download': True\}"):
        train.fit("lenet5", data.load("digits"), data_options={"download": True})


def test_image_size_flag_parsing(capsys):
    parser = build_parser()
    assert parser.parse_args(["train", "--image-size", "28"]).data_image_size == 28
    assert parser.parse_args(["train", "--image-size", "224x160"]).data_image_size == (224, 160)
    for bad in ("0", "axb", "3x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--image-size", bad])
        assert f"expected N or HxW with positive sizes, e.g. 32 or 224x224. Received: {bad!r}" in capsys.readouterr().err


def test_model_args_take_shell_style_booleans():
    from kcnn.cli._flags import literal

    assert [literal(text) for text in ("true", "False", "NONE", "True", "(1, 2)", "small", "3e-3")] == [
        True, False, None, True, (1, 2), "small", 3e-3
    ]
