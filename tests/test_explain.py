"""kcnn.explain: Grad-CAM and saliency give the known answer of models built so that the
evidence for a class is in one image quadrant, run on every family, and `explain` /
`kcnn explain` predict as kcnn.train.predict does."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kcnn
from kcnn import data as kdata
from kcnn import explain, train
from kcnn.cli import main
from kcnn.train.driver import save_run

SIZE = 32
QUADRANT = (slice(4, 12), slice(4, 12))  # a square inside the top-left quadrant
OPPOSITE = (slice(20, 28), slice(20, 28))  # one inside the bottom-right quadrant


def quadrant_image():
    """Mid-grey, with a bright square top left and a dark square bottom right."""
    image = np.full((SIZE, SIZE, 1), 0.5, np.float32)
    image[QUADRANT] = 1.0
    image[OPPOSITE] = 0.0
    return image[None]


def evidence_model(merge=None):
    """Class "bright" is the average of a map that fires on bright pixels only, class
    "dark" of one that fires on dark pixels only: the evidence for "bright" is the
    top-left square of `quadrant_image`, for "dark" the bottom-right one. The maps are
    merged as GoogLeNet (concatenation) or ResNet (addition) merge theirs."""
    inputs = keras.Input((SIZE, SIZE, 1))
    bright = keras.layers.Conv2D(1, 1, activation="relu", name="bright")(inputs)
    dark = keras.layers.Conv2D(1, 1, activation="relu", name="dark")(inputs)
    if merge == "add":
        # Two channels each, added: the second channel of each branch is zero.
        bright = keras.layers.Concatenate(name="bright_pad")([bright, keras.layers.Conv2D(1, 1, name="zero_a")(inputs)])
        dark = keras.layers.Concatenate(name="dark_pad")([keras.layers.Conv2D(1, 1, name="zero_b")(inputs), dark])
        features = keras.layers.Add(name="features")([bright, dark])
    else:
        features = keras.layers.Concatenate(name="features")([bright, dark])
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inputs, outputs, name="evidence")
    model.get_layer("bright").set_weights([np.ones((1, 1, 1, 1)), np.array([-0.6])])  # relu(x - 0.6)
    model.get_layer("dark").set_weights([-np.ones((1, 1, 1, 1)), np.array([0.3])])  # relu(0.3 - x)
    for name in ("zero_a", "zero_b"):
        if merge == "add":
            model.get_layer(name).set_weights([np.zeros((1, 1, 1, 1)), np.zeros(1)])
    model.get_layer("predictions").set_weights([np.eye(2) * 1000.0, np.zeros(2)])  # a saturated softmax
    return model


@pytest.mark.parametrize("merge", ["concatenate", "add"])
def test_gradcam_finds_the_quadrant_that_holds_the_evidence(merge):
    model = evidence_model(merge)
    image = quadrant_image()
    probabilities = model.predict(image, verbose=0)[0]
    assert probabilities[0] > 0.99  # the bright square (0.4 on 64 pixels) outweighs the dark one (0.3)
    assert explain.gradcam_layer(model) == "features"
    expected = {0: QUADRANT, 1: OPPOSITE}
    for class_index, square in expected.items():
        heatmap = explain.gradcam(model, image, class_index=class_index)[0]
        mask = np.zeros((SIZE, SIZE), bool)
        mask[square] = True
        # The known answer: exactly the square where the class's map fires, even for the
        # class the (saturated) softmax gives ~0: Grad-CAM takes the score before it.
        np.testing.assert_array_equal(heatmap, mask.astype(np.float32))
        peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert (peak[0] < SIZE // 2, peak[1] < SIZE // 2) == ((True, True) if class_index == 0 else (False, False))


def test_gradcam_explains_the_predicted_class_by_default():
    model = evidence_model()
    # Inverted, the bright square is bottom right: "bright" is still predicted, there.
    images = np.concatenate([quadrant_image(), 1.0 - quadrant_image()])
    heatmaps = explain.gradcam(model, images)
    for heatmap, square in zip(heatmaps, (QUADRANT, OPPOSITE)):
        mask = np.zeros((SIZE, SIZE), np.float32)
        mask[square] = 1.0
        np.testing.assert_array_equal(heatmap, mask)
    np.testing.assert_array_equal(explain.gradcam(model, images, class_index=[0, 0]), heatmaps)


def test_saliency_is_nonzero_only_where_the_model_looks():
    # A convolution (3x3 box) then a classifier that reads only the top-left quadrant's
    # positions (class 0) or the bottom-right's (class 1): a pixel changes a class's
    # score only within one pixel of that quadrant.
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Conv2D(1, 3, padding="same", use_bias=False, name="box")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(2, name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("box").set_weights([np.ones((3, 3, 1, 1))])
    weights = np.zeros((SIZE, SIZE, 2))
    rng = np.random.default_rng(0)
    weights[: SIZE // 2, : SIZE // 2, 0] = rng.uniform(0.5, 1.0, (SIZE // 2, SIZE // 2))
    weights[SIZE // 2 :, SIZE // 2 :, 1] = rng.uniform(0.5, 1.0, (SIZE // 2, SIZE // 2))
    model.get_layer("predictions").set_weights([weights.reshape(-1, 2), np.zeros(2)])
    image = rng.uniform(size=(1, SIZE, SIZE, 1)).astype(np.float32)
    for class_index, (rows, columns) in {0: (slice(0, 17), slice(0, 17)), 1: (slice(15, 32), slice(15, 32))}.items():
        saliency = explain.saliency(model, image, class_index=class_index)[0]
        inside = np.zeros((SIZE, SIZE), bool)
        inside[rows, columns] = True
        assert np.all(saliency[~inside] == 0.0)
        assert np.all(saliency[inside] > 0.0) and saliency.max() == 1.0
        # The gradient itself: the box filter sums the classifier's weights around each pixel.
        padded = np.pad(weights[..., class_index], 1)
        expected = sum(padded[i : i + SIZE, j : j + SIZE] for i in range(3) for j in range(3))
        np.testing.assert_allclose(saliency, expected / expected.max(), rtol=1e-5, atol=1e-7)


# Each family at a small input: the layer Grad-CAM picks, the last that still has a map.
FAMILIES = [
    ("lenet5", {}, (32, 32, 1), "conv3"),  # conv5 is 1x1
    ("lenet5", {"variant": "paper"}, (32, 32, 1), "conv3"),  # not pool4's subsampling and squashing
    ("convnet", {}, (32, 32, 3), "block3_conv2"),
    ("alexnet", {"include_top": False, "pooling": "avg"}, (67, 67, 3), "conv5"),
    ("vgg11", {"include_top": False, "pooling": "avg"}, (64, 64, 3), "block5_conv2"),
    ("googlenet", {"aux_logits": True, "classes": 4}, (96, 96, 3), "inception5b_concat"),
    ("resnet18", {"include_top": False, "pooling": "avg"}, (64, 64, 3), "conv5_block2_out"),
]


@pytest.mark.parametrize("name, arguments, shape, layer", FAMILIES, ids=[f"{f[0]}-{f[3]}" for f in FAMILIES])
def test_every_family(name, arguments, shape, layer):
    model = kcnn.create_model(name, input_shape=shape, **arguments)
    if arguments.get("include_top") is False:
        model = train.replace_head(model, 4)
    assert explain.gradcam_layer(model) == layer
    images = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    for maps in (explain.gradcam(model, images), explain.saliency(model, images)):
        assert maps.shape == (2, *shape[:2]) and maps.dtype == np.float32
        assert np.all(np.isfinite(maps)) and maps.min() >= 0.0 and maps.max() == 1.0


def test_one_image_of_a_narrow_resnet_is_explained_as_in_a_batch():
    # Batch 1 through a ResNet of width 8 (1x1 stride-2 projections from 8 and 16 channels)
    # is where TensorFlow 2.21's oneDNN kernel for the Conv2D kernel gradient crashes the
    # process on AVX-512 CPUs, a gradient the maps never need (`explain._traced`). The
    # reference: the eager gradient of a batch of two, whose first image is the same.
    model = kcnn.resnet18(input_shape=(16, 16, 3), classes=3, width=8, stem="small", classifier_activation=None)
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = model(x, training=False)[:, 1]
    expected = np.abs(tape.gradient(score, x).numpy()[:1]).max(axis=-1)
    np.testing.assert_allclose(explain.saliency(model, images[:1], class_index=1), expected / expected.max(), atol=1e-5)
    np.testing.assert_allclose(explain.gradcam(model, images[:1]), explain.gradcam(model, images)[:1], atol=1e-6)


def test_gradcam_refuses_a_layer_without_a_feature_map():
    model = kcnn.lenet5()
    with pytest.raises(ValueError, match=r"feature map .* Received: layer='fc6' with output shape \(None, 84\)"):
        explain.gradcam(model, np.zeros((1, 32, 32, 1), np.float32), layer="fc6")
    with pytest.raises(ValueError, match=r"has no layer 'conv9'"):
        explain.gradcam(model, np.zeros((1, 32, 32, 1), np.float32), layer="conv9")
    with pytest.raises(ValueError, match=r"`class_index` must be in \[0, 10\)"):
        explain.saliency(model, np.zeros((1, 32, 32, 1), np.float32), class_index=10)
    with pytest.raises(ValueError, match=r"Expected a model with a convolutional feature map .* Received: `mlp`, which has none"):
        explain.gradcam_layer(kcnn.mlp())


# --------------------------------------------------------------------------
# explain() and `kcnn explain` on a run folder and an image file.


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    """A LeNet-5 run on the digits (a few epochs) and an 8x8 test digit as a PNG file."""
    folder = tmp_path_factory.mktemp("explain")
    digits = kdata.load("digits", batch_size=64)
    model = kcnn.lenet5()
    # Compiled (tests/conftest.py): 3 epochs of the digits are steps enough to pay for it.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=False)
    model.fit(digits.train, epochs=3, verbose=0, shuffle=False)  # the pipeline shuffles
    save_run(model, digits, train.TrainConfig(epochs=3), folder / "run")
    raw = kdata.load("digits", normalize=False, image_size=8)
    images, labels = kdata.as_numpy(raw.test)
    Image.fromarray(images[0, :, :, 0].astype(np.uint8)).save(folder / "digit.png")
    return folder / "run", folder / "digit.png", int(labels[0])


def test_explain_predicts_as_predict_and_explains_the_top_class(digit_run):
    run, image, _ = digit_run
    result = explain.explain(run, image, top_k=3)
    assert result.predictions == train.predict(run, [image], top_k=3)[0]
    assert result.class_name == result.predictions[0][0] and result.class_index == int(result.class_name)
    assert result.method == "gradcam" and result.layer == "conv3"
    assert result.heatmap.shape == (32, 32) and result.heatmap.max() == 1.0
    # The picture is the digit as the network sees it: 8x8 resized to 32x32, 0..255.
    model, metadata = train.load(run)
    expected = kdata.preprocess_images([kdata.load_image(image)], {**metadata["preprocessing"], "normalization": "none"})[0]
    np.testing.assert_array_equal(result.image, expected)
    inputs = kdata.read_images([image], metadata["preprocessing"])
    np.testing.assert_allclose(result.heatmap, explain.gradcam(model, inputs, class_index=result.class_index)[0], atol=1e-6)

    other = next(name for name, _ in result.predictions[1:])
    saliency = explain.explain(run, image, method="saliency", class_name=other)
    assert saliency.class_name == other and saliency.layer is None
    np.testing.assert_allclose(saliency.heatmap, explain.saliency(model, inputs, class_index=int(other))[0], atol=1e-6)


def test_explain_refuses_bad_arguments(digit_run):
    run, image, _ = digit_run
    with pytest.raises(ValueError, match=r"`method` must be one of \('gradcam', 'saliency'\)"):
        explain.explain(run, image, method="lime")
    with pytest.raises(ValueError, match=r"`layer` is Grad-CAM's"):
        explain.explain(run, image, method="saliency", layer="conv3")
    with pytest.raises(ValueError, match=r"`class_name` must be one of the model's classes .* Received: class_name='cat'"):
        explain.explain(run, image, class_name="cat")


def test_cli_explain_writes_the_picture(digit_run, tmp_path, capsys):
    run, image, _ = digit_run
    output = tmp_path / "explained.png"
    assert main(["explain", str(run), str(image), "--output", str(output), "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    top = train.predict(run, [image], top_k=2)[0]
    assert out[0] == f"{image}: " + ", ".join(f"{name} ({p:.1%})" for name, p in top)
    assert out[1] == f"Grad-CAM for class {top[0][0]!r} at layer conv3 written to {output}"
    with Image.open(output) as picture:
        assert picture.format == "PNG" and picture.size[0] > picture.size[1] > 100
    assert [path.name for path in tmp_path.iterdir()] == ["explained.png"]
    assert main(["explain", str(run), str(image), "--output", str(output), "--layer", "fc6"]) == 2
    assert "kcnn explain: error: Grad-CAM needs a layer whose output is a feature map" in capsys.readouterr().err


def test_cli_choices_are_the_librarys():
    from kcnn import export
    from kcnn.cli import export as cli

    assert tuple(export.FORMATS) == cli.FORMATS and cli.QUANTIZATIONS == export.QUANTIZATIONS
    assert cli.METHODS == explain.METHODS and export.CALIBRATION_IMAGES == 300  # the number --help shows
