"""Logging set-up for entry points only (libraries just use module loggers)."""

from __future__ import annotations

import logging
import os


def setup_logging(default: str = "INFO") -> None:
    """Configure the root handler once; level from `TRUSTEE_LOGLEVEL`."""
    level = os.environ.get("TRUSTEE_LOGLEVEL", default).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
