"""Convolution arithmetic and a shape/MACs/receptive-field tracer.

This module is the lecture's "conv arithmetic" made executable:

* `conv_output_size` is the formula ``(N - F + 2P) / S + 1`` (plus Keras'
  ``"valid"``/``"same"`` conventions and dilation), with an optional
  ``strict`` mode that refuses filters which do not tile the input.
* `same_padding` is the ``(F - 1) / 2`` zero padding that keeps the size.
* `trace` walks the layer graph of a functional or Sequential `keras.Model`
  and, for a concrete input size, reports per layer the input/output sizes,
  kernel, stride, padding, parameters, multiply-accumulates (MACs) and the
  receptive field. Sizes are propagated arithmetically from each layer's
  configuration, so tracing never rebuilds the model or runs TensorFlow.
* `min_input_size` finds the smallest square input a (usually fully
  convolutional) trunk accepts.

MACs convention: only `Conv2D`, `Conv2DTranspose`, `DepthwiseConv2D`,
`SeparableConv2D` and `Dense` count, as one multiply-add per weight use:

* ``Conv2D``: ``H_out * W_out * C_out * (k_h * k_w * C_in / groups)``
* ``Conv2DTranspose``: ``H_in * W_in * C_in * k_h * k_w * C_out`` (every input
  position scatters one kernel; its positions are ``1 / stride`` as far apart).
* ``DepthwiseConv2D``: ``H_out * W_out * (C_in * depth_multiplier) * k_h * k_w``
* ``SeparableConv2D``: its depthwise part plus a 1x1 pointwise conv.
* ``Dense``: ``in_features * units`` (times the number of positions if it is
  applied to a non-flat tensor).

Pooling, normalization, activations, merges, resizing and bias additions count 0.
kcnn's `CropToReference` and `ResizeToReference` (`kcnn.dense.layers`) take their
reference's height and width; a crop that does not fit makes the size invalid. A custom
layer that multiplies declares its own count with a method
``count_macs(input_shape, output_shape)`` (shapes without the batch axis), as
kcnn's LeNet-5 layers do.
Only channels-last image tensors ``(H, W, C)`` are supported.
"""

from kcnn.shapes.arithmetic import conv_output_size, pool_output_size, same_padding
from kcnn.shapes.report import LayerRow, Trace
from kcnn.shapes.tracing import count_macs, min_input_size, trace

__all__ = [
    "LayerRow",
    "Trace",
    "conv_output_size",
    "count_macs",
    "min_input_size",
    "pool_output_size",
    "same_padding",
    "trace",
]
