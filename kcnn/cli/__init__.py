"""The `kcnn` command line. Each sub-module registers its commands; none holds model
or training logic, they call the library.

The entry point is the one place allowed to set process-wide state (logging levels).
"""

import argparse
import contextlib
import importlib
import os
import sys

# Command groups, by module: each has `register(subparsers)`; a command sets
# `handler(args) -> exit code` with `set_defaults`.
_COMMAND_MODULES = ("models", "train", "tune", "bench")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kcnn", description="Classic CNNs in Keras 3: list, inspect, train, tune, benchmark."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        try:
            commands = importlib.import_module(f"kcnn.cli.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"kcnn.cli.{module}":
                raise
            continue  # a command group not written yet
        commands.register(subparsers)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    if _wants_torch_baseline(argv):
        # Before anything imports TensorFlow (the flags of `kcnn train` do): torchvision
        # imported after TensorFlow 2.21 crashes the process (kcnn.bench.torch_available).
        with contextlib.suppress(ImportError):
            import torchvision  # noqa: F401
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except ValueError as error:
        print(f"kcnn {args.command}: error: {error}", file=sys.stderr)
        return 2


def _wants_torch_baseline(argv):
    return "bench" in argv and (
        "--baseline=torch" in argv or any(a == "--baseline" and b == "torch" for a, b in zip(argv, argv[1:]))
    )


if __name__ == "__main__":
    sys.exit(main())
