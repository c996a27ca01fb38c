"""Command-line flags generated from configuration dataclasses, so a field added to
`TrainConfig` or `SearchConfig` is a flag at once and its help is written once."""

import argparse
import ast
import dataclasses
import typing


def add_dataclass_flags(group, cls, *, dest, defaults=None, skip=()):
    """Adds one `--flag-name` per field of the dataclass `cls` to `group`.

    A field's metadata gives its help, its choices and extra flag spellings (see
    `kcnn.train.config._field`). Unset flags are absent from the parsed namespace,
    so the dataclass' own defaults apply; `collect` gathers the set ones.

    Args:
        group: an argparse parser or argument group.
        cls: the dataclass.
        dest: prefix of the namespace attributes, e.g. "train_".
        defaults: the values shown as defaults in the help (default: the fields').
        skip: field names that get no flag.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = f"--{field.name.replace('_', '-')}"
        shown = field.default if defaults is None else defaults[field.name]
        help = f"{field.metadata['help']} (default: {shown})"
        if hints[field.name] is bool:
            group.add_argument(flag, dest=dest + field.name, action="store_true", default=argparse.SUPPRESS, help=help)
            continue
        kinds = [t for t in typing.get_args(hints[field.name]) or (hints[field.name],) if t is not type(None)]
        optional = len(kinds) < len(typing.get_args(hints[field.name]) or (None,))
        choices = field.metadata["choices"]
        metavar = (
            "{" + ",".join("none" if c is None else str(c) for c in choices) + "}" if choices else field.name.upper()
        )
        group.add_argument(
            flag,
            *field.metadata["flags"],
            dest=dest + field.name,
            type=_converter(kinds, optional),
            choices=choices,
            metavar=metavar,
            default=argparse.SUPPRESS,
            help=help,
        )


def collect(args, dest):
    """The values of the flags added with prefix `dest` that were given."""
    return {key[len(dest) :]: value for key, value in vars(args).items() if key.startswith(dest)}


def literal(text):
    """A Python literal (`3`, `(1, 2)`, `True`), or the text itself for a bare word."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _converter(kinds, optional):
    """Parses a flag as the first of `kinds` that accepts it (`int | str`: a number,
    else the word, as in `--steps-per-execution auto`)."""

    def convert(text):
        if optional and text.lower() == "none":
            return None
        for kind in kinds[:-1]:
            try:
                return _parse(kind, text)
            except ValueError:
                pass
        return _parse(kinds[-1], text)

    convert.__name__ = kinds[0].__name__  # argparse names the type in its errors.
    return convert


def _parse(kind, text):
    return _number(text) if kind is int else kind(text)


def _number(text):
    # Budgets read better as 5e6 or 5_000_000 than as 5000000.
    value = float(text.replace("_", ""))
    if not value.is_integer():
        raise ValueError(text)
    return int(value)
