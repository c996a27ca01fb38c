"""The `kcnn` command line. Each sub-module registers its commands; none holds model
or training logic, they call the library.

The entry point is the one place allowed to set process-wide state: TensorFlow's
environment before it loads, logging, the global seed.
"""

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import warnings

import kcnn

# Command groups, by module: each has `register(subparsers)`; a command sets
# `handler(args) -> exit code` with `set_defaults`, and `needs_tensorflow` (True, False or
# a function of args) where TensorFlow is not always needed: it is loaded before the handler.
_COMMAND_MODULES = ("models", "train", "tune", "export", "weights")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kcnn", description="Classic CNNs in Keras 3: list, inspect, train, fine-tune, search."
    )
    parser.add_argument("--version", action="version", version=f"kcnn {kcnn.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        importlib.import_module(f"kcnn.cli.{module}").register(subparsers)
    return parser


def load_tensorflow_quietly():
    """Imports TensorFlow without its C++ start-up lines on the terminal.

    On a CPU machine TensorFlow 2.21 prints "oneDNN custom operations are on", "Could
    not find cuda drivers" and "failed call to cuInit: ... CUDA error", which read as
    failures. TF_CPP_MIN_LOG_LEVEL=3 silences what it logs once its logging is set up;
    the lines before that go straight to file descriptor 2, which is pointed at
    /dev/null for the import. A TF_CPP_MIN_LOG_LEVEL the user set keeps every line.
    """
    if "tensorflow" in sys.modules:
        return
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        importlib.import_module("tensorflow")
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _native_stderr_silenced():
        importlib.import_module("tensorflow")


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_python_format_warning = warnings.formatwarning


_KCNN = os.path.dirname(os.path.abspath(kcnn.__file__)) + os.sep


def _format_warning(message, category, filename, lineno, line=None):
    # A user of the command line reads what kcnn warns about, not where in its code;
    # another library's warning keeps Python's format, naming its file. (Formatting, not
    # showing: whatever records warnings, pytest included, still does.)
    if _issued_by_kcnn() or os.path.abspath(filename).startswith(_KCNN):
        return f"kcnn: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def _issued_by_kcnn():
    """Whether the code that called `warnings.warn` is kcnn's: the first frame above the
    warnings machinery (a `stacklevel` may point past it, into keras-tuner; the
    warning's file, kcnn's or not, is checked too)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == "warnings":
        frame = frame.f_back
    return frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "kcnn"


class _LogFormat(logging.Formatter):
    """`kcnn: message` for kcnn's log lines; `name: level: message` for another
    library's (TensorFlow's retracing warnings were printed as kcnn's)."""

    def format(self, record):
        text = super().format(record)
        if record.name.partition(".")[0] == "kcnn":
            return f"kcnn: {text}"
        return f"{record.name}: {record.levelname.lower()}: {text}"


#: TensorFlow's warning that a function was traced again, about the train, test and
#: predict steps Keras makes per model.
_KERAS_STEP_RETRACED = re.compile(
    r"calls to <function TensorFlowTrainer\.make_(?:train|test|predict)_function\.<locals>\.\w+ at 0x[0-9a-f]+> "
    r"triggered tf\.function retracing"
)


def _keeps(record) -> bool:
    """Whether the command line prints a log record: not TensorFlow's retracing warning
    about Keras' step functions. Keras makes them per model, and TensorFlow counts the
    traces of every model's as one function's (by its code), so a command that trains
    or evaluates more than five models (a search's finish) warned of retracing with
    nothing to fix."""
    return not (record.name == "tensorflow" and _KERAS_STEP_RETRACED.search(record.getMessage()))


def _handler():
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat("%(message)s"))
    handler.addFilter(_keeps)
    return handler


def main(argv=None):
    parser = build_parser()
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(arguments)
    args.command_line = arguments  # For a command that starts others like it (`kcnn tune --workers`).
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, handlers=[_handler()])
    warnings.formatwarning = _format_warning
    try:
        # Names and paths first: a typo is reported before TensorFlow takes seconds to load.
        preflight = getattr(args, "preflight", None)
        if preflight:
            preflight(args)
        needs_tensorflow = getattr(args, "needs_tensorflow", True)
        if needs_tensorflow(args) if callable(needs_tensorflow) else needs_tensorflow:
            load_tensorflow_quietly()
        return args.handler(args) or 0
    except (ValueError, TypeError) as error:
        # kcnn raises these for arguments it refuses, with what it expected and what it
        # received (a builder's TypeError for an unknown --model-kwargs): one line is
        # enough; the traceback goes to the debug log.
        logging.getLogger("kcnn").debug("kcnn %s failed", args.command, exc_info=True)
        print(f"kcnn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
