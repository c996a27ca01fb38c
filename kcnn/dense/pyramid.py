"""Backbones as feature pyramids: the maps a network computes at strides 1, 2, 4, ...,
32, named by level (`P3` = stride 8, KerasHub's names), for heads that read several
scales at once.

The rule, one for every family: **level n is the deepest feature map of the network's
main path whose positions are 2**n input pixels apart.**

- *Stride* is the distance between adjacent positions in input pixels: the product of
  the strides before the map (`kcnn.shapes.trace`'s `jump`). It is exact, and a power
  of two in every kcnn family. The ratio of sizes is not: AlexNet's conv1 maps 227
  pixels to 55 positions (4.13), yet the positions are exactly 4 pixels apart; the
  valid 11x11 window takes a 5-pixel border, as LeNet's valid 5x5 convolutions take
  2 pixels. Such a map is smaller than input / stride; `feature_info` gives the exact
  stride and the map its layer computes.
- *Main path*: the layers every path from the input to the (first) output goes
  through: a ResNet block's output, not its branches; an inception module's concat.
  Padding layers only make room for the next window, and input normalisation only
  rescales the image: neither is a feature.
- *Deepest*: the last such map before the next stride, i.e. a stage's output (VGG's
  `block4_conv3` is P3, not `block3_pool`; ResNet's `conv3_block4_out` is P3, as
  KerasHub's), so a level holds everything the network computes at its scale.

A map at a stride that is not a power of two (a ConvNet with `strides=3`) is no level.
A level the network does not have is an error that lists those it has, not silently
dropped (timm's `out_indices`, timm#2242).
"""

import dataclasses
import re

import keras

from kcnn import shapes
from kcnn._keras_graph import layer_call, producer
from kcnn.layers import ImageNormalization

__all__ = ["Level", "backbone", "pyramid_levels"]

# Layers that move or normalise the image without computing features (a fine-tuned
# model's first layer normalises its input: `kcnn.train.fine_tune`).
_NOT_FEATURES = (
    keras.layers.InputLayer, keras.layers.ZeroPadding2D, keras.layers.Cropping2D,
    keras.layers.Rescaling, keras.layers.Normalization, ImageNormalization,
)
_LEVEL_NAME = re.compile(r"P(\d+)")


@dataclasses.dataclass(frozen=True)
class Level:
    """One level of a backbone's pyramid (timm's `feature_info`, KerasHub's
    `pyramid_outputs` keys).

    Attributes:
        name: "P<n>".
        layer: the layer whose output it is (a layer of the classifier).
        channels: its channels.
        stride: input pixels between adjacent positions, 2**n exactly.
    """

    name: str
    layer: str
    channels: int
    stride: int

    def __str__(self):
        return f"{self.name} (stride {self.stride}, {self.layer}, {self.channels} channels)"


def pyramid_levels(model):
    """Every level of `model`'s pyramid (see the module's rule), shallowest first.

    Args:
        model: a functional `keras.Model` with one image input, e.g. a kcnn classifier
            (with or without its top; a GoogLeNet's auxiliary heads are ignored).

    Returns:
        A tuple of `Level`s.

    Raises:
        ValueError: the model has no feature map at a power-of-two stride (an MLP).
    """
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        raise ValueError(
            f"A pyramid needs a model with one (H, W, C) image input. Received: `{model.name}` with inputs "
            f"{[tuple(t.shape) for t in model.inputs]}"
        )
    main = model if len(model.outputs) == 1 else keras.Model(model.inputs, model.outputs[0])
    declared = tuple(model.inputs[0].shape[1:3])
    size = declared if None not in declared else shapes.min_input_size(main)
    rows = {row.name: row for row in shapes.trace(main, size).rows}
    deepest = {}
    for layer in _main_path(main):
        row = rows[layer.name]
        jump = row.jump
        if isinstance(layer, _NOT_FEATURES) or len(row.output_shape) != 3 or jump is None:
            continue
        stride = jump[0]
        if jump[1] != stride or not isinstance(stride, int) or stride & (stride - 1):
            continue
        level = stride.bit_length() - 1
        deepest[level] = Level(f"P{level}", layer.name, int(row.output_shape[2]), stride)
    if not deepest:
        raise ValueError(
            f"`{model.name}` has no feature map at a power-of-two stride (no spatial stages): there is no pyramid "
            f"to take. Received: model={model.name!r}"
        )
    return tuple(deepest[level] for level in sorted(deepest))


def _main_path(model):
    """The layers every path from the input to the output goes through, in order.

    `model.layers` is in topological order; a layer at position i is on every path
    exactly when no edge of the graph jumps over i (from before it to after it).
    """
    layers = model.layers
    position = {layer.name: i for i, layer in enumerate(layers)}
    reach = [0] * len(layers)  # the furthest position an edge from position i reaches
    for i, layer in enumerate(layers):
        call = layer_call(layer.output) if i else None
        for tensor in call.inputs if call is not None else ():
            source = position[producer(tensor).name]
            reach[source] = max(reach[source], i)
    furthest = 0  # the furthest an edge from before the current position reaches
    for i, layer in enumerate(layers):
        if furthest <= i:
            yield layer
        furthest = max(furthest, reach[i])


def backbone(model, /, levels=None, **builder_kwargs):
    """A classifier's feature pyramid: a functional model whose outputs are the dict
    `{"P2": ..., "P5": ...}` of its levels (see the module's rule).

    It shares the classifier's layers and their names: built from a name, the
    classifier is built with `builder_kwargs` (so `weights=` takes the same tags and
    files as the classifier; `include_top` defaults to False, give True for a file
    saved with the top); built from a model, training the pyramid trains the model.

        pyramid = kcnn.backbone("resnet50", levels=("P3", "P4", "P5"), weights="imagenet")
        pyramid.feature_info   # (Level('P3', 'conv3_block4_out', 512, 8), ...)
        features = pyramid(images)  # {"P3": (N, 28, 28, 512), ...} at 224x224

    Args:
        model: a registered classifier's name (`kcnn.list_models()`) or a built
            functional model (`pyramid_levels`).
        levels: the levels to output, e.g. ("P3", "P4", "P5"), or one name; None =
            every level the network has.
        **builder_kwargs: the classifier builder's arguments, for a name:
            `input_shape` ((None, None, C) for a fully convolutional trunk),
            `weights`, `variant`, ResNet's `output_stride`, ...

    Returns:
        A `keras.Model` named `<model>_backbone` with dict outputs, shallowest first,
        and a `feature_info` attribute: the tuple of its `Level`s.

    Raises:
        ValueError: a level the network does not have (the message lists those it
            has), a segmentation model's name, builder arguments with a built model.
    """
    classifier = _classifier(model, builder_kwargs)
    available = pyramid_levels(classifier)
    selected = _select(available, levels, classifier.name)
    outputs = {level.name: classifier.get_layer(level.layer).output for level in selected}
    pyramid = keras.Model(classifier.input, outputs, name=f"{classifier.name}_backbone")
    pyramid.feature_info = selected
    from kcnn.weights import transfer

    weight_set = transfer.weight_set_of(classifier)
    if weight_set is not None:
        transfer.remember(pyramid, weight_set)
    return pyramid


def _classifier(model, builder_kwargs):
    from kcnn import registry

    if isinstance(model, keras.Model):
        if builder_kwargs:
            raise TypeError(
                "Builder arguments apply only when `model` is a registered name; this model is built. "
                f"Received: {', '.join(f'{key}={value!r}' for key, value in builder_kwargs.items())}"
            )
        return model
    if not isinstance(model, str):
        raise ValueError(f"`model` must be a registered model name or a keras.Model. Received: model={model!r}")
    spec = registry.get_spec(model)
    if spec.task != "classification":
        raise ValueError(
            f"A backbone is a classifier's trunk; `{model}` is a {spec.task} model. Received: model={model!r}"
        )
    builder_kwargs.setdefault("include_top", False)
    return spec.build(**builder_kwargs)


def _select(available, levels, model_name):
    """The `Level`s named by `levels` (None: all), in level order."""
    if levels is None:
        return available
    names = (levels,) if isinstance(levels, str) else levels
    if not isinstance(names, (list, tuple)) or not names or not all(
        isinstance(name, str) and _LEVEL_NAME.fullmatch(name) for name in names
    ):
        raise ValueError(
            f"`levels` must be None or level names such as ('P3', 'P4', 'P5'). Received: levels={levels!r}"
        )
    by_name = {level.name: level for level in available}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(
            f"`{model_name}` has no level {', '.join(missing)}: its levels are "
            f"{'; '.join(map(str, available))}. Received: levels={levels!r}"
        )
    return tuple(level for level in available if level.name in set(names))

