"""Moving weights between models by layer name.

Layer names are public API (see the design notes) precisely so that this works: a
keras.applications ResNet50 and `kcnn.resnet50()` share every weighted layer's name,
so one's weights load into the other.
"""

import os

import keras

from kcnn._keras_graph import leaf_layers

__all__ = ["load_weights", "transfer_weights"]


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
        source = keras.saving.load_model(source, compile=False)
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


def load_weights(model, path):
    """Loads a weights file into a built kcnn model.

    A `.keras` file is matched by layer name (`transfer_weights`), so its head may be
    absent (include_top=False); a `.weights.h5` file holds weights in layer order and
    must come from a model built with the same arguments.
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        return transfer_weights(path, model)
    try:
        model.load_weights(path)
    except ValueError as error:
        raise ValueError(
            f"The weights in {path!r} do not fit `{model.name}` as built: a `.weights.h5` "
            "file must come from a model built with the same arguments (for another head, "
            f"save a `.keras` file, which loads by layer name). Received: {error}"
        ) from None
    return [layer.name for layer in leaf_layers(model) if layer.weights]
