"""The installed `pushwire` command: find the application's folder, then run cli.main.

An installed pushwire puts one name in site-packages, `pushwire`; the server's packages
(`services`, `cli`, `bench`) live inside it, so they cannot collide with other packages of
those names in a user's environment (docs/design-notes.md, "One name in site-packages"). The
code imports them by their own names, as the repository lays them out; this launcher puts the
folder that holds them first on sys.path, and on PYTHONPATH for the processes it starts (every
service, room worker and load generator is started as `python -m services.<name>.main`).
In a checkout the folder is the repository itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_DIR = str(Path(__file__).resolve().parents[1])   # the folder holding cli/ and services/


def main() -> int:
    if APP_DIR not in sys.path:
        sys.path.insert(0, APP_DIR)
    inherited = os.environ.get("PYTHONPATH", "")
    if APP_DIR not in inherited.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (APP_DIR, inherited) if p)
    from cli.main import main as run
    return run()


if __name__ == "__main__":
    sys.exit(main())
