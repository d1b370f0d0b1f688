"""Entry point: `pushwire saver`."""

from __future__ import annotations

import sys
from functools import partial

from services.kit import config, lifecycle, logs
from services.saver.app import serve
from services.saver.config import SaverConfig


def main() -> int:
    cfg = config.load(SaverConfig, "saver")
    logs.setup("saver", cfg)
    return lifecycle.run(partial(serve, cfg))


if __name__ == "__main__":
    sys.exit(main())
