"""cli/processes.py: the cluster secret every harness (`pushwire dev`, tests, bench) hands to
its services."""

from __future__ import annotations

import stat
from pathlib import Path

from cli.processes import cluster_secret, free_port, secret_env
from services.kit.config import ServiceConfig, load


def test_the_secret_is_made_once_owner_only_and_kept(tmp_path: Path) -> None:
    path = cluster_secret(tmp_path / "home")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    assert cluster_secret(tmp_path / "home").read_text() == first
    assert cluster_secret(tmp_path / "other").read_text() != first


def test_a_service_started_with_secret_env_presents_that_secret(tmp_path: Path) -> None:
    inherited = {"PUSHWIRE_CLUSTER_SECRET": "an-inherited-secret-0000"}
    config = load(ServiceConfig, "room", {**inherited, **secret_env(tmp_path)})
    assert config.rpc_secret() == cluster_secret(tmp_path).read_text().strip()


def test_free_port_never_hands_out_a_port_twice() -> None:
    """Ports are free until their servers bind them: a cluster's plan asks for a dozen before
    any is bound, and two services on one port is a failed start (seen in CI)."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
