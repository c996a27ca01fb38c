"""kcnn.export: every format gives the Keras model's probabilities on the same raw
images (through kcnn.train.predict's preprocessing), refuses what it cannot hold by
naming the layer, and never leaves half a file at the output path."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn
from kcnn import data as kdata
from kcnn import train
from kcnn.cli import main
from kcnn.export import export, metadata_path
from kcnn.serving import load_exported
from kcnn.train.driver import save_run

# One small run folder per family, covering every kcnn layer and normalization:
# LeNet-5 (paper: Subsampling2D, ConnectionTableConv2D, EuclideanRBF, lecun_tanh),
# ResNet-18 (FusedBatchNormalization, additions, projection shortcuts), GoogLeNet
# (LocalResponseNormalization, concatenations). The registry's models with arguments
# that keep their layer kinds and shrink the rest, as the converters' time grows with
# layers and weights: ResNet-18 at width 8 (0.2M parameters instead of 11M), GoogLeNet's
# stem with two inception modules and the max pool between them instead of nine
# modules. (registry name, builder arguments, image shape, normalization)
FAMILIES = {
    "lenet5": ("lenet5", dict(variant="paper", classes=3), (32, 32, 1), "symmetric"),
    "resnet18": ("resnet18", dict(include_top=False, pooling="avg", stem="small", width=8), (16, 16, 3), "standardize"),
    "googlenet": (
        "googlenet",
        dict(include_top=False, pooling="avg", stages=(((8, 8, 8, 4, 4, 4),), ((8, 8, 8, 4, 4, 4),))),
        (32, 32, 3),
        "unit",
    ),
}
# Tolerances on probabilities: float32 formats, and LiteRT with float16 weights.
TOLERANCE = {None: 1e-4, "float16": 1e-2}


def _randomize_batch_norm(model, rng):
    """Moving statistics and scales away from their initial values, so that inference
    mode's normalization is tested, not an identity."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.normal(0, 0.2, channels))
            layer.moving_mean.assign(rng.normal(0, 0.2, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))


def _spread_predictions(model, images, rng):
    """A classifier whose logits vary by about one from image to image: random weights
    on the pooled features standardized over `images`. A randomly initialised network's
    features barely differ between images, so its probabilities sit near 1/3 whatever
    the input (GoogLeNet's within 2e-4 of each other), which any tolerance would pass.
    LeNet-5's RBF classifier already spreads them."""
    head = model.get_layer("predictions")
    if not isinstance(head, keras.layers.Dense):
        return
    features = keras.Model(model.inputs, head.input).predict(images, verbose=0)
    mean, std = features.mean(axis=0), features.std(axis=0)
    std += 0.1 * std.mean()  # Channels constant over the images (dead ReLUs) stay small.
    weights = rng.normal(0, 1 / np.sqrt(features.shape[1]), head.kernel.shape)
    head.kernel.assign(weights / std[:, None])
    head.bias.assign(-(mean / std) @ weights)


def make_run(family, folder):
    """A run folder of the family's model (random weights, a classifier whose
    probabilities depend on the image) on random images."""
    name, arguments, shape, normalization = FAMILIES[family]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(30, *shape), dtype=np.uint8)
    np.savez(folder / "images.npz", x=x, y=np.arange(30) % 3)
    dataset = kdata.load(str(folder / "images.npz"), batch_size=8, seed=1, normalize=normalization)
    # The same weights whatever ran before in this process (LeNet-5's float16 export
    # parted from Keras by 0.016 with some of the unseeded draws).
    keras.utils.set_random_seed(0)
    model = kcnn.create_model(name, input_shape=shape, **arguments)
    if not arguments.get("classes"):
        model = train.replace_head(model, 3)
    _randomize_batch_norm(model, rng)
    _spread_predictions(model, kdata.preprocess_images(x, dataset.preprocessing), rng)
    save_run(model, dataset, train.TrainConfig(epochs=1, batch_size=8, augment=None), folder / "run")
    return folder / "run", shape


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_run(request, tmp_path_factory):
    return make_run(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    return make_run("lenet5", tmp_path_factory.mktemp("lenet5"))


def raw_images(shape, rng):
    """Raw uint8 images a user might pass: at the model's size, at twice its size, grey
    or RGB where the model takes the other, RGBA."""
    height, width, channels = shape
    other = 3 if channels == 1 else 1
    return [
        rng.integers(0, 256, (height, width, channels), dtype=np.uint8),
        rng.integers(0, 256, (height, width, channels), dtype=np.uint8),
        rng.integers(0, 256, (2 * height, 2 * width, channels), dtype=np.uint8),
        rng.integers(0, 256, (height, width, other), dtype=np.uint8),
        rng.integers(0, 256, (height, width, 4), dtype=np.uint8),
    ]


def predicted(run, images):
    """kcnn.train.predict's float32 probabilities, as an (N, classes) array in class
    order ("auto" would compute ResNet-18 at 224x224 in bfloat16 on a CPU with bfloat16
    units; the exports are float32)."""
    _, metadata = train.load(run)
    names = metadata["class_names"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # images of another size or shape than the training ones
        ranked = train.predict(run, images, top_k=len(names), mixed_precision="off")
    return np.array([[dict(row)[name] for name in names] for row in ranked])


@pytest.mark.parametrize(
    "output, quantize", [("saved", None), ("model.onnx", None), ("model.tflite", None), ("model.tflite", "float16")]
)
def test_exported_model_gives_the_keras_probabilities(family_run, output, quantize, tmp_path):
    run, shape = family_run
    images = raw_images(shape, np.random.default_rng(1))
    expected = predicted(run, images)
    assert np.ptp(expected, axis=0).max() > 10 * TOLERANCE["float16"]  # Probabilities that depend on the image.
    result = export(run, tmp_path / output, quantize=quantize)
    got = load_exported(result.path)(images)
    assert got.shape == expected.shape
    at_model_size = [0, 1, 3, 4]
    np.testing.assert_allclose(got[at_model_size], expected[at_model_size], atol=TOLERANCE[quantize], rtol=0)
    # Resized (images[2], twice the size), a pixel halfway between two grey levels may round
    # the other way in the ONNX and LiteRT exports' portable resize (kcnn.serving.
    # RawImagePreprocessing): one grey level, up to ~2e-4 on these randomly initialised models.
    resized_tolerance = TOLERANCE[quantize] if output == "saved" else max(TOLERANCE[quantize], 1e-3)
    np.testing.assert_allclose(got[2], expected[2], atol=resized_tolerance, rtol=0)
    # One batch of same-size images gives the same as one image at a time.
    np.testing.assert_allclose(load_exported(result.path)(np.stack(images[:2])), got[:2], atol=1e-5, rtol=0)


def test_saved_model_resizes_exactly_as_predict_at_any_size(family_run, tmp_path):
    # The SavedModel runs TensorFlow's own resize, as predict does: any size gives its probabilities.
    run, shape = family_run
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (h, w, shape[2]), dtype=np.uint8) for h, w in ((23, 40), (45, 17), (7, 9))]
    export(run, tmp_path / "saved")
    np.testing.assert_allclose(load_exported(tmp_path / "saved")(images), predicted(run, images), atol=TOLERANCE[None], rtol=0)


def test_class_names_and_preprocessing_travel_beside_the_export(lenet_run, tmp_path):
    run, _ = lenet_run
    _, metadata = train.load(run)
    result = export(run, tmp_path / "model.onnx")
    assert result.format == "onnx" and result.quantize is None and result.accuracy is None  # format from the suffix
    assert result.metadata_path == metadata_path(tmp_path / "model.onnx") == tmp_path / "model.onnx.json"
    sidecar = json.loads(result.metadata_path.read_text())
    assert sidecar == json.loads(json.dumps(result.metadata))
    assert sidecar["class_names"] == metadata["class_names"] == ["0", "1", "2"]
    assert sidecar["preprocessing"] == metadata["preprocessing"]
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["output"]["shape"] == [None, 3]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]


def test_load_exported_refuses_what_the_graph_does_not_define(lenet_run, tmp_path):
    """Another channel count, an empty batch, one HWC image passed bare: a ValueError
    that says what was expected, in every format (the runtimes read 5 channels as 3
    silently, fail on 2 and on an empty batch with errors of their own, and read a bare
    HWC image as H grey images)."""
    run, _ = lenet_run
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (2, 20, 20), dtype=np.uint8)
    refused = [
        (image, r"a 3-D array is read as NHW .* looks like channels\. Pass one image as `image\[None\]` or `\[image\]`, "
         r"or N grey images as `images\[\.\.\., None\]`\. Received: images of shape \(20, 20, 3\)"),
        (np.zeros((2, 20, 20, 5), np.uint8), r"1 \(grey\), 3 \(RGB\) or 4 \(RGBA\) channels.* Received: images of shape \(2, 20, 20, 5\), 5 channels"),
        (np.zeros((2, 20, 20, 2), np.uint8), r"Received: images of shape \(2, 20, 20, 2\), 2 channels"),
        ([image, np.zeros((20, 20, 2), np.uint8)], r"Received: images\[1\] of shape \(20, 20, 2\), 2 channels"),
        (np.zeros((0, 20, 20, 3), np.uint8), r"at least one image of at least 1x1 pixels\. Received: images of shape \(0, 20, 20, 3\)"),
        (np.zeros((1, 0, 20, 3), np.uint8), r"Received: images of shape \(1, 0, 20, 3\)"),
        ([], r"Expected at least one image\. Received: images=\[\]"),
        (image[None].astype(np.float32), r"Expected uint8 images: .* Received: images of dtype float32 and shape \(1, 20, 20, 3\)"),
    ]
    for output in ("saved", "model.onnx", "model.tflite"):
        predict = load_exported(export(run, tmp_path / output).path)
        one = predict([image])
        assert one.shape == (1, 3)
        np.testing.assert_allclose(predict(image[None]), one, atol=1e-6, rtol=0)
        np.testing.assert_allclose(predict(grey), predict(grey[..., None]), atol=1e-6, rtol=0)  # NHW: grey images
        for images, message in refused:
            with pytest.raises(ValueError, match=message):
                predict(images)


# --------------------------------------------------------------------------
# int8: calibrated on training images, its accuracy change measured on the test split.


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits") / "run"
    train.fit("lenet5", "digits", train.TrainConfig(epochs=8, seed=3), output=folder, verbose=0)
    return folder


@pytest.mark.compiled  # Its run trains 8 epochs of the digits: compiling pays (tests/conftest.py).
def test_int8_keeps_the_digits_accuracy_and_takes_any_size(digits_run, tmp_path):
    result = export(digits_run, tmp_path / "int8.tflite", quantize="int8", calibration_images=100)
    accuracy = result.accuracy
    assert accuracy["split"] == "test" and accuracy["examples"] == 359
    assert accuracy["keras_accuracy"] == pytest.approx(train.evaluate(digits_run)["accuracy"])
    assert accuracy["change"] == pytest.approx(accuracy["exported_accuracy"] - accuracy["keras_accuracy"])
    assert accuracy["change"] >= -0.01  # at most one point lost
    assert json.loads(result.metadata_path.read_text())["accuracy"] == accuracy
    # Weights and activations are int8: a quarter of the float32 file, give or take.
    float_file = export(digits_run, tmp_path / "float.tflite").path
    assert result.path.stat().st_size < 0.4 * float_file.stat().st_size
    # The preprocessing stays float32: digits at three times the size classify as in Keras.
    digits = kdata.load("digits", normalize=False)
    images, _ = kdata.as_numpy(digits.test)
    large = [np.kron(image, np.ones((3, 3, 1))).astype(np.uint8) for image in images[:40].astype(np.uint8)]
    keras_classes = predicted(digits_run, large).argmax(axis=1)
    assert np.mean(load_exported(result.path)(large).argmax(axis=1) == keras_classes) >= 0.95


# --------------------------------------------------------------------------
# What a format cannot hold, and arguments refused.


class Zoom(keras.layers.Layer):
    """A layer on TensorFlow's antialiased resize (ScaleAndTranslate), which neither
    tf2onnx nor the TFLite converter's built-in operations have."""

    def call(self, inputs):
        return tf.image.resize(inputs, (8, 8), antialias=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 8, 8, input_shape[3])


@pytest.fixture(scope="module")
def zoom_model_and_data():
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = Zoom(name="zoom")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    rng = np.random.default_rng(0)
    data = kdata.load((rng.integers(0, 256, (30, 16, 16, 1), dtype=np.uint8), np.arange(30) % 3), batch_size=8)
    return keras.Model(inputs, outputs, name="zoomnet"), data


@pytest.mark.parametrize("output, converter", [("model.onnx", "tf2onnx"), ("model.tflite", "TFLite converter")])
def test_a_layer_the_format_cannot_hold_is_named_and_nothing_is_written(zoom_model_and_data, output, converter, tmp_path):
    model, data = zoom_model_and_data
    with pytest.raises(ValueError, match=rf"cannot hold `zoomnet`: .*{converter}.* layer `zoom` \(Zoom: ScaleAndTranslate\).*Received: unsupported \['ScaleAndTranslate'\]"):
        export(model, tmp_path / output, data=data)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one nor the JSON
    # A SavedModel holds any TensorFlow operation.
    result = export(model, tmp_path / "saved", data=data)
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    expected = model.predict(kdata.preprocess_images(x, data.preprocessing), verbose=0)
    np.testing.assert_allclose(load_exported(result.path)(x), expected, atol=1e-5, rtol=0)
    assert json.loads(result.metadata_path.read_text())["class_names"] == data.class_names


def test_refused_arguments(lenet_run, tmp_path):
    run, _ = lenet_run
    with pytest.raises(ValueError, match=r"`quantize` must be .* Received: quantize='int8', format='onnx'"):
        export(run, tmp_path / "model.onnx", quantize="int8")
    with pytest.raises(ValueError, match=r"format='onnx' writes a path ending in \.onnx\. Received: output="):
        export(run, tmp_path / "model.tflite", format="onnx")
    with pytest.raises(ValueError, match=r"`format` must be one of \['saved_model', 'onnx', 'litert'\]"):
        export(run, tmp_path / "model", format="tflite")
    model, _ = train.load(run)
    with pytest.raises(ValueError, match=r"Exporting needs the preprocessing .* Received: a keras.Model `lenet5` and data=None"):
        export(model, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_kept_unless_overwrite(lenet_run, tmp_path):
    run, _ = lenet_run
    (tmp_path / "model.tflite").write_bytes(b"keep")
    with pytest.raises(ValueError, match=r"`output` exists; pass overwrite=True"):
        export(run, tmp_path / "model.tflite")
    assert (tmp_path / "model.tflite").read_bytes() == b"keep"
    export(run, tmp_path / "model.tflite", overwrite=True)
    assert load_exported(tmp_path / "model.tflite")(np.zeros((1, 8, 8, 1), np.uint8)).shape == (1, 3)
    # A folder is replaced only when it holds a SavedModel.
    (tmp_path / "notes").mkdir()
    with pytest.raises(ValueError, match=r"a folder that holds no SavedModel"):
        export(run, tmp_path / "notes", overwrite=True)
    export(run, tmp_path / "saved")
    export(run, tmp_path / "saved", overwrite=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.tflite", "model.tflite.json", "notes", "saved", "saved.json"]


def test_cli_export(lenet_run, tmp_path, capsys):
    run, _ = lenet_run
    assert main(["export", str(run), "--output", str(tmp_path / "model.tflite"), "--quantize", "float16"]) == 0
    out = capsys.readouterr().out
    assert f"litert (float16) model written to {tmp_path / 'model.tflite'}" in out
    assert f"class names and preprocessing in {tmp_path / 'model.tflite.json'}" in out
    assert main(["export", str(run), "--output", str(tmp_path / "model.onnx"), "--quantize", "int8"]) == 2
    assert "kcnn export: error: `quantize` must be" in capsys.readouterr().err
