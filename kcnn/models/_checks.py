"""The builders' argument checks: each refuses a value before any layer is built, with
what was expected and `Received: ...`."""

import difflib
import numbers
from types import MappingProxyType

import keras
import numpy as np


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
                f"`{key}` is now `{renamed[key]}` (one name per concept across the builders). "
                f"Received: {key}={value!r}"
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
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or not 0 <= value < 1  # NaN fails this too
    ):
        raise ValueError(f"`{argument}` must be a number in [0, 1). Received: {argument}={value!r}")
    return float(value)


def check_positive_ints(argument, value, *, allow_empty=False):
    """A list or tuple of positive integers (layer widths, blocks per stage)."""
    if not isinstance(value, (list, tuple)) or (not value and not allow_empty) or not all(
        _is_int(item) and item >= 1 for item in value
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


def check_name(value):
    if not isinstance(value, str) or not value or "/" in value:
        raise ValueError(f"`name` must be None or a non-empty string without '/'. Received: name={value!r}")
    return value


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
