"""What travels with pretrained weights: their preprocessing, the ImageNet labels, and
fine-tuning from them (`kcnn fine-tune resnet18 --weights imagenet ...`), offline on a
locally made weight file served through a file:// URL."""

import dataclasses
import hashlib
import json
import pathlib

import keras
import numpy as np
import pytest
from fixtures import torch_weights
from PIL import Image
from safetensors.numpy import save_file

import kcnn
from kcnn.cli import main
from kcnn.layers import ImageNormalization
from kcnn.weights import decode_predictions, imagenet_classes, preprocess, store, table

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"


def test_preprocess_is_keras_applications_preprocess_input_for_each_mode(rng):
    images = rng.uniform(0, 255, size=(2, 5, 4, 3)).astype("float32")
    caffe = keras.applications.resnet.preprocess_input(images.copy())
    torch = keras.applications.imagenet_utils.preprocess_input(images.copy(), mode="torch")
    np.testing.assert_allclose(preprocess(images, "resnet50.keras_in1k"), caffe, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(preprocess(images, "resnet50.tv2_in1k"), torch, rtol=1e-6, atol=1e-5)
    for name in ("vgg16.keras_in1k", "vgg16_bn.tv_in1k"):
        layer = kcnn.weights.preprocessing_layer(name)
        np.testing.assert_allclose(np.asarray(layer(images)), preprocess(images, name), rtol=1e-6, atol=1e-4)
        assert ImageNormalization.from_config(layer.get_config()).get_config() == layer.get_config()
    # Resized as evaluated: short side to 256 (224 / 0.875), center crop 224.
    tall = [rng.uniform(0, 255, size=(300, 200, 3))]
    assert preprocess(tall, "resnet18.tv_in1k", resize=True).shape == (1, 224, 224, 3)
    with pytest.raises(ValueError, match=r"Unknown weight set.*Received: 'resnet50.tv9_in1k'"):
        preprocess(images, "resnet50.tv9_in1k")


def test_imagenet_labels_and_decode_predictions():
    names = imagenet_classes()
    assert len(names) == 1000 and names[:3] == ["tench", "goldfish", "great white shark"] and names[999] == "toilet tissue"
    wnids = kcnn.weights.imagenet_wnids()
    assert wnids == sorted(wnids) and wnids[0] == "n01440764" and len(set(wnids)) == 1000
    scores = np.zeros((2, 1000), np.float32)
    scores[0, [1, 2]] = [0.7, 0.2]
    scores[1, 999] = 1.0
    decoded = decode_predictions(scores, top=2)
    assert decoded[0] == [("n01443537", "goldfish", pytest.approx(0.7)), ("n01484850", "great white shark", pytest.approx(0.2))]
    assert decoded[1][0] == ("n15075141", "toilet tissue", 1.0)
    with pytest.raises(ValueError, match=r"shape \(N, 1000\)\. Received: shape \(2, 10\)"):
        decode_predictions(np.zeros((2, 10)))


@pytest.fixture
def resnet18_weights(tmp_path, monkeypatch):
    """resnet18.tv_in1k served from a local file of seeded random weights, with an
    empty cache in KCNN_HOME."""
    manifest = json.loads((FIXTURES / "torch_manifests.json").read_text())["resnet18"]
    path = tmp_path / "model.safetensors"
    save_file(torch_weights.random_tensors(manifest, seed=3), path)
    row = table.get_weight_set("resnet18.tv_in1k")
    local = dataclasses.replace(row, url=path.as_uri(), hash="sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setattr(table, "WEIGHTS", tuple(local if each is row else each for each in table.WEIGHTS))
    monkeypatch.setenv("KCNN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KCNN_OFFLINE", raising=False)
    return path


def test_fine_tuning_from_imagenet_weights_normalizes_as_they_expect(resnet18_weights, tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "pets"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(folder / label / f"{i}.png")
    output = tmp_path / "run"
    # As the README writes it: the builder takes variant="v1.5" from the weights.
    argv = ["finetune", "resnet18", "--weights", "imagenet", "--data", str(folder),
            "--image-size", "32", "--epochs", "1", "--batch-size", "6", "--verbose", "0", "--output", str(output)]
    assert main(argv) == 0, capsys.readouterr().err
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["preprocessing"]["normalization"] == "none"
    weights = metadata["fine_tuning"]["weights"]
    assert weights["name"] == "resnet18.tv_in1k" and weights["preprocessing"]["mode"] == "torch"
    assert (store.cache_dir() / "resnet18.tv_in1k.safetensors").read_bytes() == resnet18_weights.read_bytes()

    model, _ = kcnn.train.load(output)
    layer = model.get_layer("image_normalization")
    assert layer.get_config()["mode"] == "torch" and layer.get_config()["mean"] == [0.485, 0.456, 0.406]
    # The frozen part of the backbone is the pretrained one, BatchNorm statistics included.
    pretrained = kcnn.resnet18(variant="v1.5", include_top=False, input_shape=(32, 32, 3), weights=resnet18_weights)
    for name in ("conv1_conv", "conv3_block2_2_conv", "conv4_block1_0_bn"):
        for mine, theirs in zip(model.get_layer(name).get_weights(), pretrained.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, theirs)
    # `kcnn predict` feeds the saved model 0..255 images, which it normalizes as the
    # weights expect: the backbone sees `preprocess(images)`.
    images = sorted((folder / "cat").glob("*.png"))[:2]
    predicted = kcnn.train.predict(output, images, top_k=2)
    assert len(predicted) == 2 and {name for name, _ in predicted[0]} == {"cat", "dog"}
    raw = kcnn.data.preprocess_images([kcnn.data.load_image(p) for p in images], metadata["preprocessing"])
    assert raw.max() > 100  # 0..255
    features = keras.Model(model.inputs[0], model.get_layer("conv5_block2_out").output)
    np.testing.assert_allclose(
        np.asarray(features(raw)), np.asarray(pretrained(preprocess(raw, "resnet18.tv_in1k"))), rtol=1e-4, atol=1e-4
    )


def test_a_weights_file_keeps_the_normalization_of_its_table_row(resnet18_weights, tmp_path, caplog):
    """By hash, by the row's file name, or declared; otherwise a warning names what
    fine-tuning will feed the model (issue 26: a path used to lose it silently)."""
    kwargs = dict(include_top=False, input_shape=(32, 32, 3))
    # By hash (the fixture's row carries the file's sha256): the builder also takes the
    # arguments the weights need (v1.5: no convolution biases), as with weights="imagenet".
    by_hash = kcnn.resnet18(weights=resnet18_weights, **kwargs)
    assert kcnn.weights.weight_set_of(by_hash).name == "resnet18.tv_in1k"
    assert len(by_hash.get_layer("conv1_conv").weights) == 1
    images = np.full((1, 32, 32, 3), 255.0, np.float32)
    np.testing.assert_allclose(preprocess(images, by_hash)[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-6)
    # By name: other bytes saved under the name kcnn's cache gives a row (how a set
    # without a recorded hash is loaded): that row, with a warning that it is not the
    # published file when the row has a hash.
    manifest = json.loads((FIXTURES / "torch_manifests.json").read_text())["resnet18"]
    other = tmp_path / "resnet18.a1_in1k.safetensors"
    save_file(torch_weights.random_tensors(manifest, seed=4), other)
    with caplog.at_level("WARNING", logger="kcnn"):
        by_name = kcnn.resnet18(weights=other, **kwargs)
    assert kcnn.weights.weight_set_of(by_name).name == "resnet18.a1_in1k"
    assert "not the published file: its hash differs" in caplog.text
    # Unknown: loaded, nothing attached, and the warning says what fine-tuning will do.
    caplog.clear()
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(other.read_bytes())
    with caplog.at_level("WARNING", logger="kcnn"):
        unknown = kcnn.resnet18(variant="v1.5", weights=mine, **kwargs)
    assert kcnn.weights.weight_set_of(unknown) is None
    assert "mine.safetensors is no weight set of the table" in caplog.text and "x / 255, normalization 'unit'" in caplog.text
    # Declared.
    kcnn.weights.load_weights(unknown, mine, weight_set="resnet18.tv_in1k")
    assert kcnn.weights.weight_set_of(unknown).preprocessing.mode == "torch"
