"""Configure logging once per process, however many apps are created.

Tests and the CLI create many apps in one process; adding a handler per app
would print every line several times.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

_HANDLER_NAME = "quart_api"


def configure_logging(level: str) -> None:
    """Send ``quart_api`` logs to stderr at ``level``; idempotent."""
    logger = logging.getLogger("quart_api")
    logger.setLevel(level.upper())
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    )
    logger.addHandler(handler)
