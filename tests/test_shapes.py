"""Tests for kcnn.shapes: conv arithmetic, graph tracing, min_input_size."""

import keras
import numpy as np
import pytest

from kcnn.shapes import (
    LayerRow,
    Trace,
    conv_output_size,
    count_macs,
    min_input_size,
    pool_output_size,
    same_padding,
    trace,
)

L = keras.layers


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _chain(*layers, input_shape=(None, None, 3), name=None):
    """Functional model applying `layers` in sequence."""
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def _keras_accepts(model, n):
    """Keras' own symbolic shape inference at an n x n input.

    This is the independent oracle for `trace`/`min_input_size`: Keras raises
    for empty conv/pool outputs and for merges of incompatible shapes.
    """
    try:
        shape = model.compute_output_shape((1, n, n, model.inputs[0].shape[-1]))
    except ValueError:
        return False
    return all(d is None or d >= 1 for d in keras.tree.flatten(shape))


def _traces(model, n):
    try:
        trace(model, n)
    except ValueError:
        return False
    return True


class LocalResponseNormalization(L.Layer):
    """AlexNet-style LRN written without compute_output_shape."""

    def call(self, x):
        sq = keras.ops.square(x)
        return x / keras.ops.power(1.0 + 1e-4 * sq, 0.75)


class Subsample(L.Layer):
    """Unknown spatial op: keeps every other row and column."""

    def call(self, x):
        return x[:, ::2, ::2, :]


# ---------------------------------------------------------------------------
# conv_output_size / pool_output_size / same_padding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((7, 3), {}, 5),  # 7x7 input, 3x3 filter, stride 1
        ((7, 3, 2), {}, 3),
        ((7, 3, 3), {}, 2),  # floor of 2.33, like Keras 'valid'
        ((32, 5, 1, 2), {}, 32),  # pad 2 keeps 32x32
        ((7, 3, 2, "same"), {}, 4),  # ceil(7 / 2)
        ((7, 3, 3, "same"), {"strict": True}, 3),  # 'same' always tiles
        ((227, 11, 4), {}, 55),  # AlexNet conv1
        ((227, 11, 4), {"strict": True}, 55),
        ((224, 7, 2, 3), {}, 112),  # ResNet conv1
        ((7, 3, 1, "valid"), {}, 5),
        ((7, 3, 1, "VALID"), {}, 5),
        ((7, 3), {"dilation": 2}, 3),  # dilated 3x3 spans 5 pixels
        ((np.int64(7), np.int32(3)), {}, 5),
    ],
)
def test_conv_output_size(args, kwargs, expected):
    result = conv_output_size(*args, **kwargs)
    assert result == expected
    assert type(result) is int


def test_conv_output_size_strict_refuses_non_tiling_filter():
    with pytest.raises(ValueError, match="does not fit") as info:
        conv_output_size(7, 3, stride=3, strict=True)
    message = str(info.value)
    assert "2.333" in message
    assert "padding=1 (output 3)" in message  # the nearest fix
    assert "Received: n=7, f=3, stride=3" in message


def test_conv_output_size_strict_even_stride_odd_span():
    # (8 - 3) is odd and S = 2 is even: no zero padding can ever fit.
    with pytest.raises(ValueError, match="no padding"):
        conv_output_size(8, 3, stride=2, strict=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0, "f": 3},
        {"n": -7, "f": 3},
        {"n": 7.0, "f": 3},
        {"n": True, "f": 3},
        {"n": 7, "f": True},
        {"n": 7, "f": 0},
        {"n": 7, "f": 3, "stride": 0},
        {"n": 7, "f": 3, "stride": 1.5},
        {"n": 7, "f": 3, "padding": -1},
        {"n": 7, "f": 3, "padding": "full"},
        {"n": 7, "f": 3, "padding": 1.0},
        {"n": 7, "f": 3, "dilation": 0},
        {"n": 2, "f": 3},  # output would be empty
        {"n": 3, "f": 3, "dilation": 2},  # dilated filter spans 5
    ],
)
def test_conv_output_size_errors(kwargs):
    with pytest.raises(ValueError, match="Received: "):
        conv_output_size(**kwargs)


def test_pool_output_size_defaults_to_non_overlapping_windows():
    assert pool_output_size(224, 2) == 112
    assert pool_output_size(114, 3, 2) == 56  # ResNet pool1 after padding
    assert pool_output_size(55, 3, 2) == 27  # AlexNet overlapping pooling
    assert pool_output_size(7, 2, padding="same") == 4
    with pytest.raises(ValueError, match="does not fit"):
        pool_output_size(7, 2, strict=True)


def test_same_padding():
    assert same_padding(1) == 0
    assert same_padding(3) == 1
    assert same_padding(5) == 2
    assert same_padding(7) == 3
    assert same_padding(3, dilation=2) == 2
    for f in (3, 5, 7):
        n = 13
        assert conv_output_size(n, f, padding=same_padding(f)) == n
    with pytest.raises(ValueError, match="odd"):
        same_padding(4)
    with pytest.raises(ValueError, match="positive integer"):
        same_padding(0)


# ---------------------------------------------------------------------------
# trace on small hand-checked models
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dropout(0.5, name="drop")(x)
    outputs = L.Dense(10, name="fc")(x)
    return keras.Model(inputs, outputs, name="small")


def test_trace_small_model_sizes_and_macs(small_model):
    t = trace(small_model)
    assert isinstance(t, Trace)
    assert all(isinstance(r, LayerRow) for r in t.rows)
    assert [r.name for r in t.rows] == [
        "image", "conv1", "bn", "relu", "pool", "conv2", "flatten", "drop",
        "fc",
    ]
    assert [r.output_shape for r in t.rows] == [
        (32, 32, 3),
        (30, 30, 8),
        (30, 30, 8),
        (30, 30, 8),
        (15, 15, 8),
        (8, 8, 16),  # ceil(15 / 2)
        (1024,),
        (1024,),
        (10,),
    ]
    conv1 = 30 * 30 * 8 * (3 * 3 * 3)
    conv2 = 8 * 8 * 16 * (3 * 3 * 8)
    fc = 1024 * 10
    assert [r.macs for r in t.rows] == [0, conv1, 0, 0, 0, conv2, 0, 0, fc]
    assert t.total_macs == conv1 + conv2 + fc == 278_368
    assert count_macs(small_model) == t.total_macs
    assert t.total_params == small_model.count_params()
    assert t.row("conv1").params == 8 * 27 + 8
    assert t.row("conv2").input_shape == (15, 15, 8)
    assert t.row("conv2").kernel_size == (3, 3)
    assert t.row("conv2").strides == (2, 2)
    assert t.row("conv2").padding == "same"
    assert t.row("pool").kernel_size == (2, 2)
    assert t.row("pool").strides == (2, 2)
    assert t.row("bn").kernel_size is None
    # conv 3 -> pool 2/2 -> 4 (jump 2) -> conv 3/2 -> 4 + 2*2 = 8 (jump 4)
    assert t.row("conv1").receptive_field == (3, 3)
    assert t.row("pool").receptive_field == (4, 4)
    assert t.row("conv2").receptive_field == (8, 8)
    assert t.row("conv2").jump == (4, 4)
    # Flatten mixes the whole 8x8 map: 8 + 7*4.
    assert t.row("fc").receptive_field == (36, 36)


def test_trace_format_and_dicts(small_model):
    t = trace(small_model)
    text = str(t)
    assert text == t.format()
    for needle in ("conv1 (Conv2D)", "30x30x8", "Total MACs", "278,368",
                   f"{small_model.count_params():,}"):
        assert needle in text
    dicts = t.to_dicts()
    assert len(dicts) == len(t.rows)
    assert dicts[1]["name"] == "conv1"
    assert dicts[1]["macs"] == 194_400
    assert set(dicts[1]) >= {
        "name", "class_name", "input_shape", "output_shape", "kernel_size",
        "strides", "padding", "params", "macs", "receptive_field", "jump",
    }


@pytest.mark.parametrize(
    "convs, expected",
    [
        ([L.Conv2D(4, 3), L.Conv2D(4, 3)], 5),  # two 3x3 see 5x5
        ([L.Conv2D(4, 3), L.Conv2D(4, 3), L.Conv2D(4, 3)], 7),  # = one 7x7
        ([L.Conv2D(4, 3, strides=2), L.Conv2D(4, 3)], 7),
        ([L.Conv2D(4, 3, dilation_rate=2)], 5),
        ([L.Conv2D(4, (1, 7), padding="same")], (1, 7)),
    ],
)
def test_receptive_field(convs, expected):
    model = keras.Sequential([keras.Input((None, None, 3)), *convs])
    t = trace(model, 32)
    if isinstance(expected, int):
        expected = (expected, expected)
    assert t.rows[-1].receptive_field == expected


def test_trace_groups_depthwise_separable_and_dense_on_maps():
    model = _chain(
        L.Conv2D(8, 3, groups=2, padding="same"),
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        L.SeparableConv2D(4, 3, padding="same"),
        L.Dense(5),
        input_shape=(4, 4, 4),
    )
    t = trace(model)
    assert [r.output_shape for r in t.rows[1:]] == [
        (4, 4, 8), (4, 4, 16), (4, 4, 4), (4, 4, 5),
    ]
    assert [r.macs for r in t.rows[1:]] == [
        16 * 8 * (9 * 4 // 2),  # grouped conv: C_in / groups per filter
        16 * 16 * 9,  # depthwise: one 3x3 per output channel
        16 * 16 * 9 + 16 * 16 * 4,  # separable: depthwise + pointwise
        16 * 4 * 5,  # Dense per position
    ]


def test_trace_padding_cropping_global_pooling_and_reshape():
    model = _chain(
        L.ZeroPadding2D(((1, 2), (3, 4))),
        L.Cropping2D(((0, 1), (2, 0))),
        L.GlobalMaxPooling2D(keepdims=True),
        L.Reshape((-1,)),
        input_shape=(10, 10, 3),
    )
    t = trace(model)
    assert [r.output_shape for r in t.rows[1:]] == [
        (13, 17, 3), (12, 15, 3), (1, 1, 3), (3,),
    ]
    assert t.rows[1].padding == ((1, 2), (3, 4))
    assert t.total_macs == 0


def test_trace_inception_style_concatenate():
    inputs = keras.Input((None, None, 16))
    a = L.Conv2D(8, 1, name="b1")(inputs)
    b = L.Conv2D(12, 3, padding="same", name="b3")(inputs)
    c = L.Conv2D(4, 5, padding="same", name="b5")(inputs)
    d = L.MaxPooling2D(3, strides=1, padding="same", name="pool")(inputs)
    out = L.Concatenate(name="concat")([a, b, c, d])
    model = keras.Model(inputs, out)
    t = trace(model, (28, 20))
    concat = t.row("concat")
    assert concat.output_shape == (28, 20, 8 + 12 + 4 + 16)
    assert concat.input_shapes == (
        (28, 20, 8), (28, 20, 12), (28, 20, 4), (28, 20, 16),
    )
    assert concat.receptive_field == (5, 5)  # the widest branch
    assert t.total_macs == 28 * 20 * (8 * 16 + 12 * 9 * 16 + 4 * 25 * 16)


def test_trace_unknown_layers():
    model = _chain(
        L.Conv2D(4, 3, padding="same", name="conv"),
        LocalResponseNormalization(name="lrn"),
        Subsample(name="sub"),
    )
    t = trace(model, 9)
    lrn, sub = t.row("lrn"), t.row("sub")
    assert lrn.output_shape == (9, 9, 4)
    assert lrn.receptive_field == (3, 3) and lrn.macs == 0
    assert sub.output_shape == (5, 5, 4)
    assert sub.receptive_field is None  # cannot know what the op does


def test_trace_nested_model():
    block = keras.Sequential(
        [
            keras.Input((None, None, 8)),
            L.Conv2D(8, 3, padding="same", name="conv"),
            L.ReLU(name="relu"),
        ],
        name="block",
    )
    inputs = keras.Input((None, None, 3))
    x = L.Conv2D(8, 3, strides=2, name="stem")(inputs)
    x = block(x)
    model = keras.Model(inputs, L.GlobalAveragePooling2D(name="gap")(x))
    t = trace(model, 17)
    assert t.row("block/conv").output_shape == (8, 8, 8)
    assert t.row("block/conv").receptive_field == (7, 7)
    assert t.row("gap").output_shape == (8,)
    assert t.total_params == model.count_params()
    assert t.total_macs == 8 * 8 * 8 * 27 + 8 * 8 * 8 * 72


def test_trace_input_size_errors(small_model):
    fcn = _chain(L.Conv2D(4, 3))
    with pytest.raises(ValueError, match="input_size"):
        trace(fcn)
    for bad in (0, -3, 2.5, True, "big", (3,), (3, 3, 3, 3), (3, 0)):
        with pytest.raises(ValueError, match="Received: input_size="):
            trace(fcn, bad)
    with pytest.raises(ValueError, match="Expected 3 channels"):
        trace(fcn, (8, 8, 4))
    assert trace(fcn, (8, 6, 3)).rows[-1].output_shape == (6, 4, 4)
    assert trace(fcn, [8, 6]).rows[-1].output_shape == (6, 4, 4)
    # Too small: the message names the layer.
    with pytest.raises(ValueError, match="conv2d.*empty output"):
        trace(_chain(L.Conv2D(4, 3, name="conv2d")), 2)
    # The Flatten -> Dense head pins the input size.
    with pytest.raises(ValueError, match="'fc'.*1024 input features"):
        trace(small_model, 36)


def test_trace_rejects_subclassed_model():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional or Sequential"):
        trace(Net(), 8)


# ---------------------------------------------------------------------------
# Big keras.applications models (built once per module)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50():
    return keras.applications.ResNet50(weights=None)


@pytest.fixture(scope="module")
def resnet50_trunk():
    return keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )


@pytest.fixture(scope="module")
def vgg16():
    return keras.applications.VGG16(weights=None)


def test_resnet50_macs_and_shapes(resnet50):
    t = trace(resnet50)
    assert t.total_macs == 3_857_973_248  # 3.86 G, as kcnn's resnet50 (v1) counts
    assert t.total_params == resnet50.count_params()
    assert t.row("conv1_conv").output_shape == (112, 112, 64)
    assert t.row("pool1_pool").output_shape == (56, 56, 64)
    assert t.row("conv5_block3_3_conv").output_shape == (7, 7, 2048)
    assert t.row("conv2_block1_add").input_shapes == ((56, 56, 256),) * 2
    # Published value for ResNet-50's last conv layer (Araujo et al. 2019).
    assert t.row("conv5_block3_out").receptive_field == (483, 483)
    assert t.row("conv5_block3_out").jump == (32, 32)
    assert t.rows[-1].output_shape == (1000,)


def test_vgg16_macs(vgg16):
    t = trace(vgg16)
    assert t.total_macs == 15_470_264_320  # 15.47 G, as kcnn's vgg16 counts
    assert t.row("block5_pool").output_shape == (7, 7, 512)
    assert t.row("block5_conv3").receptive_field == (196, 196)
    assert t.total_params == vgg16.count_params()


def test_vgg16_min_input_size_is_pinned_by_flatten_dense(vgg16):
    # Any n in [224, 255] pools down to 7x7; below that fc1's 25088
    # input features no longer match.
    assert min_input_size(vgg16) == 224


@pytest.mark.parametrize("n", [1, 31, 64, 225])
def test_resnet50_trunk_trace_matches_keras(resnet50_trunk, n):
    expected = resnet50_trunk.compute_output_shape((1, n, n, 3))[1:]
    assert trace(resnet50_trunk, n).rows[-1].output_shape == tuple(expected)


def test_resnet50_trunk_min_input_size(resnet50_trunk):
    n = min_input_size(resnet50_trunk)
    # keras.applications' ResNet pads before every valid-padded window and
    # downsamples with 1x1/2 convs on both paths, so even 1x1 works.
    assert n == 1
    assert _keras_accepts(resnet50_trunk, n)
    assert trace(resnet50_trunk, n).rows[-1].output_shape == (1, 1, 2048)


# ---------------------------------------------------------------------------
# min_input_size on trunks, cross-checked against Keras
# ---------------------------------------------------------------------------


def _stem():
    return _chain(
        L.Conv2D(8, 7, strides=2, padding="same"),
        L.MaxPooling2D(3, strides=2),
    )


def _two_valid_convs():
    return _chain(L.Conv2D(4, 3), L.Conv2D(4, 3))


def _alexnet_trunk():
    return _chain(
        L.Conv2D(8, 11, strides=4),
        LocalResponseNormalization(),
        L.MaxPooling2D(3, strides=2),
        L.Conv2D(8, 5, padding="same"),
        L.MaxPooling2D(3, strides=2),
        L.Conv2D(8, 3, padding="same"),
        L.MaxPooling2D(3, strides=2),
    )


def _valid_residual():
    inputs = keras.Input((None, None, 3))
    main = L.Conv2D(4, 3, padding="valid")(inputs)
    main = L.Conv2D(4, 3, padding="valid")(main)
    shortcut = L.Cropping2D(2)(L.Conv2D(4, 1)(inputs))
    return keras.Model(inputs, L.Add()([main, shortcut]))


@pytest.mark.parametrize(
    "build, expected",
    [
        (_stem, 5),  # ceil(n / 2) >= 3
        (_two_valid_convs, 5),  # n - 2 - 2 >= 1
        (_alexnet_trunk, 67),  # floor((n - 11) / 4) + 1 >= 15
        (_valid_residual, 5),
    ],
)
def test_min_input_size_against_keras(build, expected):
    model = build()
    n = min_input_size(model)
    assert n == expected
    # Keras itself must reject every smaller size and accept n.
    assert not any(_keras_accepts(model, m) for m in range(1, n))
    assert _keras_accepts(model, n)
    assert all(_traces(model, m) == _keras_accepts(model, m)
               for m in range(n, n + 6))


def test_min_input_size_non_monotone_merge():
    # Main path 2x2/2 valid gives floor(n / 2), the 1x1/2 shortcut gives
    # ceil(n / 2): they agree only for even n. (TF would broadcast the 1x1
    # main path onto a 2x2 shortcut at n = 3; that is a bug, not a size.)
    inputs = keras.Input((None, None, 3))
    main = L.Conv2D(4, 2, strides=2)(inputs)
    shortcut = L.Conv2D(4, 1, strides=2)(inputs)
    model = keras.Model(inputs, L.Add(name="add")([main, shortcut]))
    assert min_input_size(model) == 2
    assert [_traces(model, n) for n in range(1, 7)] == [
        False, True, False, True, False, True,
    ]
    with pytest.raises(ValueError, match="'add'.*same shape"):
        trace(model, 3)
    assert _keras_accepts(model, 2) and not _keras_accepts(model, 1)


def test_min_input_size_none_valid():
    # 3x3/2 valid main path vs 1x1/2 shortcut never agree.
    inputs = keras.Input((None, None, 3))
    main = L.Conv2D(4, 3, strides=2)(inputs)
    shortcut = L.Conv2D(4, 1, strides=2)(inputs)
    model = keras.Model(inputs, L.Add()([main, shortcut]))
    with pytest.raises(ValueError, match="max_size=64"):
        min_input_size(model, max_size=64)
    with pytest.raises(ValueError, match="max_size"):
        min_input_size(model, max_size=0)


def test_min_input_size_counts_a_custom_layer_that_empties_the_map():
    # LeNet's trainable subsampling has no Keras size check of its own: at 1x1 it
    # returns a 0x0 map, which must not pass for a shape-preserving layer.
    from kcnn.layers import Subsampling2D

    model = _chain(Subsampling2D(2))
    assert min_input_size(model) == 2
    with pytest.raises(ValueError, match=r"empty output \(0, 0, 3\)"):
        trace(model, 1)
    assert trace(model, 5).rows[-1].output_shape == (2, 2, 3)
