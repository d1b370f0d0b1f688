"""Entry point: `pushwire dispatcher`."""

from __future__ import annotations

import sys
from functools import partial

from services.dispatcher.app import serve
from services.dispatcher.config import DispatcherConfig
from services.kit import config, lifecycle, logs


def main() -> int:
    cfg = config.load(DispatcherConfig, "dispatcher")
    logs.setup("dispatcher", cfg)
    return lifecycle.run(partial(serve, cfg))


if __name__ == "__main__":
    sys.exit(main())
