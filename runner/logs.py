"""Stage logging: one file per stage in DATA_DIR/logs (uploaded by publish), mirrored to stderr
(CloudWatch in Batch). stdout stays free for `C2D-EVENT` lines."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOGGER_NAME = "runner"
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s")


@contextmanager
def stage_log(path: Path) -> Iterator[logging.Logger]:
    """Route the `runner` logger (and so every runner module's logger) to path and stderr for
    the duration of a stage; handlers are removed afterwards so stages can run in-process."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [
        logging.FileHandler(path, encoding="utf-8"), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(_FORMAT)
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def flush(logger: logging.Logger) -> None:
    """Flush the stage's handlers, before the stage's own log file is uploaded."""
    for handler in logger.handlers:
        handler.flush()
