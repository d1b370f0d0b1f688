"""cli/cluster.py: where the CLI finds the dev cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import cluster


def test_the_dev_home_is_pushwire_dev_home_when_set(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.delenv("PUSHWIRE_DEV_HOME", raising=False)
    assert cluster.dev_home() == cluster.DEFAULT_DEV_HOME
    monkeypatch.setenv("PUSHWIRE_DEV_HOME", str(tmp_path / "elsewhere"))
    assert cluster.dev_home() == tmp_path / "elsewhere"


def test_load_reads_the_cluster_file_of_the_dev_home(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    for name in ("PUSHWIRE_DISPATCHER_URL", "PUSHWIRE_CENTER_URL", "PUSHWIRE_DISCOVERY"):
        monkeypatch.delenv(name, raising=False)
    saved = cluster.Cluster(dispatcher="http://127.0.0.1:18000", center="http://127.0.0.1:18100",
                            discovery="file:x", admin_key="k",
                            apps={"demo": {"secret": "s", "api_key": "a"}})
    cluster.save(saved, tmp_path / "cluster.json")
    monkeypatch.setenv("PUSHWIRE_DEV_HOME", str(tmp_path))
    assert cluster.load() == saved
    monkeypatch.setenv("PUSHWIRE_CENTER_URL", "http://center.example")
    assert cluster.load().center == "http://center.example"
    monkeypatch.setenv("PUSHWIRE_DEV_HOME", str(tmp_path / "nothing-here"))
    assert cluster.load().apps == {}
