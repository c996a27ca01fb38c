"""What a command can check before TensorFlow is imported (seconds): model names,
paths that must exist, a `--data` that is no dataset at all. A command sets
`preflight=...(args)` with `set_defaults`; `kcnn.cli.main` runs it first, so a typo or
a missing path is reported at once, as the library would report it."""

import os
import re

from kcnn import catalog

# TFDS's `name[/config][:version]`: a bare word of this form may be a TFDS dataset,
# which only TFDS (and TensorFlow with it) can tell.
_TFDS_NAME = re.compile(r"[a-z0-9_]+(/[A-Za-z0-9_.+-]+)?(:[0-9.*]+)?")


def model_name(name):
    """A registered model's name (`kcnn.catalog.NAMES`, the registry's, without building)."""
    if name not in catalog.NAMES:
        raise catalog.unknown_model(name)


def existing(path, what, argument):
    """`path` exists; else the ValueError naming `what` was expected."""
    if not os.path.exists(path):
        raise ValueError(f"Expected {what}; there is nothing at that path. Received: {argument}={os.fspath(path)!r}")


def data(value):
    """`--data`: 'digits', an existing folder or .npz file, or what may be a TFDS name."""
    if value is None or value == "digits" or os.path.exists(value):
        return
    if value.lower().endswith(".npz") or not _TFDS_NAME.fullmatch(value):
        raise ValueError(
            "Expected 'digits', a TFDS name (name[/config][:version], lowercase), a folder of class sub-folders or an "
            f".npz file; there is no folder or file at that path. Received: --data={value!r}"
        )


RUN = "a run folder or a .keras file"


def run_or_model(path):
    existing(path, RUN, "path")


def run_and_data(args):
    """The preflight of a command on a run and optional `--data` (evaluate, export)."""
    run_or_model(args.path)
    data(args.data)
