"""Stage logging: one file per stage in DATA_DIR/logs (uploaded by publish), mirrored to stderr
(CloudWatch in Batch). stdout stays free for `C2D-EVENT` lines.

The stage logs are consumer-visible (they are results): they name inputs by index and did only.
Details only the operator may see (which address a fetch was refused for, ...) go to the
`c2d.operator` logger, which writes to stderr alone."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .layout import open_log

LOGGER_NAME = "runner"
OPERATOR_LOGGER = "c2d.operator"
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s")


def operator_log() -> logging.Logger:
    """A logger for the operator's eyes only (stderr = the runner container's CloudWatch
    stream), outside the `runner` hierarchy so nothing of it reaches the stage's log file."""
    logger = logging.getLogger(OPERATOR_LOGGER)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


@contextmanager
def stage_log(path: Path) -> Iterator[logging.Logger]:
    """Route the `runner` logger (and so every runner module's logger) to path and stderr for
    the duration of a stage; handlers are removed afterwards so stages can run in-process.
    The file is opened without following a symlink planted at its name (layout.open_log)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    stream = open(open_log(path), "a", encoding="utf-8")
    handlers: list[logging.Handler] = [
        logging.StreamHandler(stream), logging.StreamHandler(sys.stderr)]
    operator, operator_handler = operator_log(), logging.StreamHandler(sys.stderr)
    for handler in (*handlers, operator_handler):
        handler.setFormatter(_FORMAT)
    for handler in handlers:
        logger.addHandler(handler)
    operator.addHandler(operator_handler)
    try:
        yield logger
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        operator.removeHandler(operator_handler)
        stream.close()


def flush(logger: logging.Logger) -> None:
    """Flush the stage's handlers, before the stage's own log file is uploaded."""
    for handler in logger.handlers:
        handler.flush()
