"""Entry point: `pushwire center`."""

from __future__ import annotations

import sys
from functools import partial

from services.center.app import serve
from services.center.config import CenterConfig
from services.kit import config, lifecycle, logs


def main() -> int:
    cfg = config.load(CenterConfig, "center")
    logs.setup("center", cfg)
    return lifecycle.run(partial(serve, cfg))


if __name__ == "__main__":
    sys.exit(main())
