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
        help = field.metadata["help"]
        if "default" not in help:  # Some helps say their default in words already.
            help = f"{help} (default: {shown})"
        if hints[field.name] is bool:
            group.add_argument(flag, dest=dest + field.name, action="store_true", default=argparse.SUPPRESS, help=help)
            continue
        kinds = [t for t in typing.get_args(hints[field.name]) or (hints[field.name],) if t is not type(None)]
        optional = len(kinds) < len(typing.get_args(hints[field.name]) or (None,))
        choices = field.metadata["choices"]
        metavar = (
            "{" + ",".join("none" if c is None else str(c) for c in choices) + "}" if choices else field.name.upper()
        )
        metavar = field.metadata.get("metavar") or metavar
        parse = field.metadata.get("parse")
        group.add_argument(
            flag,
            *field.metadata["flags"],
            dest=dest + field.name,
            type=_parser(parse, flag) if parse else _converter(kinds, optional),
            choices=choices,
            metavar=metavar,
            default=argparse.SUPPRESS,
            help=help,
        )


class _Renamed(argparse.Action):
    """A flag's former name: refused with its new one (argparse alone would say
    "unrecognized arguments", or take a former name that is a prefix of the new one,
    `--range` of `--ranges`, as its abbreviation)."""

    def __init__(self, option_strings, dest, *, new, **kwargs):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs="?", help=argparse.SUPPRESS)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new} (a flag is its Python name with dashes): use {self.new}")


def add_renamed(parser, renamed):
    """Adds the former names of flags, {old: new}, each refused with the new name."""
    for old, new in renamed.items():
        parser.add_argument(old, action=_Renamed, new=new)


_DATA_DEST = "data_"


def add_data_flags(parser, *, size_default, channels_default="the source's own"):
    """Adds the flags of a source's `kcnn.data.load` options, the same for `kcnn train`,
    `fine-tune` and `tune`: `--data-dir`, `--download`, `--image-size`, `--channels`.
    `data_options(args)` gives the ones set, as the `data_options` mapping of
    `kcnn.train.fit`, `kcnn.train.fine_tune` and `kcnn.tune.search`.

    Args:
        parser: the command's parser.
        size_default, channels_default: what the help says the size and channels
            are when not given (the library decides; the command line has no
            default of its own).
    """
    group = parser.add_argument_group("data (kcnn.data.load options; `data_options` in Python)")
    group.add_argument(
        "--data-dir",
        dest=_DATA_DEST + "data_dir",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="where TFDS datasets are kept and prepared (default: TFDS's own, ~/tensorflow_datasets)",
    )
    group.add_argument(
        "--download",
        dest=_DATA_DEST + "download",
        action="store_true",
        default=argparse.SUPPRESS,
        help="let TFDS download and prepare a dataset that is not in the data folder (needs network access)",
    )
    group.add_argument(
        "--image-size",
        dest=_DATA_DEST + "image_size",
        type=image_size,
        default=argparse.SUPPRESS,
        metavar="N|HxW",
        help=f"size the images are resized to, e.g. 32 or 224x224 (default: {size_default})",
    )
    group.add_argument(
        "--channels",
        dest=_DATA_DEST + "channels",
        type=int,
        choices=(1, 3),
        default=argparse.SUPPRESS,
        help=f"1 (grey) or 3 (RGB) (default: {channels_default})",
    )


def data_options(args):
    """The data flags that were given, as a `data_options` mapping."""
    return collect(args, _DATA_DEST)


def image_size(text):
    """`--image-size`: N (square) or HxW."""
    height, sep, width = text.lower().partition("x")
    try:
        size = (_number(height), _number(width)) if sep else _number(text)
    except ValueError:
        size = None
    if size is None or min(size if sep else (size,)) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive sizes, e.g. 32 or 224x224. Received: {text!r}")
    return size


def collect(args, dest):
    """The values of the flags added with prefix `dest` that were given."""
    return {key[len(dest) :]: value for key, value in vars(args).items() if key.startswith(dest)}


_BOOLEANS = {"true": True, "false": False, "none": None}


def literal(text):
    """A Python literal (`3`, `(1, 2)`, `True`), a shell-style `true` / `false` / `none`
    in any case, or the text itself for another bare word."""
    if text.strip().lower() in _BOOLEANS:
        return _BOOLEANS[text.strip().lower()]
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


def _parser(parse, flag):
    """A field's own parser (its metadata's `parse(text, name)`), its error naming the
    flag: argparse reports it before anything is imported."""

    def convert(text):
        try:
            return parse(text, flag)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def _parse(kind, text):
    return _number(text) if kind is int else kind(text)


def _number(text):
    # Budgets read better as 5e6 or 5_000_000 than as 5000000.
    value = float(text.replace("_", ""))
    if not value.is_integer():
        raise ValueError(text)
    return int(value)
