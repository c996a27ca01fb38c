"""kcnn.dense: backbone pyramids, FCN-32s/16s/8s on VGG-16, the U-Net decoder, and the
layers they need.

The FCNs hold VGG-16's 134 M parameters at any input size and convolve at least a
199x199 map (conv1 is padded by 100), so FCN-8s is built once (module fixture) and
FCN-16s/32s once each; every other model here is small.
"""

import json
import re

import keras
import numpy as np
import pytest
from test_weights import randomize_batchnorm_statistics

import kcnn
from kcnn import catalog, shapes
from kcnn.dense import fcn_vgg
from kcnn.dense import layers as dense_layers
from kcnn.dense.layers import BilinearUpsampling, CropToReference, ResizeToReference, bilinear_kernel


def tap(model, layer):
    return keras.Model(model.input, model.get_layer(layer).output)


# ---------------------------------------------------------------------------
# Pyramids: the deepest main-path map at each power-of-two stride.
# ---------------------------------------------------------------------------

# (model, builder arguments, input (H, W, C), include_top of the classifier saved):
# every family with spatial stages, the level -> layer table its papers' stages give.
PYRAMIDS = {
    "lenet5": ("lenet5", {}, (32, 32, 1), True, {"P0": "conv1", "P1": "conv3", "P2": "conv5"}),
    "lenet5-paper": ("lenet5", {"variant": "paper"}, (32, 32, 1), True, {"P0": "conv1", "P1": "conv3", "P2": "conv5"}),
    "convnet": (
        "convnet", {}, (32, 32, 3), True,
        {"P0": "block1_conv2", "P1": "block2_conv2", "P2": "block3_conv2", "P3": "block3_pool"},
    ),
    "alexnet": ("alexnet", {}, (67, 67, 3), True, {"P2": "norm1", "P3": "norm2", "P4": "conv5", "P5": "pool5"}),
    "vgg11": (
        "vgg11", {}, (32, 32, 3), False,
        {"P0": "block1_conv1", "P1": "block2_conv1", "P2": "block3_conv2", "P3": "block4_conv2", "P4": "block5_conv2",
         "P5": "block5_pool"},
    ),
    "vgg11_bn": (
        "vgg11_bn", {}, (32, 32, 3), False,
        {"P0": "block1_conv1_relu", "P1": "block2_conv1_relu", "P2": "block3_conv2_relu", "P3": "block4_conv2_relu",
         "P4": "block5_conv2_relu", "P5": "block5_pool"},
    ),
    "googlenet-aux": (
        "googlenet", {"aux_logits": True}, (80, 80, 3), True,
        {"P1": "conv1", "P2": "norm2", "P3": "inception3b_concat", "P4": "inception4e_concat", "P5": "inception5b_concat"},
    ),
    "resnet18": (
        "resnet18", {}, (64, 64, 3), True,
        {"P1": "conv1_relu", "P2": "conv2_block2_out", "P3": "conv3_block2_out", "P4": "conv4_block2_out",
         "P5": "conv5_block2_out"},
    ),
    "resnet50-v1.5": (
        "resnet50", {"variant": "v1.5"}, (32, 32, 3), False,
        {"P1": "conv1_relu", "P2": "conv2_block3_out", "P3": "conv3_block4_out", "P4": "conv4_block6_out",
         "P5": "conv5_block3_out"},
    ),
    # Dilation keeps conv4 and conv5 at stride 8: conv5's output is P3.
    "resnet18-os8": (
        "resnet18", {"output_stride": 8}, (64, 64, 3), True,
        {"P1": "conv1_relu", "P2": "conv2_block2_out", "P3": "conv5_block2_out"},
    ),
}


@pytest.mark.parametrize("case", PYRAMIDS)
def test_pyramid_levels_are_the_classifiers_tensors_at_the_traced_strides(case, rng, tmp_path):
    """Built from a name and the classifier's `.keras` file, every level is exactly the
    classifier's tensor at its layer; its shape and stride are the trace's."""
    name, arguments, shape, include_top, expected = PYRAMIDS[case]
    classifier = kcnn.create_model(name, input_shape=shape, include_top=include_top, **arguments)
    randomize_batchnorm_statistics(classifier, rng)
    path = tmp_path / "classifier.keras"
    classifier.save(path)
    pyramid = kcnn.backbone(name, input_shape=shape, weights=path, **arguments)
    assert {level.name: level.layer for level in pyramid.feature_info} == expected
    assert list(pyramid.output) == list(expected)  # dict outputs, shallowest first
    trace = shapes.trace(classifier)
    x = rng.uniform(0, 255, size=(2, *shape)).astype("float32")
    features = pyramid(x, training=False)
    for level in pyramid.feature_info:
        row = trace.row(level.layer)
        assert level.stride == 2 ** int(level.name[1:]) and row.jump == (level.stride, level.stride)
        assert tuple(features[level.name].shape[1:]) == row.output_shape and level.channels == row.output_shape[2]
        np.testing.assert_array_equal(np.asarray(features[level.name]), np.asarray(tap(classifier, level.layer)(x)))


def test_a_built_classifier_shares_its_layers_with_its_pyramid():
    classifier = kcnn.resnet18(input_shape=(32, 32, 3), classes=3)
    pyramid = kcnn.backbone(classifier, levels="P4")
    assert pyramid.name == "resnet18_backbone" and list(pyramid.output) == ["P4"]
    assert pyramid.get_layer("conv4_block2_out") is classifier.get_layer("conv4_block2_out")
    assert all(classifier.get_layer(layer.name) is layer for layer in pyramid.layers)


def test_the_stride_is_exact_where_valid_windows_shrink_the_map():
    """AlexNet's conv1 maps 227 pixels to 55 positions, 4 pixels apart: its stride is
    4 exactly (227 / 55 = 4.13 counts the 5-pixel border the 11x11 window loses)."""
    pyramid = kcnn.backbone("alexnet")
    sizes = {level.name: (tuple(pyramid.output[level.name].shape[1:3]), level.stride) for level in pyramid.feature_info}
    assert sizes == {"P2": ((55, 55), 4), "P3": ((27, 27), 8), "P4": ((13, 13), 16), "P5": ((6, 6), 32)}
    assert [str(level) for level in kcnn.backbone("lenet5").feature_info] == [
        "P0 (stride 1, conv1, 6 channels)", "P1 (stride 2, conv3, 16 channels)", "P2 (stride 4, conv5, 120 channels)",
    ]  # 28x28, 10x10, 1x1 of a 32x32 input
    # Input normalisation (a fine-tuned model's first layer) rescales the image: no level.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    model = keras.Model(inputs, keras.layers.MaxPooling2D(name="pool")(x))
    assert [(level.name, level.layer) for level in kcnn.dense.pyramid_levels(model)] == [("P0", "conv"), ("P1", "pool")]


def test_a_level_the_network_lacks_is_an_error_that_lists_its_levels():
    message = (
        r"`resnet18` has no level P6, P0: its levels are P1 \(stride 2, conv1_relu, 64 channels\); .*"
        r"P5 \(stride 32, conv5_block2_out, 512 channels\)\. Received: levels=\('P6', 'P3', 'P0'\)$"
    )
    with pytest.raises(ValueError, match=message):
        kcnn.backbone("resnet18", levels=("P6", "P3", "P0"), input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"level names such as \('P3', 'P4', 'P5'\)\. Received: levels=\[3, 4\]$"):
        kcnn.backbone("resnet18", levels=[3, 4], input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"`mlp` has no feature map at a power-of-two stride .* Received: model='mlp'$"):
        kcnn.backbone("mlp")
    with pytest.raises(ValueError, match=r"`fcn8s` is a segmentation model\. Received: model='fcn8s'$"):
        kcnn.backbone("fcn8s")
    with pytest.raises(TypeError, match=r"this model is built\. Received: weights='x.keras'$"):
        kcnn.backbone(kcnn.lenet5(), weights="x.keras")


def test_output_stride_dilates_the_later_stages_as_torchvision():
    """replace_stride_with_dilation=[False, True, True]: conv4 and conv5 keep stride 8;
    the 3x3 where a stride was keeps the previous dilation, the later ones double it.
    The weights do not change (the catalog's ResNet-50 v1.5 count)."""
    model = kcnn.resnet50(variant="v1.5", output_stride=8)
    assert model.count_params() == catalog.rows("resnet50")[1].params
    dilations = {
        layer.name: layer.dilation_rate[0]
        for layer in model.layers
        if re.fullmatch(r"conv[45]_block\d_2_conv", layer.name)
    }
    assert dilations == {
        "conv4_block1_2_conv": 1, **{f"conv4_block{i}_2_conv": 2 for i in range(2, 7)},
        "conv5_block1_2_conv": 2, "conv5_block2_2_conv": 4, "conv5_block3_2_conv": 4,
    }
    assert model.get_layer("conv4_block1_0_conv").strides == (1, 1)
    assert model.get_layer("conv5_block3_out").output.shape[1:] == (28, 28, 2048)
    basic = kcnn.resnet18(output_stride=16, include_top=False, input_shape=(64, 64, 3))
    assert [basic.get_layer(f"conv5_block{b}_{c}_conv").dilation_rate[0] for b in (1, 2) for c in (1, 2)] == [1, 2, 2, 2]
    assert basic.output.shape[1:] == (4, 4, 512)
    with pytest.raises(ValueError, match=r"stages \(1, 2, 4, 8, with the small stem\)\. Received: output_stride=16$"):
        kcnn.resnet18(stem="small", output_stride=16)


# ---------------------------------------------------------------------------
# FCN-32s, FCN-16s, FCN-8s
# ---------------------------------------------------------------------------


def caffe_fcn_parameters(classes, skips):
    """The parameters of the authors' Caffe net (voc-fcn8s/net.py): VGG-16's 13
    convolutions, fc6 (7x7x512 -> 4096) and fc7 (1x1), 1x1 score layers with bias,
    deconvolutions without bias (C x C x k x k each)."""
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    total = sum(9 * c_in * c_out + c_out for c_in, c_out in convs)
    total += 7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096
    total += 4096 * classes + classes  # score_fr
    scored = {4: 512, 3: 256}
    for pool in skips:
        total += 4 * 4 * classes * classes + scored[pool] * classes + classes  # a 2x upscore, score_poolN
    last_kernel = {(): 64, (4,): 32, (4, 3): 16}[skips]
    return total + last_kernel**2 * classes * classes


@pytest.fixture(scope="module")
def fcn8s():
    return kcnn.fcn8s(classes=3, input_shape=(None, None, 3))


def test_fcn8s_has_the_caffe_nets_parameters(fcn8s):
    # 134,489,759 for PASCAL VOC's 21 classes (the catalog's row, built by test_catalog).
    assert caffe_fcn_parameters(21, (4, 3)) == 134_489_759 == catalog.rows("fcn8s")[0].params
    assert caffe_fcn_parameters(21, ()) == catalog.rows("fcn32s")[0].params
    assert caffe_fcn_parameters(21, (4,)) == catalog.rows("fcn16s")[0].params
    assert fcn8s.count_params() == caffe_fcn_parameters(3, (4, 3))
    # The upsamplings are fixed (lr_mult 0): 2 x 4x4 + 16x16 kernels of 3x3 channels.
    assert fcn8s.count_params() - sum(w.numpy().size for w in fcn8s.trainable_weights) == (16 + 16 + 256) * 9


def test_width_multiplier_narrows_every_convolution_and_keeps_the_crops():
    narrow = kcnn.fcn8s(classes=4, input_shape=(64, 64, 3), width_multiplier=1 / 16)
    widths = {layer.name: layer.filters for layer in narrow.layers if type(layer) is keras.layers.Conv2D}
    assert [widths[f"block{stage}_conv1"] for stage in range(1, 6)] == [4, 8, 16, 32, 32]  # 64..512 / 16
    assert widths["fc6"] == widths["fc7"] == 256 and widths["score_fr"] == 4
    assert {layer.name: layer.offset for layer in narrow.layers if isinstance(layer, CropToReference)} == {
        "score_pool4c": 5, "score_pool3c": 9, "score": 31}  # fmt: skip
    convs = [(3, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (16, 16), *[(16, 32)], *[(32, 32)] * 5]
    expected = sum(9 * c_in * c_out + c_out for c_in, c_out in convs) + 49 * 32 * 256 + 256 + 256 * 256 + 256
    expected += (256 * 4 + 4) + (32 * 4 + 4) + (16 * 4 + 4)  # score_fr, score_pool4, score_pool3
    expected += 2 * 4 * 4 * 4 * 4 + 16 * 16 * 4 * 4  # upscore2, upscore_pool4 (4x4), upscore8 (16x16)
    assert narrow.count_params() == expected
    for received in (0, 1.5, True, "half"):
        with pytest.raises(ValueError, match=rf"number in \(0, 1\]\. Received: width_multiplier={received!r}"):
            kcnn.fcn8s(width_multiplier=received)
    with pytest.raises(ValueError, match=r"paper's widths only.*Received: width_multiplier=0.5, weights='imagenet'"):
        kcnn.fcn32s(width_multiplier=0.5, weights="imagenet")


@pytest.mark.parametrize(
    "name,crops",
    [("fcn32s", {"score": 19}), ("fcn16s", {"score_pool4c": 5, "score": 27}), ("fcn8s", {"score_pool4c": 5, "score_pool3c": 9, "score": 31})],
)
def test_fcns_crop_as_caffe_and_predict_every_pixel(name, crops, fcn8s, rng):
    """The crop offsets computed from the layers' geometry are the Caffe nets'; the
    output has the input's size (traced at many sizes, run at one); upsampling is
    bilinear and fixed, scores start at zero (uniform probabilities)."""
    model = fcn8s if name == "fcn8s" else kcnn.create_model(name, classes=3, input_shape=(None, None, 3))
    assert {layer.name: layer.offset for layer in model.layers if isinstance(layer, CropToReference)} == crops
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names)) and all(re.fullmatch(r"[a-z0-9_]+", n) for n in names)
    for height, width in [(1, 1), (13, 21), (500, 375), *((n, n + 7) for n in range(2, 70, 3))]:
        assert shapes.trace(model, (height, width)).rows[-1].output_shape == (height, width, 3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            kernel = layer.kernel.numpy()
            assert not layer.trainable and layer.bias is None
            np.testing.assert_array_equal(kernel[:, :, 0, 0], bilinear_kernel(kernel.shape[0]))
            assert not kernel[:, :, 0, 1].any()
    x = rng.uniform(0, 255, size=(1, 13, 21, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.full((1, 13, 21, 3), 1 / 3), rtol=1e-6)


def test_fc6_and_fc7_are_vgg16s_dense_layers_as_convolutions(fcn8s, rng):
    """With the weights of a VGG-16 classifier, the FCN's layers on the classifier's
    224x224 input give one fc7 position: the classifier's fc7 (its `fc2`), to 1e-5."""
    vgg = kcnn.vgg16(classifier_activation=None)
    fcn_vgg.from_vgg16(fcn8s, vgg)
    inputs = keras.Input((224, 224, 3))
    x = inputs
    for layer in fcn8s.layers:  # the FCN's own layers, without conv1's 100-pixel padding
        if (layer.name.startswith("block") and layer.name != "block1_pad") or layer.name in ("fc6", "fc7"):
            x = layer(x)
            if layer.name == "fc7":
                break
    image = rng.uniform(0, 255, size=(1, 224, 224, 3)).astype("float32")
    fc7 = np.asarray(keras.Model(inputs, x)(image))
    assert fc7.shape == (1, 1, 1, 4096) and np.abs(fc7).max() > 1e-3
    np.testing.assert_allclose(fc7[:, 0, 0], np.asarray(tap(vgg, "fc2")(image)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"FCN's fc6 and fc7 are VGG-16's fc1 and fc2, which `vgg11` lacks"):
        fcn_vgg.from_vgg16(fcn8s, kcnn.vgg11(include_top=False, input_shape=(32, 32, 3)))
    # A VGG-16 classifier of another input size (a 1x1x512 map at 32x32) flattens another fc1.
    other_size = keras.Sequential([keras.Input((512,)), keras.layers.Dense(8, name="fc1"), keras.layers.Dense(8, name="fc2")], name="small")
    with pytest.raises(ValueError, match=r"expected a kernel of \(25088, 4096\)\. Received: \(512, 8\) in `small`$"):
        fcn_vgg.from_vgg16(fcn8s, other_size)


def test_fcn8s_round_trips_through_its_saved_config(fcn8s, rng):
    """What a `.keras` file stores besides the weights, through JSON and safe_mode
    deserialization (a 540 MB file write costs 20 s on 2 cores; the layers' own
    weights files are covered by `test_dense_layers_round_trip_through_a_keras_file`)."""
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(fcn8s)))
    restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert restored.name == "fcn8s" and [layer.name for layer in restored.layers] == [layer.name for layer in fcn8s.layers]
    scores = [fcn8s.get_layer(name) for name in ("score_fr", "score_pool4", "score_pool3")]
    try:
        # Scores not all zero (their initial value), so that the outputs show the whole net.
        for layer in scores:
            layer.kernel.assign(rng.normal(scale=0.01, size=layer.kernel.shape).astype("float32"))
        restored.set_weights(fcn8s.get_weights())
        x = rng.uniform(0, 255, size=(1, 9, 10, 3)).astype("float32")
        outputs = np.asarray(restored(x))
        assert outputs.std() > 1e-4  # not uniform
        np.testing.assert_allclose(outputs, np.asarray(fcn8s(x)), rtol=1e-6)
    finally:
        for layer in scores:  # the module's other tests see the fixture as built
            layer.kernel.assign(np.zeros(layer.kernel.shape, "float32"))


# ---------------------------------------------------------------------------
# U-Net
# ---------------------------------------------------------------------------

# backbone -> (input shape, the levels the decoder joins, coarsest first; 0 without a
# stride-1 level is the last block at the input's size, without a skip).
UNETS = {
    "lenet5": ((None, None, 1), (35, 33), [1, 0]),
    "convnet": ((None, None, 3), (32, 40), [2, 1, 0]),
    "alexnet": ((None, None, 3), (70, 67), [4, 3, 2, 0]),
    "vgg11": ((None, None, 3), (33, 47), [4, 3, 2, 1, 0]),
    "googlenet": ((None, None, 3), (33, 47), [4, 3, 2, 1, 0]),
    "resnet18": ((None, None, 3), (45, 37), [4, 3, 2, 1, 0]),
}


@pytest.mark.parametrize("backbone", UNETS)
def test_unet_decodes_every_familys_pyramid_to_the_input_size(backbone, rng):
    shape, size, joined = UNETS[backbone]
    model = kcnn.unet(backbone=backbone, classes=4, input_shape=shape, decoder_width=4)
    upsampled = [int(layer.name[len("decoder"):-len("_upsample")]) for layer in model.layers if layer.name.endswith("_upsample")]
    assert upsampled == joined
    widths = {layer.name: layer.filters for layer in model.layers if re.fullmatch(r"decoder\d_2_conv", layer.name)}
    assert widths == {f"decoder{n}_2_conv": 4 * 2**n for n in joined}
    x = rng.uniform(0, 255, size=(1, *size, shape[2])).astype("float32")
    y = np.asarray(model(x, training=False))
    assert y.shape == (1, *size, 4) and np.isfinite(y).all()
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)


def test_unet_takes_its_backbones_weights_and_options(rng, tmp_path):
    classifier = kcnn.resnet18(variant="v1.5", input_shape=(64, 64, 3), classes=5)
    randomize_batchnorm_statistics(classifier, rng)
    path = tmp_path / "resnet18.keras"
    classifier.save(path)
    model = kcnn.unet(backbone="resnet18", backbone_kwargs={"variant": "v1.5"}, weights=path, classes=2,
                      input_shape=(64, 64, 3), classifier_activation=None)
    for layer in classifier.layers:
        if layer.weights and layer.name != "predictions":
            for ours, theirs in zip(model.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True):
                np.testing.assert_array_equal(ours, theirs)
    assert model.get_layer("predictions").activation is keras.activations.linear
    x = rng.uniform(0, 255, size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(tap(model, "conv4_block2_out")(x)), np.asarray(tap(classifier, "conv4_block2_out")(x)))
    # The backbone's default weights build the variant they need (offline: the file is looked for)...
    with pytest.raises(ValueError, match=r"resnet18\.tv_in1k are not in the cache"):
        kcnn.unet(backbone="resnet18", weights="imagenet")
    # ... and another variant asked for is refused.
    with pytest.raises(ValueError, match=r"weights .* are for variant='v1.5'.*Received: variant='v1'"):
        kcnn.unet(backbone="resnet18", backbone_kwargs={"variant": "v1"}, weights="imagenet")
    with pytest.raises(ValueError, match=r"`mlp` has no feature map at a power-of-two stride"):
        kcnn.unet(backbone="mlp")
    with pytest.raises(ValueError, match=r"input_shape are the U-Net's arguments\. Received: backbone_kwargs="):
        kcnn.unet(backbone_kwargs={"input_shape": (32, 32, 3)})


# ---------------------------------------------------------------------------
# The layers
# ---------------------------------------------------------------------------


def linear_interpolation_matrix(size, factor):
    """Rows j = 0 .. (size - 1) * f + 2f - 1 of a stride-f transposed convolution with
    a 2f kernel: output j reads input coordinate x = (j - c) / f, c = f - 0.5, and input
    i contributes max(0, 1 - |x - i|) (zero outside the input)."""
    outputs = (size - 1) * factor + 2 * factor
    coordinate = (np.arange(outputs) - (factor - 0.5)) / factor
    return np.maximum(0.0, 1 - np.abs(coordinate[:, None] - np.arange(size)[None, :]))


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_the_bilinear_transposed_convolution_is_bilinear_interpolation(factor, rng):
    image = rng.normal(size=(1, 5, 7, 3)).astype("float32")
    layer = keras.layers.Conv2DTranspose(3, 2 * factor, strides=factor, use_bias=False, kernel_initializer=BilinearUpsampling())
    upsampled = np.asarray(layer(image))[0]
    rows, cols = linear_interpolation_matrix(5, factor), linear_interpolation_matrix(7, factor)
    expected = np.einsum("yi,xj,ijc->yxc", rows, cols, image[0].astype("float64"))
    np.testing.assert_allclose(upsampled, expected, rtol=1e-5, atol=1e-5)
    # Cropped by f / 2, it is Keras' bilinear UpSampling2D (half-pixel centres) away from
    # the border, where Keras clamps and the transposed convolution fades to zero.
    resized = np.asarray(keras.layers.UpSampling2D(factor, interpolation="bilinear")(image))[0]
    half = factor // 2
    inner = (slice(half, 5 * factor - half), slice(half, 7 * factor - half))
    np.testing.assert_allclose(upsampled[half:, half:][inner], resized[inner], rtol=1e-5, atol=1e-5)


def test_bilinear_kernel_is_the_caffe_upsample_filt():
    ramp = np.array([0.25, 0.75, 0.75, 0.25])  # size 4: factor 2, centre 1.5
    np.testing.assert_array_equal(bilinear_kernel(4), np.outer(ramp, ramp))
    np.testing.assert_array_equal(bilinear_kernel(3), np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"\(k, k, C, C\)\. Received: shape=\(4, 4, 3, 2\)"):
        BilinearUpsampling()((4, 4, 3, 2))


def test_dense_layers_round_trip_through_a_keras_file_and_trace(tmp_path, rng):
    inputs = keras.Input((None, None, 2))
    coarse = keras.layers.Conv2D(2, 3, strides=4, name="coarse")(inputs)
    up = keras.layers.Conv2DTranspose(2, 8, strides=4, use_bias=False, kernel_initializer=BilinearUpsampling(), name="up")(coarse)
    cropped = CropToReference(2, name="crop")([up, inputs])
    resized = ResizeToReference(name="resize")([coarse, inputs])
    model = keras.Model(inputs, keras.layers.Add(name="add")([cropped, resized]))
    path = tmp_path / "layers.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    x = rng.normal(size=(1, 17, 13, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(model(x)), rtol=1e-6)
    assert restored.get_layer("crop").offset == 2 and isinstance(restored.get_layer("up").kernel_initializer, BilinearUpsampling)
    # kcnn.layers imports them, so they register wherever kcnn's layers do (a fresh
    # interpreter after `import kcnn`: tests/test_saved_models.py).
    assert kcnn.layers._dense_layers is dense_layers
    trace = shapes.trace(model, (17, 13))
    up_row = trace.row("up")  # 4x3 -> (4 - 1) * 4 + 8: every input position scatters an 8x8 kernel
    assert up_row.output_shape == (20, 16, 2) and up_row.macs == 4 * 3 * 8 * 8 * 2 * 2
    assert up_row.jump == (1, 1) and up_row.receptive_field == (3 + 4, 3 + 4)
    assert trace.row("crop").output_shape == trace.row("resize").output_shape == (17, 13, 2)
    assert trace.row("resize").jump == (1, 1)
    assert shapes.min_input_size(model) == 3  # the valid 3x3; the crop fits from there on
    too_small = keras.Model(inputs, CropToReference(9, name="crop9")([up, inputs]))
    with pytest.raises(ValueError, match=r"'crop9' .* cannot crop 17x13 at offset 9: expected at least 26x22\. Received: 20x16"):
        shapes.trace(too_small, (17, 13))
    with pytest.raises(ValueError, match=r"`offset` must be a non-negative integer\. Received: offset=-1"):
        CropToReference(-1)


def test_kcnn_list_and_summary_show_the_segmentation_models(capsys):
    from kcnn.cli import main

    assert main(["list", "fcn*", "--names-only"]) == 0
    assert capsys.readouterr().out.split() == ["fcn16s", "fcn32s", "fcn8s"]
    assert main(["summary", "unet", "--input-size", "33", "--classes", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[2:] for line in out.splitlines()}
    assert rows["decoder4_upsample"][:4] == ["2x2x512", "+", "3x3x256", "3x3x512"]  # (input + reference) -> output
    assert rows["predictions"][:2] == ["33x33x2", "33x33x2"]
    assert "Total params: 14,344,482" in out and "Total MACs:   149,001,184" in out
