"""Which servers a client trusts on `wss://` and `https://` (docs/security.md §TLS).

    client_context()              # the system's CAs, plus the `pushwire dev --tls` CA if any
    client_context("corp-ca.pem") # exactly the CAs in that file

The dev CA lives in <dev home>/tls/ca.pem (made by cli/devca.py; the dev home is
PUSHWIRE_DEV_HOME, else <PUSHWIRE_HOME>/dev); trusting it when it exists is what lets the CLI
and the SDK reach a dev cluster on TLS with no flags. Host names are always checked.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pushwire_protocol.errors import ConfigError

# Where `pushwire dev` keeps its state (cli/cluster.py dev_home): PUSHWIRE_DEV_HOME, else
# <PUSHWIRE_HOME, else ~/.pushwire>/dev.
DEV_HOME = Path(os.environ.get("PUSHWIRE_DEV_HOME")
                or Path(os.environ.get("PUSHWIRE_HOME", "~/.pushwire")) / "dev").expanduser()
DEV_CA = DEV_HOME / "tls" / "ca.pem"


def client_context(cafile: str | Path | None = None, dev_ca: Path = DEV_CA) -> ssl.SSLContext:
    """A verifying client context: the CAs of `cafile` when given, else the system's plus the
    dev CA when `dev_ca` exists. ConfigError when `cafile` holds no usable certificate."""
    if cafile:
        try:
            return ssl.create_default_context(cafile=str(cafile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA file {cafile}: {exc}") from exc
    context = ssl.create_default_context()
    if dev_ca.exists():
        context.load_verify_locations(dev_ca)
    return context
