"""Logging: one logger per service, greppable lines with per-connection context."""

from __future__ import annotations

import logging
import sys


def setup(service: str, instance: str, level: str) -> logging.Logger:
    """Configure the root handler once per process; return the service's logger."""
    fmt = f"%(asctime)s %(levelname)s {service}[{instance}] %(name)s: %(message)s"
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    root.setLevel(level.upper())
    return logging.getLogger(f"pushwire.{service}")
