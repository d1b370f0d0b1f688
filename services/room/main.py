"""Entry point: `pushwire room`."""

from __future__ import annotations

import sys
from functools import partial

from services.kit import config, lifecycle, logs
from services.room.app import serve
from services.room.config import RoomConfig


def main() -> int:
    cfg = config.load(RoomConfig, "room")
    logs.setup("room", cfg)
    return lifecycle.run(partial(serve, cfg))


if __name__ == "__main__":
    sys.exit(main())
