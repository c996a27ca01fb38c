"""Moving weights into a model: from another model by layer name, from a file (Keras'
own formats, keras.applications' legacy `.h5`, torchvision/timm `.safetensors`), or
from a weight set of the table.

Layer names are public API (see the design notes) precisely so that this works: a
keras.applications ResNet50 and `kcnn.resnet50()` share every weighted layer's name,
so one's weights load into the other.
"""

import logging
import os
import re
import weakref

import keras

from kcnn._files import load_keras_model
from kcnn._keras_graph import leaf_layers
from kcnn.weights import convert, formats, store

__all__ = ["assign", "load_weights", "transfer_weights", "weight_set_of"]

logger = logging.getLogger("kcnn")

# Layers a model without its top lacks; a file with a top may still load into it.
_TOP_LAYERS = frozenset({"fc1", "fc2", "predictions"})
# The weight set each model built with `weights=<tag>` holds: what fine-tuning and
# `preprocess` read the normalization from. Weak: a model's lifetime is its user's.
_WEIGHT_SETS = weakref.WeakKeyDictionary()


def _weighted_layers(model):
    return {layer.name: layer for layer in leaf_layers(model) if layer.weights}


def transfer_weights(source, target, *, skip_mismatch=False, require_all=False):
    """Copies weights from `source` into `target` for every layer name they share.

    Args:
        source: a Keras model (or a path to a `.keras` file) to copy from.
        target: the Keras model to copy into (changed in place).
        skip_mismatch: skip shared layers whose weight shapes differ instead of raising.
        require_all: raise if a weighted layer of `target` has no counterpart.

    Returns:
        The names of the layers whose weights were copied.

    Raises:
        ValueError: a shared layer's weights differ in number or shape (unless
            `skip_mismatch`), or no layer is shared at all.
    """
    if isinstance(source, (str, os.PathLike)):
        source = load_keras_model(source, advice="Use a copy of it or save the source model again.")
    source_layers = _weighted_layers(source)
    target_layers = _weighted_layers(target)
    missing = sorted(set(target_layers) - set(source_layers))
    if require_all and missing:
        raise ValueError(
            f"{len(missing)} weighted layers of `{target.name}` have no counterpart in "
            f"`{source.name}`, e.g. {missing[:5]}"
        )
    copied = []
    for name, layer in target_layers.items():
        if name not in source_layers:
            continue
        values = source_layers[name].get_weights()
        expected = [tuple(weight.shape) for weight in layer.weights]
        received = [tuple(value.shape) for value in values]
        if expected != received:
            if skip_mismatch:
                continue
            hint = ""
            if name.endswith("predictions"):
                hint = (
                    " The classifier was trained for a different number of classes: pass "
                    "the same `classes`, or include_top=False to load the backbone only."
                )
            raise ValueError(
                f"Layer `{name}` cannot take the source's weights: expected shapes "
                f"{expected}.{hint} Received: shapes {received}"
            )
        layer.set_weights(values)
        copied.append(name)
    if not copied:
        raise ValueError(
            f"`{source.name}` and `{target.name}` share no weighted layer name, so nothing "
            "was transferred."
        )
    return copied


def weight_set_of(model):
    """The table row (`WeightSet`) whose weights `model` was built with
    (`weights="imagenet"`, ...), else None."""
    return _WEIGHT_SETS.get(model)


def remember(model, weight_set):
    _WEIGHT_SETS[model] = weight_set


def load_weights(model, path, *, weight_set=None):
    """Loads a weights file into a built kcnn model, with the preprocessing it needs.

    - `.keras`: matched by layer name (`transfer_weights`), so its head may be absent
      (include_top=False).
    - `.weights.h5`: Keras 3 weights, by Keras' own loader; a file whose layer classes
      differ from kcnn's (keras.applications' BatchNormalization where kcnn has its
      fused one) is read in Keras' layout instead, layer by layer in order. The model
      must be built with the same arguments.
    - `.h5`: Keras 2's legacy layout, as keras.applications publishes ResNet50/101/152
      and VGG16/19 (top and no-top files), by layer name.
    - `.safetensors`: torchvision/timm tensor names (ResNet v1.5, VGG, VGG-BN),
      converted (`kcnn.weights.convert`).
    - `.onnx`: the ONNX Model Zoo's BVLC AlexNet and GoogLeNet, matched by the
      graph's structure into `variant="caffe"` models (`kcnn.weights.convert_onnx`).

    The file's weight set (the table row it is, by its hash or its name, see
    `kcnn.weights.store.identify`, or `weight_set` when given) is remembered with the
    model, so that `kcnn.train.fine_tune` and `preprocess(..., weights=model)`
    normalize images as the weights expect. A file that is no row of the table is
    loaded with no preprocessing attached, and a warning says so.

    Args:
        model: the kcnn model, built with the arguments the weights need.
        path: the file.
        weight_set: the table row (or its name, "resnet34.tv_in1k") the file is, when
            neither its hash nor its name tells.

    Every weighted layer of the model must receive weights (`assign`).
    """
    path = os.fspath(path)
    if isinstance(weight_set, str):
        from kcnn.weights import table

        weight_set = table.get_weight_set(weight_set)
    how = "declared"
    if weight_set is None:
        weight_set, how = store.identify(path)
    names = _load(model, path)
    if weight_set is None:
        _WEIGHT_SETS.pop(model, None)  # What it held before is gone.
        logger.warning(
            "%s is no weight set of the table (by hash or file name), so `%s` keeps no preprocessing of its "
            "own: kcnn.train.fine_tune will feed it images scaled to [0, 1] (x / 255, normalization 'unit', unless "
            "data_options say otherwise). If the "
            "file is a published set, name it as `kcnn weights list` does (<weights>.<format>) or pass "
            "kcnn.weights.load_weights(model, path, weight_set='<weights>')",
            path, model.name,
        )
    else:
        if how.startswith("name, but"):
            logger.warning("%s is named as %s's file, %s; loaded as that set", path, weight_set.name, how[len("name, but "):])
        logger.info("%s is %s (by %s): %s preprocessing", path, weight_set.name, how, weight_set.preprocessing.mode)
        remember(model, weight_set)
    return names


def _load(model, path):
    if path.endswith(".keras"):
        return transfer_weights(path, model)
    if path.endswith(".safetensors"):
        return assign(model, _from_torch(model, formats.read_safetensors(path), path), source=path)
    if path.endswith(".h5") and not path.endswith(".weights.h5"):
        return assign(model, formats.read_keras_h5(path), source=path)
    if path.endswith(".onnx"):
        from kcnn.weights import convert_onnx

        try:
            values = convert_onnx.from_onnx(formats.read_onnx(path), model, path)
        except convert.WeightMapError as error:
            raise convert.WeightMapError(f"{path} does not fit `{model.name}`: {error}") from None
        return assign(model, values, source=path)
    return _load_keras3(model, path)


def _load_keras3(model, path):
    listed = formats.read_keras3_h5(path)  # A damaged file is refused here, with its name.
    weighted = {key for key, values in listed.items() if values}
    keyed = _keras3_keys(model)
    if weighted == set(keyed) and set(keyed) != set(_keras3_keys(model, aliases={})):
        # Written by a model with Keras' class where kcnn has its drop-in (a
        # keras.applications ResNet's BatchNormalization): the same layers in order.
        stored = formats.read_keras3_h5(path, keys=set(keyed))
        return assign(model, {layer.name: stored[key] for key, layer in keyed.items()}, source=path)
    try:
        model.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"The weights in {path!r} do not fit `{model.name}` as built: a `.weights.h5` "
            "file must come from a model built with the same arguments (for another head, "
            f"save a `.keras` file, which loads by layer name). Received: {error}"
        ) from None
    return [layer.name for layer in leaf_layers(model) if layer.weights]


# kcnn layers that are drop-in replacements of a Keras class: a `.weights.h5` file
# written by a model with the Keras class keys them under that class's name.
_KERAS_CLASS_OF = {"FusedBatchNormalization": "BatchNormalization"}


def _keras3_keys(model, aliases=_KERAS_CLASS_OF):
    """{key: layer} of the model's weighted layers as a Keras 3 `.weights.h5` file
    keys them: the layer's class name in snake case, numbered from the second layer of
    that class on (`conv2d`, `conv2d_1`), in `model.layers` order; a kcnn class under
    the Keras class it replaces."""
    counts, keys = {}, {}
    for layer in model.layers:
        name = aliases.get(type(layer).__name__, type(layer).__name__)
        name = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))).lower()
        count = counts.get(name, -1) + 1
        counts[name] = count
        if layer.weights:
            keys[name if count == 0 else f"{name}_{count}"] = layer
    return keys


def _from_torch(model, tensors, path):
    layers = _weighted_layers(model)
    try:
        if "conv1_conv" in layers:
            return convert.from_torch(tensors, family="resnet")
        if "block1_conv1" in layers:
            convs = [name for name, layer in layers.items() if isinstance(layer, keras.layers.Conv2D)]
            feature_shape = None
            names = {layer.name: layer for layer in leaf_layers(model)}
            if "flatten" in names:
                feature_shape = tuple(names["flatten"].input.shape[1:])
            return convert.from_torch(tensors, family="vgg", conv_layers=convs, feature_shape=feature_shape)
    except convert.WeightMapError as error:
        raise convert.WeightMapError(f"{path} does not fit `{model.name}`: {error}") from None
    raise ValueError(
        f"torchvision/timm weights map onto kcnn's ResNets and VGGs, whose layers `{model.name}` does not have "
        "(no `conv1_conv` or `block1_conv1`)"
    )


def assign(model, values, *, source):
    """Sets every weighted layer of `model` from `values` ({layer name: weights in the
    layer's order}).

    Source layers the model lacks are allowed only for its top (`fc1`, `fc2`,
    `predictions`) when it is built without one.

    Raises:
        ValueError: a weighted layer without weights in `values` (e.g. a no-top file
            for a model with its top), a source layer the model lacks (another
            depth), or weights of other shapes (another `classes`, `variant` or
            input size); the message says which and what to do.
    """
    targets = _weighted_layers(model)
    missing = [name for name in targets if name not in values]
    if missing:
        if set(missing) <= _TOP_LAYERS:
            hint = f"the file has no classifier ({', '.join(missing)}): build the model with include_top=False"
        else:
            hint = "the file is of another architecture"
        raise ValueError(
            f"{len(missing)} weighted layers of `{model.name}` have no weights in {source}: {hint}. "
            f"Received: no weights for {missing[:5]}"
        )
    extra = sorted(set(values) - set(targets))
    if extra and not set(extra) <= _TOP_LAYERS:
        raise ValueError(
            f"{source} holds layers `{model.name}` does not have, e.g. {extra[:5]}: it is of another architecture "
            f"(depth). Received: {len(extra)} extra layers"
        )
    for name, layer in targets.items():
        given = values[name]
        expected = [tuple(weight.shape) for weight in layer.weights]
        received = [tuple(value.shape) for value in given]
        if expected != received:
            raise ValueError(
                f"Layer `{name}` of `{model.name}` cannot take the weights of {source}: expected shapes {expected}."
                f"{_mismatch_hint(name, expected, received)} Received: shapes {received}"
            )
    for name, layer in targets.items():
        layer.set_weights(values[name])
    return list(targets)


def _mismatch_hint(name, expected, received):
    if name == "predictions":
        return (
            " The classifier was trained for another number of classes: build with that `classes` (1000 for "
            "ImageNet), or include_top=False and add your own head (kcnn.train.fine_tune does)."
        )
    if name == "fc1":
        return " The first dense layer reads the flattened map of the input size the weights were trained at (224x224)."
    if len(expected) != len(received) and name.endswith("_conv"):
        has_bias = len(received) == 2
        variant = "v1" if has_bias else "v1.5"
        return (
            f" The file's convolutions {'have' if has_bias else 'have no'} biases: it is for variant={variant!r} "
            "(v1: keras.applications, biases; v1.5: torchvision, none)."
        )
    return ""
