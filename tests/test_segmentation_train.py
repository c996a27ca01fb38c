"""Segmentation through the training module (`kcnn.train.segmentation`): the per-pixel
loss and metrics against NumPy, `kcnn train MODEL --data shapes`, resume, evaluate
(per-class IoU), predict (mask and overlay PNGs) and export, on the registered U-Net
with a LeNet-5 trunk and a narrow decoder (62,124 parameters); `fit` with a small
unregistered stand-in that has the same output contract (per-pixel class probabilities
at the input's height and width)."""

import contextlib
import io
import json

import keras
import numpy as np
import pytest
from PIL import Image

from kcnn import data, registry, train
from kcnn.cli import main
from kcnn.data import segmentation as data_segmentation
from kcnn.data.masks import IGNORE_LABEL, load_mask
from kcnn.train.segmentation import (
    PixelAccuracy,
    PixelCrossentropy,
    SegmentationCrossentropy,
    class_iou,
    make_segmentation_metrics,
)

SHAPES = ["background", "circle", "square", "triangle"]


def standin(input_shape=(32, 32, 3), classes=4, classifier_activation="softmax", name="standin_seg"):
    """A few convolutions, a stride-2 score map upsampled back: (batch, H, W, classes)."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(classes, 1, name="score")(x)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="upsample")(x)
    outputs = keras.layers.Activation(classifier_activation or "linear", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


# The smallest registered segmentation model kcnn builds: 62,124 parameters.
UNET_KWARGS = ["--model-kwargs", "backbone=lenet5", "--model-kwargs", "decoder_width=4"]


@pytest.fixture(scope="module")
def small_shapes():
    """The source "shapes" with 96 scenes instead of 2,000, for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data_segmentation, "SHAPES_SCENES", 96)
        yield


@pytest.fixture(scope="module")
def shapes_run(small_shapes, tmp_path_factory):
    """`kcnn train unet --data shapes` on a LeNet-5 trunk: an epoch at 32x32; its folder and output."""
    output = tmp_path_factory.mktemp("seg") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", "unet", *UNET_KWARGS, "--data", "shapes", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
                     "--lr", "0.01", "--augment", "crop", "--output", str(output), "--verbose", "0"])  # fmt: skip
    assert code == 0
    return output, printed.getvalue()


# --------------------------------------------------------------------------
# Loss and metrics.


def test_loss_and_metrics_skip_unlabelled_pixels_as_numpy_says():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (2, 4, 5)).astype(np.int32)
    labels[0, 0] = IGNORE_LABEL
    labels[1, :, 4] = IGNORE_LABEL
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labelled = labels != IGNORE_LABEL
    picked = np.take_along_axis(probabilities, np.where(labelled, labels, 0)[..., None], -1)[..., 0]
    plain = -np.log(picked)[labelled].mean()
    smoothed = (-(0.9 * np.eye(3)[np.where(labelled, labels, 0)] + 0.1 / 3) * np.log(probabilities)).sum(-1)[labelled].mean()
    assert float(SegmentationCrossentropy(3)(labels, probabilities)) == pytest.approx(plain, rel=1e-5)
    assert float(SegmentationCrossentropy(3, from_logits=True)(labels, logits)) == pytest.approx(plain, rel=1e-5)
    assert float(SegmentationCrossentropy(3, 0.1)(labels, probabilities)) == pytest.approx(smoothed, rel=1e-5)
    keras_own = keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE_LABEL)(labels, probabilities)
    assert float(keras_own) == pytest.approx(plain, rel=1e-5)

    predicted = probabilities.argmax(-1)
    confusion = np.zeros((3, 3))
    np.add.at(confusion, (labels[labelled], predicted[labelled]), 1)
    metrics = make_segmentation_metrics(3)
    assert [m.name for m in metrics] == ["accuracy", "mean_iou", "crossentropy"]
    for metric in metrics:
        metric.update_state(labels[:1], probabilities[:1])  # two batches: accumulated over pixels
        metric.update_state(labels[1:], probabilities[1:])
    accuracy, mean_iou, crossentropy = (float(m.result()) for m in metrics)
    assert accuracy == pytest.approx(np.mean(predicted[labelled] == labels[labelled]))
    assert crossentropy == pytest.approx(plain, rel=1e-5)
    ious = class_iou(confusion)
    assert mean_iou == pytest.approx(np.mean(ious), rel=1e-5)
    assert class_iou(np.asarray(metrics[1].total_cm)) == pytest.approx(ious)
    assert class_iou([[3, 1, 0], [0, 0, 0], [0, 2, 4]]) == [0.75, 0.0, pytest.approx(4 / 6)]
    assert class_iou([[3, 0], [0, 0]])[1] is None  # neither labelled nor predicted
    assert isinstance(PixelAccuracy.from_config(metrics[0].get_config()), PixelAccuracy)
    assert PixelCrossentropy.from_config(metrics[2].get_config()).ignore_label == IGNORE_LABEL


# --------------------------------------------------------------------------
# A run: kcnn train / evaluate / predict / export.


def test_kcnn_train_on_shapes_writes_a_segmentation_run(shapes_run):
    output, printed = shapes_run
    metadata = json.loads((output / "metadata.json").read_text())
    assert metadata["status"] == "completed" and metadata["task"] == "segmentation"
    assert metadata["class_names"] == SHAPES and metadata["dataset"]["name"] == "shapes"
    assert metadata["segmentation"] == {"ignore_label": 255, "palette": data.masks.default_palette(4)}
    arguments = {"backbone": "lenet5", "decoder_width": 4, "input_shape": [32, 32, 3], "classes": 4}
    assert metadata["model"]["builder_arguments"] == arguments
    assert metadata["model"]["parameters"]["total"] == 62_124
    assert metadata["config"]["augment"] == "crop" and metadata["config"]["label_smoothing"] == 0.1
    header = (output / "history.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "accuracy", "mean_iou", "crossentropy", "val_loss", "val_mean_iou"} <= set(header)
    test = metadata["metrics"]["test"]
    assert test["examples"] == 19 and test["pixels"] == 19 * 32 * 32  # 20% of 96 scenes, no unlabelled pixel
    assert 0 < test["mean_iou"] < 1 and len(test["class_iou"]) == 4
    assert f"test pixel accuracy: {test['accuracy']:.2%}, mean IoU {test['mean_iou']:.4f} (19 images, loss" in printed
    assert not (output / "checkpoint").exists()


def test_the_training_settings_take_every_augmentation_of_kcnn_data():
    from kcnn.train.config import AUGMENT

    policies = tuple(dict.fromkeys((*data.AUGMENT_POLICIES, *data.SEGMENTATION_AUGMENT_POLICIES)))
    assert policies == AUGMENT
    with pytest.raises(ValueError, match=r"'crop' zooms an image with its mask: segmentation data only\)\. Received: augment='crop'"):
        data.load("digits", augment="crop")


def test_kcnn_evaluate_prints_the_iou_of_each_class(shapes_run, capsys):
    output, _ = shapes_run
    metrics = train.evaluate(output)
    recorded = json.loads((output / "metadata.json").read_text())["metrics"]["test"]
    assert metrics["mean_iou"] == pytest.approx(recorded["mean_iou"], abs=1e-6)
    assert metrics["class_iou"] == pytest.approx(recorded["class_iou"], abs=1e-6)
    assert metrics["loss"] > metrics["crossentropy"] > 0  # label-smoothed, as trained
    assert main(["evaluate", str(output), "--mixed-precision", "off"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"test pixel accuracy: {metrics['accuracy']:.2%}, mean IoU {metrics['mean_iou']:.4f}")
    assert "(label-smoothed, as in training)" in lines[0]
    assert lines[1] == "IoU per class:"
    for line, name, iou in zip(lines[2:], SHAPES, metrics["class_iou"]):
        assert line.split() == [name, "-" if iou is None else f"{iou:.4f}"]


def test_kcnn_predict_writes_masks_and_overlays_at_each_images_size(shapes_run, tmp_path, capsys):
    output, _ = shapes_run
    scenes = data.synthetic_scenes(2, image_size=(40, 48), seed=9)
    paths = []
    for i, image in enumerate(scenes["x"]):
        paths.append(tmp_path / f"scene{i}.png")
        Image.fromarray(image if i else image.mean(-1).astype(np.uint8)).save(paths[-1])  # one grey image
    probabilities = train.predict(output, [str(p) for p in paths], mixed_precision="off")
    assert [p.shape for p in probabilities] == [(40, 48, 4), (40, 48, 4)]
    np.testing.assert_allclose([p.sum(-1) for p in probabilities], 1.0, atol=1e-5)
    folder = tmp_path / "out"
    assert main(["predict", str(output), *map(str, paths), "--output-dir", str(folder), "--mixed-precision", "off"]) == 0
    printed = capsys.readouterr().out.splitlines()
    for path, pixels, line in zip(paths, probabilities, printed):
        mask, palette = load_mask(folder / f"{path.stem}.mask.png")
        np.testing.assert_array_equal(mask, pixels.argmax(-1))
        assert palette[:4] == data.masks.default_palette(4)
        overlay = np.asarray(Image.open(folder / f"{path.stem}.overlay.png"))
        assert overlay.shape == (40, 48, 3)
        assert line.startswith(f"{path}: ") and f"mask {folder / (path.stem + '.mask.png')}" in line


def test_export_takes_raw_images_and_gives_per_pixel_probabilities(shapes_run, tmp_path):
    from kcnn.export import export
    from kcnn.serving import load_exported

    output, _ = shapes_run
    images = data.synthetic_scenes(3, image_size=(20, 36), seed=4)["x"]
    with pytest.warns(UserWarning, match="is 20x36 pixels; the model was trained on images of about 32x32"):
        expected = np.stack(train.predict(output, list(images), mixed_precision="off"))
    result = export(output, tmp_path / "saved")
    assert result.metadata["output"]["shape"] == [None, None, None, 4]
    np.testing.assert_allclose(load_exported(result.path)(images), expected, atol=1e-5)
    litert = export(output, tmp_path / "model.tflite")  # the portable resizing, both ways
    # At another size than the model's, a pixel halfway between two grey levels may round
    # the other way (kcnn.serving.RawImagePreprocessing): one grey level, ~1e-4 here.
    np.testing.assert_allclose(load_exported(litert.path)(images), expected, atol=1e-3)


# --------------------------------------------------------------------------
# fit with a keras.Model, resume; tasks that do not match.


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.at = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_fit_resumes_an_interrupted_segmentation_run(tmp_path):
    scenes = data.synthetic_scenes(40, image_size=16, seed=1)
    dataset = data.load(scenes, batch_size=8, augment="flip")
    config = train.TrainConfig(epochs=2, batch_size=8, label_smoothing=0.0)
    with pytest.raises(KeyboardInterrupt):
        train.fit(standin((16, 16, 3)), dataset, config, output=tmp_path, callbacks=[Interrupt(1)], verbose=0)
    assert [row["epoch"] for row in train.runs.RunFolder(tmp_path).read_history()] == [1]
    result = train.fit(standin((16, 16, 3)), dataset, config, output=tmp_path, verbose=0)
    assert [row["epoch"] for row in result.history] == [1, 2] and result.metadata["status"] == "completed"
    assert result.metadata["task"] == "segmentation" and result.metadata["model"]["registered"] is False
    test = result.metrics["test"]
    assert test["loss"] == pytest.approx(test["crossentropy"], rel=1e-5)  # no label smoothing: the same quantity
    assert result.history[-1]["val_mean_iou"] > 0


def test_a_model_and_data_of_different_tasks_are_refused(small_shapes, tmp_path, capsys):
    shapes = data.load(data.synthetic_scenes(20, image_size=32), batch_size=4)
    with pytest.raises(ValueError, match=r"`lenet5` is a classifier .* but the data has a mask per image"):
        train.fit(registry.create_model("lenet5", input_shape=(32, 32, 3), classes=4), shapes, output=tmp_path / "a")
    digits = data.load("digits", channels=3)
    with pytest.raises(ValueError, match=r"`standin_seg` segments images .* but the data has one label per image"):
        train.fit(standin(classes=10), digits, output=tmp_path / "b")
    assert main(["train", "lenet5", "--data", "shapes", "--output", str(tmp_path / "c")]) == 2
    assert "lenet5` is a classifier" in capsys.readouterr().err
