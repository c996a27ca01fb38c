"""The builders' argument checks: each refuses a value before any layer is built, with
what was expected and `Received: ...` (a VGG or ResNet takes seconds to build, and a
value Keras takes without a word, such as batch_norm="no", is never checked there).
Each returns the value normalized (NumPy scalars to Python ones, sequences to tuples),
as Keras' layers refuse some NumPy scalars."""

import difflib
import numbers
import os
import re
import sys
from types import MappingProxyType

import keras
import numpy as np

#: The largest input height or width: 65,535, the most a JPEG or a TIFF strip can hold
#: and 290 times the 224 pixels these networks were designed for; one feature map of
#: such an image already takes gigabytes.
MAX_INPUT_SIZE = 65_535
#: The most parameters a builder builds: 2**31, 8 GiB of float32 weights (training with
#: Adam holds four times that), fifteen times VGG-19's 143.7 M, the largest network
#: here. A model past it is refused once its layers are laid out and before any weight
#: is allocated (`kcnn._keras_graph`): a size such as classes=10**12 would otherwise
#: reach the allocator and fail there, or take the machine's memory.
MAX_PARAMS = 2**31


def check_keywords(function, parameters, kwargs, renamed=MappingProxyType({})):
    """Refuses keyword arguments that `function` does not take, naming each and, for a
    renamed one, its new name.

    Args:
        function: the builder's name, for the message.
        parameters: the names it takes.
        kwargs: the keyword arguments received.
        renamed: {old name: new name} of arguments renamed.

    Raises:
        TypeError: for the first unknown argument.
    """
    for key, value in kwargs.items():
        if key in parameters:
            continue
        if key in renamed:
            raise TypeError(
                f"`{key}` is now `{renamed[key]}` (one name per concept across the builders). Received: {key}={value!r}"
            )
        close = difflib.get_close_matches(key, list(parameters), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise TypeError(
            f"`{function}` has no argument `{key}`.{hint} It takes: {', '.join(parameters)}. Received: {key}={value!r}"
        )


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_choice(argument, value, choices):
    if not isinstance(value, (str, type(None))) or value not in choices:
        expected = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"`{argument}` must be one of {expected}. Received: {argument}={value!r}")
    return value


def check_positive_int(argument, value):
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{argument}` must be a positive integer. Received: {argument}={value!r}")
    return int(value)


def check_bool(argument, value):
    """True or False (a string such as "no" would be taken as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{argument}` must be True or False. Received: {argument}={value!r}")
    return bool(value)


def check_fraction(argument, value):
    """A dropout rate: a number in [0, 1)."""
    if (
        isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 <= value < 1  # NaN fails this too
    ):
        raise ValueError(f"`{argument}` must be a number in [0, 1). Received: {argument}={value!r}")
    return float(value)


def check_positive_ints(argument, value, *, allow_empty=False):
    """A list or tuple of positive integers (layer widths, blocks per stage)."""
    if (
        not isinstance(value, (list, tuple))
        or (not value and not allow_empty)
        or not all(_is_int(item) and item >= 1 for item in value)
    ):
        what = "a list or tuple of positive integers" + ("" if allow_empty else ", not empty")
        raise ValueError(f"`{argument}` must be {what}. Received: {argument}={value!r}")
    return tuple(int(item) for item in value)


def check_activation(argument, value):
    """None (linear), the name of a Keras activation, or a callable."""
    if value is None or (callable(value) and not isinstance(value, str)):
        return value
    if isinstance(value, str):
        try:
            keras.activations.get(value)
        except ValueError:
            pass
        else:
            return value
    raise ValueError(
        f"`{argument}` must be None, the name of a Keras activation (e.g. 'relu', 'softmax') or a callable. "
        f"Received: {argument}={value!r}"
    )


# TensorFlow's pattern for a root name scope (less '/', which Keras refuses): a model
# of another name builds, then fails in `fit` or `export` with TensorFlow's error.
_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\->]*")


def check_name(value):
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            "`name` must be None or a name TensorFlow can scope: letters, digits, '_', '.', '-' and '>', beginning "
            f"with a letter, a digit or '.', e.g. 'resnet18_cifar'. Received: name={value!r}"
        )
    return value


def check_depth(count, unit, **received):
    """Refuses a spec of more `unit`s ("blocks", "convolutions", ...) than can build.

    Each unit adds at least one layer to the model's longest path, and Keras maps a
    functional model's layers recursively, a Python frame per layer: more units than
    Python's recursion limit can never build, and would take minutes to lay out before
    Keras says so (`stages=(10**6,)`: days). `received` are the arguments that ask for
    them.
    """
    limit = sys.getrecursionlimit()
    if count > limit:
        shown = ", ".join(f"{key}={_short(value)}" for key, value in received.items())
        raise ValueError(
            f"{' and '.join(f'`{key}`' for key in received)} ask{'s' if len(received) == 1 else ''} for {count:,} {unit} "
            f"in all, each at least one layer deep; Keras maps a model's layers recursively, so no model deeper than "
            f"Python's recursion limit ({limit:,}, sys.getrecursionlimit()) builds. Received: {shown}"
        )


def _short(value):
    text = repr(value)
    if len(text) <= 80:
        return text
    return text[:60] + "..." + (f" ({len(value):,} items)" if isinstance(value, (list, tuple)) else "")


def per_stage(argument, value, num_stages, check):
    """One value for every stage, or a list/tuple of one per stage, each checked by
    `check(argument, item)`; returns the tuple of `num_stages` checked values."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ValueError(
                f"`{argument}` must be one value for every stage or a sequence of one per stage ({num_stages}). "
                f"Received: {argument}={value!r}"
            )
        items = tuple(value)
    else:
        items = (value,) * num_stages
    try:
        return tuple(check(argument, item) for item in items)
    except ValueError as error:
        if items == (value,) * num_stages:
            raise
        # Name the whole sequence, not only the item.
        expected = str(error).split(" Received:")[0].rstrip(".")
        raise ValueError(f"{expected} in each stage. Received: {argument}={value!r}") from None


class ModelTooLarge(ValueError):
    """A model past `MAX_PARAMS`. `received` is what the message names (the builder's
    arguments that differ from their defaults; a named model's own, `resnet18`'s
    stages excepted, see `ModelSpec.build`)."""

    def __init__(self, what, received):
        self.what, self.received = what, dict(received)
        shown = ", ".join(f"{key}={_short(value)}" for key, value in self.received.items()) or "the defaults"
        super().__init__(f"{what} Received: {shown}")


def check_size(model, received):
    """Refuses a model of more than `MAX_PARAMS` parameters, naming its largest layers.

    Raises:
        ModelTooLarge: a ValueError naming the count, the bound and `received`.
    """
    sizes = sorted(((layer.count_params(), layer.name) for layer in model.layers if layer.weights), reverse=True)
    total = sum(size for size, _ in sizes)
    if total <= MAX_PARAMS:
        return
    largest = ", ".join(f"`{name}` {size:,}" for size, name in sizes[:2])
    raise ModelTooLarge(
        f"`{model.name}` would have {total:,} parameters ({_bytes(4 * total)} of float32 weights), more than the "
        f"{MAX_PARAMS:,} ({_bytes(4 * MAX_PARAMS)}) kcnn builds (kcnn.models.MAX_PARAMS); the largest layers: {largest}.",
        received,
    )


def _bytes(count):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024


def resolve_input_shape(input_shape, input_tensor, default, *, allow_unknown_size):
    """The (H, W, C) the model is built for, checked."""
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError(
                "`input_tensor` must be a Keras tensor, e.g. the output of `keras.Input`. "
                f"Received: input_tensor={input_tensor!r}"
            )
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(
                "`input_shape` and `input_tensor` disagree. "
                f"Received: input_shape={tuple(input_shape)}, input_tensor.shape={tensor_shape}"
            )
        input_shape = tensor_shape
    elif input_shape is None:
        input_shape = default
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    valid = (
        shape is not None
        and len(shape) == 3
        and all(dim is None or (isinstance(dim, numbers.Integral) and not isinstance(dim, bool) and dim > 0) for dim in shape)
    )
    if not valid or shape[2] is None:
        raise ValueError(
            "`input_shape` must be (height, width, channels) with positive integers "
            "(height and width may be None for fully convolutional models). "
            f"Received: input_shape={input_shape!r}"
        )
    if any(dim is not None and dim > MAX_INPUT_SIZE for dim in shape[:2]):
        raise ValueError(
            f"`input_shape`'s height and width must be at most {MAX_INPUT_SIZE:,} pixels (kcnn.models.MAX_INPUT_SIZE: "
            f"the largest side of a JPEG). Received: input_shape={shape}"
        )
    if not allow_unknown_size and None in shape[:2]:
        raise ValueError(
            "This model's top flattens a feature map of fixed size, so `input_shape` needs "
            "a height and a width (or pass include_top=False). "
            f"Received: input_shape={shape}"
        )
    return tuple(int(dim) if dim is not None else None for dim in shape)


def check_softmax_classes(classes, classifier_activation):
    """Refuses a softmax over one class, which outputs 1.0 whatever the input (per
    image for a classifier, per pixel for a segmentation model)."""
    if classes == 1 and (classifier_activation == "softmax" or classifier_activation is keras.activations.softmax):
        raise ValueError(
            "A softmax over one class outputs 1.0 everywhere. For two classes pass classes=2, or "
            "classifier_activation='sigmoid' for the probability of one. "
            f"Received: classes=1, classifier_activation={classifier_activation!r}"
        )


# The weights a builder takes: a tag of the weights table or a file of these formats.
WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".h5", ".safetensors", ".onnx")
WEIGHTS_EXPECTED = (
    "None, 'imagenet' or another tag of the weights table ('imagenet-tv2', `kcnn weights list`), or the path of "
    "a `.weights.h5`, `.keras`, keras.applications `.h5`, torchvision/timm `.safetensors` or BVLC `.onnx` file"
)


def is_weights_tag(weights):
    """A tag of the weights table ('imagenet', ...), not a path."""
    from kcnn.weights import table

    return table.is_tag(weights)


def check_weights_file(weights):
    """The path of a weights file a builder loads, checked: a known suffix, and there."""
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"`weights` must be {WEIGHTS_EXPECTED}. Received: weights={weights!r}")
    weights = os.fspath(weights)
    if not weights.endswith(WEIGHT_SUFFIXES):
        raise ValueError(f"`weights` must be {WEIGHTS_EXPECTED}. Received: weights={weights!r}")
    if not os.path.exists(weights):
        raise ValueError(f"The weights file does not exist. Received: weights={weights!r}")
    return weights


# The input's size, checked against what the layers need.
def trunk_min_input_size(trunk, channels):
    """The smallest square input `trunk` takes: every tensor it returns counts, so
    GoogLeNet's auxiliary heads (whose 5x5 pool needs a 14x14 map) do too."""
    from kcnn import shapes

    probe = keras.Input((None, None, channels))
    return shapes.min_input_size(keras.Model(probe, trunk(probe)))


def too_small_error(name, trunk, shape, cause):
    """Builds the 'input too small' error if that is what went wrong, else None."""
    smallest = trunk_min_input_size(trunk, shape[2])
    if all(dim is None or dim >= smallest for dim in shape[:2]):
        return None
    return ValueError(
        f"The input is too small for `{name}`: its layers need at least "
        f"{smallest}x{smallest} pixels. Received: input_shape={shape}"
    )


def check_nonempty(name, features):
    """Keras' convolutions and poolings refuse to produce a 0x0 map, a custom layer
    (LeNet's Subsampling2D) may not: the trunk's outputs are checked here."""
    for tensor in features if isinstance(features, (list, tuple)) else [features]:
        if any(dim is not None and dim < 1 for dim in tensor.shape[1:]):
            raise ValueError(f"`{name}` would produce an empty feature map. Received: output shape {tuple(tensor.shape[1:])}")
