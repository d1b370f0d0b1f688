"""Entry point: `pushwire register`."""

from __future__ import annotations

import sys
from functools import partial

from services.kit import config, lifecycle, logs
from services.register.app import serve
from services.register.config import RegisterConfig


def main() -> int:
    cfg = config.load(RegisterConfig, "register")
    logs.setup("register", cfg)
    return lifecycle.run(partial(serve, cfg))


if __name__ == "__main__":
    sys.exit(main())
