"""bench/peers.py: the peers' configs stay on loopback and off the machine's own ports."""

from __future__ import annotations

import os

from bench.peers import cpu_s, mosquitto_config, nats_config, rss_kib


def test_nats_config_is_loopback_with_a_plain_websocket_listener() -> None:
    text = nats_config(14222, 18080)
    assert 'listen: "127.0.0.1:14222"' in text
    assert 'listen: "127.0.0.1:18080"' in text and "no_tls: true" in text
    assert "compression: false" in text and "4222\"" not in text.replace("14222", "")


def test_mosquitto_config_is_loopback_with_a_websocket_listener_and_no_disk() -> None:
    text = mosquitto_config(11883, 18081)
    lines = text.splitlines()
    assert "listener 11883 127.0.0.1" in lines and "listener 18081 127.0.0.1" in lines
    assert lines[lines.index("listener 18081 127.0.0.1") + 1] == "protocol websockets"
    assert "persistence false" in lines and not any(line.endswith(" 1883") for line in lines)


def test_process_figures_of_this_process() -> None:
    assert rss_kib(os.getpid()) > 1000
    assert cpu_s(os.getpid()) > 0
