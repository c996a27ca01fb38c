"""Batch normalization folded into the convolution before it, for inference.

At inference a BatchNormalization layer is an affine map per channel, `gamma * (x -
mean) / sqrt(variance + epsilon) + beta`, with fixed statistics; after a convolution
(or a dense layer) without activation it can be folded into that layer's kernel and
bias (Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", section 3.2), as TFLite, ONNX Runtime and
`torch.ao.quantization.fuse_modules` do. The network computes the same function (up
to rounding) with one operation fewer per pair; under mixed precision it also skips the
float32 casts around each normalization (`kcnn.layers.FusedBatchNormalization`
computes in float32).
"""

from __future__ import annotations

import functools

import keras

from kcnn._keras_graph import calls_of, producer

#: The layers a BatchNormalization folds into: their kernel's last axis is the
#: output channel, the axis the normalization scales.
FOLDS_INTO = (keras.layers.Conv2D, keras.layers.Dense)


class FoldedNormalization(keras.layers.Layer):
    """What a folded BatchNormalization leaves in the copy: its name, and its input
    passed on (called as the normalization was, with `training` and `mask`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def foldable(model: keras.Model) -> dict[str, str]:
    """The pairs of `model`'s layers that fold: `{convolution or dense layer's name:
    its BatchNormalization's name}`.

    A pair folds when the normalization is over the last axis and called once, on the
    output of a `Conv2D` or `Dense` layer (not a subclass) that has no activation, is
    called once, and whose output goes nowhere else (no other layer, no model output).
    Nested models are left whole.
    """
    uses: dict[int, int] = {}
    for layer in model.layers:
        for call in calls_of(layer):
            for tensor in call.inputs:
                uses[id(tensor)] = uses.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        uses[id(tensor)] = uses.get(id(tensor), 0) + 1
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(calls_of(layer)) != 1:
            continue
        (call,) = calls_of(layer)
        source = producer(call.inputs[0])
        rank = len(call.inputs[0].shape)
        if (
            type(source) in FOLDS_INTO
            and layer.axis in (-1, rank - 1)
            and not getattr(layer, "renorm", False)
            and source.get_config()["activation"] == "linear"
            and len(calls_of(source)) == 1
            and uses.get(id(call.inputs[0])) == 1
        ):
            pairs[source.name] = layer.name
    return pairs


def folded_copy(model: keras.Model, precision: str = "float32") -> tuple[keras.Model, dict[str, str]]:
    """A copy of `model` computing under the dtype policy `precision` (float32
    outputs) with its `foldable` pairs folded, and `model`'s weights.

    Returns:
        `(copy, pairs)`: `copy_weights(model, copy, pairs)` gives it `model`'s weights
        again after they changed.
    """
    from kcnn.train.distribute import clone_with_policy

    pairs = foldable(model)
    copy = clone_with_policy(model, precision, rebuild=functools.partial(rebuild, pairs=pairs))
    copy_weights(model, copy, pairs)
    return copy, pairs


def rebuild(layer, config: dict, pairs: dict[str, str]):
    """`layer` rebuilt from `config` for a model whose `pairs` are folded: a folded
    convolution gains a bias, a folded normalization becomes an `Identity` of the
    same name and dtype policy (`FoldedNormalization`)."""
    if layer.name in pairs:
        config = {**config, "use_bias": True}
    elif layer.name in pairs.values():
        return FoldedNormalization(name=layer.name, dtype=config.get("dtype"))
    return layer.__class__.from_config(config)


def copy_weights(source: keras.Model, target: keras.Model, pairs: dict[str, str]) -> None:
    """Gives `target`, a copy of `source` with `pairs` folded (`rebuild`), `source`'s
    current weights: folded into the convolutions where they pair, as they are
    elsewhere."""
    folded = set(pairs.values())
    for layer in source.layers:
        if layer.name in folded or not layer.weights:
            continue
        copy = target.get_layer(layer.name)
        if layer.name not in pairs:
            for value, variable in zip(layer.weights, copy.weights, strict=True):
                variable.assign(value)
            continue
        kernel, bias = fold(layer, source.get_layer(pairs[layer.name]))
        copy.kernel.assign(kernel)
        copy.bias.assign(bias)


def fold(layer, norm) -> tuple:
    """The kernel and bias of `layer` followed by the BatchNormalization `norm` at
    inference: `kernel * s` and `(bias - mean) * s + beta`, with `s = gamma /
    sqrt(moving_variance + epsilon)` per output channel (float32)."""
    ops = keras.ops
    scale = ops.rsqrt(ops.add(ops.cast(norm.moving_variance, "float32"), norm.epsilon))
    if norm.scale:
        scale = ops.multiply(scale, ops.cast(norm.gamma, "float32"))
    bias = ops.cast(layer.bias, "float32") if layer.use_bias else ops.zeros_like(scale)
    bias = ops.multiply(ops.subtract(bias, ops.cast(norm.moving_mean, "float32")), scale)
    if norm.center:
        bias = ops.add(bias, ops.cast(norm.beta, "float32"))
    return ops.multiply(ops.cast(layer.kernel, "float32"), scale), bias
