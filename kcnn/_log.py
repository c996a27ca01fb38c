"""kcnn's logger, `logging.getLogger("kcnn")`: what kcnn reports while it works (each
trial of a search, the phases of a training run, a download) at INFO, shown by default.

Python shows a library's records only through handlers the program configures, and
without any, through its last-resort handler, WARNING and above only: a search's
progress, logged at INFO, would be silent in a script or a notebook that configured
nothing. kcnn sets up its own logger, and nothing else of the process' logging:

- its level is INFO, unless the program set one before importing kcnn;
- it has one handler of its own, which writes "kcnn: <message>" to stderr only while
  no other handler would take the record (none on the `kcnn` logger nor, as records
  propagate, on the root logger). Once the program configures logging
  (`logging.basicConfig`, the `kcnn` command line, pytest), its handlers show kcnn's
  records, their way, and this one steps aside: no line is shown twice.

To quiet kcnn: `logging.getLogger("kcnn").setLevel(logging.WARNING)`.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["FORMAT", "LOGGER", "install"]

LOGGER = "kcnn"
#: How the fallback handler shows a record: as the command line does.
FORMAT = "kcnn: %(message)s"


class _UntilConfigured(logging.Handler):
    """Writes a record to the current `sys.stderr` (as Python's last-resort handler
    does) unless another handler on its way would take it."""

    kcnn_fallback = True  # Told apart from the program's handlers, across reloads.

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))

    def handle(self, record):
        if _configured(logging.getLogger(record.name)):
            return False
        return super().handle(record)

    def emit(self, record):
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # As logging.StreamHandler: a broken stream is not the caller's error.
            self.handleError(record)


def _configured(logger: logging.Logger) -> bool:
    """Whether a handler other than kcnn's fallback would take a record of `logger`
    (the handlers `Logger.callHandlers` finds, whatever their level, as Python's
    last-resort rule counts them)."""
    current = logger
    while current is not None:
        if any(not getattr(handler, "kcnn_fallback", False) for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def install() -> logging.Logger:
    """Sets up the `kcnn` logger as the module says (once; again is a no-op)."""
    logger = logging.getLogger(LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not any(getattr(handler, "kcnn_fallback", False) for handler in logger.handlers):
        logger.addHandler(_UntilConfigured())
    return logger
