"""services/room/app.py: the client addresses a room publishes (the dispatcher hands them out)."""

from __future__ import annotations

import pytest

from pushwire_protocol.errors import ConfigError
from services.room.app import ws_addresses
from services.room.config import RoomConfig


def test_a_plain_room_publishes_host_port() -> None:
    config = RoomConfig(advertise="10.0.0.1", ws_isp=("cmcc=10.8.0.1", "ct=10.9.0.1:9000"))
    assert ws_addresses(config, 8200, tls=False) == {
        "ws": "10.0.0.1:8200", "ws.cmcc": "10.8.0.1:8200", "ws.ct": "10.9.0.1:9000"}


def test_a_tls_room_publishes_wss_urls() -> None:
    config = RoomConfig(advertise="10.0.0.1", ws_advertise="push1.example.com",
                        ws_isp=("cmcc=cmcc.example.com", "ct=wss://ct.example.com:443/"))
    assert ws_addresses(config, 8443, tls=True) == {
        "ws": "wss://push1.example.com:8443/", "ws.cmcc": "wss://cmcc.example.com:8443/",
        "ws.ct": "wss://ct.example.com:443/"}


def test_a_public_url_is_published_as_configured() -> None:
    config = RoomConfig(ws_public_url="wss://push.example.com:443")
    assert ws_addresses(config, 8200, tls=False)["ws"] == "wss://push.example.com:443"


@pytest.mark.parametrize("url", ["https://push.example.com", "push.example.com:443",
                                 "wss://", "wss://push.example.com/?x=1"])
def test_a_public_url_must_be_a_websocket_url(url: str) -> None:
    with pytest.raises(ConfigError, match="ws_public_url"):
        RoomConfig(ws_public_url=url, insecure_rpc=True).validate()


@pytest.mark.parametrize("url", ["https://push.example.com", "wss://"])
def test_a_per_isp_url_must_be_a_websocket_url(url: str) -> None:
    with pytest.raises(ConfigError, match="ws_isp"):
        RoomConfig(ws_isp=(f"cmcc={url}",), insecure_rpc=True).validate()
