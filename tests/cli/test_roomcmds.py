"""`pushwire rooms | drain | room --workers`: parsing and what they print against a
file-backed discovery (no room process; the drain of a real room runs in
tests/integration/test_drain.py, workers in tests/integration/test_workers.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from cli import roomcmds
from cli.main import build_parser, main
from services.kit.discovery import Instance
from services.kit.discovery.local import LocalDiscovery


def test_drain_arguments() -> None:
    args = build_parser().parse_args(["drain", "room-3", "--rate", "250", "--keep-running"])
    assert (args.room, args.rate, args.keep_running, args.no_wait, args.run) == (
        "room-3", 250.0, True, False, roomcmds.run_drain)
    assert build_parser().parse_args(["room", "--workers", "4"]).workers == 4


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drain", "room-1", "--rate", "-1", "--discovery", "file:/nowhere"]) == 2
    assert main(["room", "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_describe_a_room() -> None:
    line = roomcmds.describe(Instance("room", "room-7", idc="dc2", load=12, capacity=100,
                                      addresses={"ws": "10.0.0.7:8200"}, draining=True))
    assert line.split() == ["room-7", "10.0.0.7:8200", "12/100", "dc2", "draining"]


async def _announce(root: Path, room: Instance) -> LocalDiscovery:
    discovery = LocalDiscovery(str(root))
    await discovery.start(("room",))
    await discovery.announce(room)
    return discovery


def test_rooms_lists_and_drain_of_an_unknown_room_fails(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    room = Instance("room", "room-1", addresses={"ws": "127.0.0.1:8200"}, pid=os.getpid())

    async def scenario() -> tuple[int, int]:
        discovery = await _announce(tmp_path, room)
        try:
            listed = await asyncio.to_thread(main, ["rooms", "--discovery", f"file:{tmp_path}"])
            missing = await asyncio.to_thread(main, ["drain", "room-9", "--discovery",
                                                     f"file:{tmp_path}"])
            return listed, missing
        finally:
            await discovery.close()
    listed, missing = asyncio.run(scenario())
    out = capsys.readouterr()
    assert listed == 0 and "room-1" in out.out and "serving" in out.out
    assert missing == 1 and "no room 'room-9'" in out.err
