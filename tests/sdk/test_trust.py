"""sdk/python/pushwire_sdk/trust.py: which CAs a client trusts on https:// and wss://."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import devca
from pushwire_protocol.errors import ConfigError
from pushwire_sdk.trust import client_context


def subjects(context: object) -> set[str]:
    return {dict(field[0] for field in ca["subject"]).get("commonName", "")
            for ca in context.get_ca_certs()}      # type: ignore[attr-defined]


def test_the_dev_ca_is_trusted_when_it_exists(tmp_path: Path) -> None:
    files = devca.ensure(tmp_path / "tls")
    dev = [s for s in subjects(client_context(dev_ca=files.ca)) if s.startswith("pushwire dev")]
    assert len(dev) == 1
    assert not any(s.startswith("pushwire dev")
                   for s in subjects(client_context(dev_ca=tmp_path / "none.pem")))


def test_a_cafile_is_trusted_alone(tmp_path: Path) -> None:
    files = devca.ensure(tmp_path / "tls")
    context = client_context(files.ca, dev_ca=tmp_path / "none.pem")
    assert len(subjects(context)) == 1
    assert context.check_hostname


def test_a_cafile_that_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load CA file"):
        client_context(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load CA file"):
        client_context(bad)
