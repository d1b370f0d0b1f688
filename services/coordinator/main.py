"""Entry point: `pushwire coordinator`."""

from __future__ import annotations

import sys
from functools import partial

from services.coordinator.app import serve
from services.coordinator.config import CoordinatorConfig
from services.kit import config, lifecycle, logs


def main() -> int:
    cfg = config.load(CoordinatorConfig, "coordinator")
    logs.setup("coordinator", cfg)
    return lifecycle.run(partial(serve, cfg))


if __name__ == "__main__":
    sys.exit(main())
