"""FCN-32s, FCN-16s and FCN-8s: VGG-16 made fully convolutional, its class scores
upsampled back to the image and sharpened by skips from pool4 and pool3.

Reference: Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015, sections 3-4 and figure 3; the layers, initialisation and
crop offsets are the authors' Caffe nets (fcn.berkeleyvision.org, `voc-fcn8s/net.py`,
`surgery.py`), and the layer names theirs after VGG-16's (`block3_pool` is pool3):

- VGG-16's 13 convolutions, the first padded by 100 pixels (Caffe's `pad: 100` on
  conv1_1, here `block1_pad` ZeroPadding2D(99) plus the 'same' 3x3's own 1) so that
  fc6's 7x7 window fits any input, and max pools that round up (Caffe's ceil mode,
  which is TensorFlow's 'same' for 2x2/2 windows);
- `fc6` (7x7, 4096) and `fc7` (1x1, 4096) convolutions: VGG-16's fully connected fc1
  and fc2 with their weights reshaped ((25088, 4096) -> (7, 7, 512, 4096)), each with
  ReLU and dropout 0.5;
- `score_fr`, `score_pool4`, `score_pool3`: 1x1 class scores at strides 32, 16, 8,
  zero-initialised (the paper);
- transposed convolutions without bias, initialised to bilinear upsampling and fixed
  (Caffe's `lr_mult: 0`; set `trainable` to learn them): `upscore2` and
  `upscore_pool4` (4x4/2), and the last one to the image, `upscore` (64x64/32,
  FCN-32s), `upscore16` (32x32/16) or `upscore8` (16x16/8);
- crops (`kcnn.dense.layers.CropToReference`, Caffe's Crop) that align a skip's
  scores with the upsampled ones and the result with the input: offsets 19 (FCN-32s),
  5 and 27 (16s), 5, 9 and 31 (8s), computed here from the layers' geometry as
  Caffe's `coord_map` does (`crop_offset`), so the output has the input's size
  for every input of at least 1x1.

FCN-8s with 21 classes has 134,489,759 parameters, as the Caffe net and its PyTorch
port (wkentaro/pytorch-fcn `FCN8s`) have.

`width_multiplier` (not in the paper; MobileNet's "width multiplier", Howard et al. 2017)
narrows every convolution for experiments a CPU can afford: the 100-pixel padding makes
even a 64x64 input cost VGG-16 at 262x262, 22 G multiply-adds, and `width_multiplier=1/8`
divides that by ~64. The layers, strides, crops and names stay the paper's.
"""

import fractions
import numbers

import keras
import numpy as np
from keras import layers

from kcnn import blocks
from kcnn._keras_graph import layer_call
from kcnn.dense._base import DEFAULT_CLASSES, check_contract, predictions, segmentation_builder
from kcnn.dense.layers import BilinearUpsampling, CropToReference
from kcnn.models._base import spec_table
from kcnn.models._checks import check_fraction

__all__ = ["crop_offset", "fcn", "fcn8s", "fcn16s", "fcn32s", "from_vgg16"]

# VGG-16 (configuration D): (width, 3x3 convolutions) of each stage.
_VGG16 = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
# By the stride of the finest scores fused: the pools whose scores are, in order, and
# the names of the 2x upsamplings before each and of the last upsampling.
_SKIPS = {32: (), 16: (4,), 8: (4, 3)}
_UPSCORE_2X = ("upscore2", "upscore_pool4")
_UPSCORE_LAST = {32: "upscore", 16: "upscore16", 8: "upscore8"}
_INPUT_SHAPE = (224, 224, 3)


@segmentation_builder
def fcn(
    *,
    stride=8,
    dropout=0.5,
    width_multiplier=1.0,
    classes=DEFAULT_CLASSES,
    input_shape=None,
    weights=None,
    classifier_activation="softmax",
    name=None,
):
    """A fully convolutional VGG-16 (Long et al. 2015; see the module for the layers).

    Args:
        stride: the finest scores fused into the output: 32 (FCN-32s: fc7's only),
            16 (FCN-16s: and pool4's) or 8 (FCN-8s: and pool3's).
        dropout: after fc6 and fc7 (the paper's 0.5).
        width_multiplier: every convolution's width times this, rounded, at least 1:
            1.0 is the paper's net (and the only one `weights` load into); 1/8 gives
            8 to 64 filters and a 512-wide fc6/fc7, a net a CPU trains in minutes.
        classes: per-pixel classes (default 21, PASCAL VOC with background).
        input_shape: (H, W, 3); default (224, 224, 3); (None, None, 3) takes any size.
        weights: VGG-16's: None, a tag of its weight sets ("imagenet", `kcnn weights
            list`) or a file of a VGG-16 classifier at 224x224 (what `kcnn.vgg16(weights=...)`
            loads, or a `.keras` file with any number of classes): its convolutions load
            by name and its fc1/fc2 become fc6/fc7 (`from_vgg16`).
        classifier_activation: "softmax" (per-pixel probabilities) or None (logits).
        name: the model's name (default "fcn").

    Returns:
        A functional `keras.Model`: (batch, H, W, 3) -> (batch, H, W, classes).
    """
    if not isinstance(stride, numbers.Integral) or isinstance(stride, bool) or stride not in _SKIPS:
        raise ValueError(f"`stride` must be 32, 16 or 8 (FCN-32s, -16s, -8s). Received: stride={stride!r}")
    stride = int(stride)
    dropout = check_fraction("dropout", dropout)
    width_multiplier = _check_width_multiplier(width_multiplier, weights)
    classes, shape, weights = check_contract(
        name="fcn" if name is None else name,
        classes=classes,
        input_shape=input_shape,
        default_input_shape=_INPUT_SHAPE,
        weights=weights,
        backbone="vgg16",
        classifier_activation=classifier_activation,
    )
    inputs = keras.Input(shape, name="input")
    x = layers.ZeroPadding2D(99, name="block1_pad")(inputs)
    pools = {}
    for stage, (width, convs) in enumerate(_VGG16, start=1):
        for index in range(1, convs + 1):
            x = blocks.conv_bn_act(
                x, _scaled(width, width_multiplier), 3, name=f"block{stage}_conv{index}", conv_suffix="", batch_norm=False
            )
        x = pools[stage] = layers.MaxPooling2D(2, padding="same", name=f"block{stage}_pool")(x)
    for fc, size in (("fc6", 7), ("fc7", 1)):
        x = layers.Conv2D(_scaled(4096, width_multiplier), size, activation="relu", name=fc)(x)
        x = layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    scores = _scores(x, classes, "score_fr")
    for pool, upscore in zip(_SKIPS[stride], _UPSCORE_2X):
        upsampled = _upsample(scores, classes, 2, upscore)
        skip = _scores(pools[pool], classes, f"score_pool{pool}")
        skip = CropToReference(crop_offset(skip, upsampled), name=f"score_pool{pool}c")([skip, upsampled])
        scores = layers.Add(name=f"fuse_pool{pool}")([upsampled, skip])
    upsampled = _upsample(scores, classes, stride, _UPSCORE_LAST[stride])
    scores = CropToReference(crop_offset(upsampled, inputs), name="score")([upsampled, inputs])
    model = keras.Model(inputs, predictions(scores, classifier_activation), name="fcn" if name is None else name)
    if weights is not None:
        from_vgg16(model, weights)
    return model


def _check_width_multiplier(value, weights):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(f"`width_multiplier` must be a number in (0, 1]. Received: width_multiplier={value!r}")
    if value != 1 and weights is not None:
        raise ValueError(
            "VGG-16's weights load into the paper's widths only: pass `width_multiplier=1.0` or `weights=None`. "
            f"Received: width_multiplier={value!r}, weights={weights!r}"
        )
    return float(value)


def _scaled(width, multiplier):
    return max(1, round(width * multiplier))


def _scores(x, classes, name):
    return layers.Conv2D(classes, 1, kernel_initializer="zeros", name=name)(x)


def _upsample(x, classes, factor, name):
    # A 2f x 2f kernel of stride f: bilinear interpolation (kcnn.dense.layers.bilinear_kernel).
    return layers.Conv2DTranspose(
        classes,
        2 * factor,
        strides=factor,
        use_bias=False,
        kernel_initializer=BilinearUpsampling(),
        trainable=False,
        name=name,
    )(x)


def crop_offset(tensor, reference):
    """Where `reference`'s first position falls in `tensor`: the rows and columns to
    crop off `tensor`'s top and left to align the two (Caffe's `coord_map.crop`).

    Both tensors' positions map to input pixels as `scale * i + start` (`_grid`); the
    offset is `(start_ref - start) / scale`, which must be a whole, non-negative number
    of positions at the same scale.
    """
    (scale, start), (ref_scale, ref_start) = _grid(tensor), _grid(reference)
    offset = (ref_start - start) / scale
    if scale != ref_scale or offset.denominator != 1 or offset < 0:
        raise ValueError(
            f"The maps cannot be aligned by a crop: positions {scale}i + {start} and {ref_scale}i + {ref_start} in input pixels"
        )
    return int(offset)


def _grid(tensor):
    """(scale, start): position i of `tensor` is centred on input pixel scale * i + start.

    Follows each layer's first input back to the model's input: padding moves the
    start, a window of k (dilated) centres on its middle, a transposed convolution
    divides the scale by its stride; elementwise layers keep the grid.
    """
    call = layer_call(tensor)
    if call is None or call.is_input:
        return fractions.Fraction(1), fractions.Fraction(0)
    scale, start = _grid(call.inputs[0])
    layer = call.layer
    if isinstance(layer, layers.ZeroPadding2D):
        return scale, start - scale * layer.padding[0][0]
    if isinstance(layer, CropToReference):
        return scale, start + scale * layer.offset
    if isinstance(layer, layers.Conv2DTranspose):
        kernel, stride = layer.kernel_size[0], layer.strides[0]
        if layer.padding != "valid" or layer.output_padding is not None:
            raise ValueError(f"`{layer.name}`: only 'valid' transposed convolutions have a fixed grid")
        return scale / stride, start - scale * fractions.Fraction(kernel - 1, 2) / stride
    if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D)):
        kernel = layer.kernel_size[0] if isinstance(layer, layers.Conv2D) else layer.pool_size[0]
        dilation = layer.dilation_rate[0] if isinstance(layer, layers.Conv2D) else 1
        extent, stride = dilation * (kernel - 1) + 1, layer.strides[0]
        return scale * stride, start + scale * (fractions.Fraction(extent - 1, 2) - _top_padding(layer, extent, stride))
    return scale, start


def _top_padding(layer, extent, stride):
    """Rows TensorFlow pads above: none for 'valid'; for 'same' (k - s + r) // 2 with
    r = -N mod s, which is the same for every input size N when s <= 2 (stride-1
    convolutions, 2x2/2 pools)."""
    if layer.padding == "valid":
        return 0
    if (extent - stride) // 2 != (extent - 1) // 2:
        raise ValueError(f"`{layer.name}`: its 'same' padding depends on the input size")
    return (extent - 1) // 2


def from_vgg16(model, weights):
    """Loads a VGG-16 classifier's weights into an FCN: its 13 convolutions by name,
    its fully connected fc1 and fc2 as the 7x7 fc6 and 1x1 fc7 convolutions (the same
    weights, reshaped: a 7x7x512 map flattened in (row, column, channel) order is what
    fc1 reads and what fc6's window sees).

    Args:
        model: an FCN (`fcn`).
        weights: a VGG-16 classifier (a built `keras.Model`, any classes), a tag of
            VGG-16's weight sets, a file `kcnn.vgg16(weights=...)` loads, or a `.keras`
            file of any VGG-16 classifier.

    Raises:
        ValueError: the source has no fc1/fc2 of a 224x224 VGG-16.
    """
    from kcnn import registry
    from kcnn.weights import transfer

    if isinstance(weights, keras.Model):
        source = weights
    elif isinstance(weights, str) and weights.endswith(".keras"):
        source = keras.saving.load_model(weights, compile=False)
    else:
        source = registry.create_model("vgg16", weights=weights)
    values = {}
    for dense, conv in (("fc1", "fc6"), ("fc2", "fc7")):
        kernel, bias = _dense_weights(source, dense)
        height, width, channels, units = model.get_layer(conv).kernel.shape
        if kernel.shape != (height * width * channels, units):
            raise ValueError(
                f"`{conv}` is `{dense}` of a VGG-16 at 224x224 (a 7x7x512 map flattened): expected a kernel of "
                f"{(height * width * channels, units)}. Received: {kernel.shape} in `{source.name}`"
            )
        values[conv] = [kernel.reshape(height, width, channels, units), bias]
    for stage, (_, convs) in enumerate(_VGG16, start=1):
        for index in range(1, convs + 1):
            values[f"block{stage}_conv{index}"] = source.get_layer(f"block{stage}_conv{index}").get_weights()
    for layer, weights_of_layer in values.items():
        model.get_layer(layer).set_weights(weights_of_layer)
    weight_set = transfer.weight_set_of(source)
    if weight_set is not None:
        transfer.remember(model, weight_set)


def _dense_weights(source, name):
    try:
        return source.get_layer(name).get_weights()
    except ValueError:
        raise ValueError(
            f"FCN's fc6 and fc7 are VGG-16's fc1 and fc2, which `{source.name}` lacks (a model without its top?). "
            f"Received: layers {[layer.name for layer in source.layers][-6:]} (last 6)"
        ) from None


SPECS = spec_table(
    family="fcn",
    builder=fcn,
    year=2015,
    paper="Long et al., Fully Convolutional Networks for Semantic Segmentation",
    default_input_shape=_INPUT_SHAPE,
    rows={"fcn32s": dict(stride=32), "fcn16s": dict(stride=16), "fcn8s": dict(stride=8)},
    task="segmentation",
)

fcn32s = SPECS["fcn32s"].function()
fcn16s = SPECS["fcn16s"].function()
fcn8s = SPECS["fcn8s"].function()
