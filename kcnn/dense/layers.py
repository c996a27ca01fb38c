"""What dense-prediction heads need and Keras lacks: a crop and a resize to another
tensor's (unknown until run time) height and width, and the bilinear initialiser of a
transposed convolution.

Imported by `kcnn.layers`, so they are registered with Keras whenever kcnn's layers
are, and a saved FCN or U-Net loads after `import kcnn`.
"""

import keras
import numpy as np
from keras import ops


def bilinear_kernel(size):
    """The `size` x `size` bilinear upsampling filter of the FCN authors' Caffe code
    (`surgery.upsample_filt`, fcn.berkeleyvision.org).

    With factor f = (size + 1) // 2 and centre c = f - 1 (odd size) or f - 0.5 (even
    size), `kernel[i, j] = (1 - |i - c| / f) * (1 - |j - c| / f)`. A transposed
    convolution of stride f with this `2f` x `2f` kernel is bilinear interpolation:
    output row j reads input row x = (j - c) / f, as `sum_i input[i] * max(0, 1 -
    |x - i|)` (zero outside the input). Cropped by f / 2 it is
    `keras.layers.UpSampling2D(f, interpolation="bilinear")` away from the border.
    """
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"`size` must be a positive integer. Received: size={size!r}")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size) - centre) / factor
    return np.outer(ramp, ramp)


@keras.saving.register_keras_serializable(package="kcnn")
class BilinearUpsampling(keras.initializers.Initializer):
    """Initialises a `Conv2DTranspose` kernel (k, k, C, C) to upsample each channel
    on its own by bilinear interpolation (`bilinear_kernel(k)` on the diagonal, zero
    across channels), as `surgery.interp` does for FCN's deconvolutions.

    Reference: Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
    Segmentation", CVPR 2015, section 3.3.
    """

    def __call__(self, shape, dtype=None):
        height, width, out_channels, in_channels = shape
        if height != width or out_channels != in_channels:
            raise ValueError(
                "Bilinear upsampling needs a square kernel with as many outputs as inputs, (k, k, C, C). "
                f"Received: shape={tuple(shape)}"
            )
        kernel = np.zeros(shape, "float32")
        diagonal = np.arange(in_channels)
        kernel[:, :, diagonal, diagonal] = bilinear_kernel(int(height))[:, :, None]
        return ops.convert_to_tensor(kernel, dtype=dtype or "float32")

    def get_config(self):
        return {}


def _check_pair(layer, inputs):
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        raise ValueError(
            f"`{layer.name}` takes [tensor, reference]: a list of two tensors. Received: {type(inputs).__name__}"
        )
    return inputs


@keras.saving.register_keras_serializable(package="kcnn")
class CropToReference(keras.layers.Layer):
    """Crops `x` to the height and width of `reference`, starting `offset` rows and
    columns in: `x[:, offset:offset + H_ref, offset:offset + W_ref]`, called on
    `[x, reference]`.

    Caffe's Crop layer (axis 2), which FCN uses to align an upsampled score map with
    a skip or with the input; the offset comes from the two tensors' geometry
    (`kcnn.dense.fcn_vgg`). Keras' `Cropping2D` takes fixed amounts, so it cannot crop to
    a size known only when the model runs (input_shape=(None, None, 3)).
    """

    def __init__(self, offset=0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError(f"`offset` must be a non-negative integer. Received: offset={offset!r}")
        self.offset = offset

    def call(self, inputs):
        x, reference = _check_pair(self, inputs)
        shape = ops.shape(reference)
        start = self.offset
        return x[:, start : start + shape[1], start : start + shape[2], :]

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])

    def get_config(self):
        return {**super().get_config(), "offset": self.offset}


@keras.saving.register_keras_serializable(package="kcnn")
class ResizeToReference(keras.layers.Layer):
    """Resizes `x` to the height and width of `reference` (called on `[x, reference]`)
    by `keras.ops.image.resize` (bilinear with half-pixel centres by default: for an
    exact factor f, `UpSampling2D(f, interpolation="bilinear")`).

    A U-Net decoder joins a coarse map to a skip whose size is about twice its own:
    exactly twice for a power-of-two input on 'same'-padded networks, otherwise off by
    a row (ceil(H / 2**n) sizes) or more (AlexNet's and LeNet's valid convolutions
    drop a border), so it resizes to the skip's size rather than by a fixed factor.
    """

    def __init__(self, interpolation="bilinear", **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"`interpolation` must be 'bilinear' or 'nearest'. Received: interpolation={interpolation!r}"
            )
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = _check_pair(self, inputs)
        shape = ops.shape(reference)
        return ops.image.resize(x, (shape[1], shape[2]), interpolation=self.interpolation)

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}
