"""Every RPC of every service's proto is implemented by that service's servicer.

The generated base classes (services/kit/pb/*_pb2_grpc.py) answer UNIMPLEMENTED for any
method a servicer does not override; a method added to a .proto without an implementation
must fail here, not in production.
"""

from __future__ import annotations

import pytest

from services.center.servicer import CenterServicer
from services.coordinator.servicer import CoordinatorServicer
from services.kit.pb import (
    center_pb2_grpc,
    coordinator_pb2_grpc,
    register_pb2_grpc,
    room_pb2_grpc,
    saver_pb2_grpc,
)
from services.register.servicer import RegisterServicer
from services.room.servicer import RoomServicer
from services.saver.servicer import SaverServicer

PAIRS = [
    (center_pb2_grpc.CenterServicer, CenterServicer),
    (coordinator_pb2_grpc.CoordinatorServicer, CoordinatorServicer),
    (register_pb2_grpc.RegisterServicer, RegisterServicer),
    (room_pb2_grpc.RoomServicer, RoomServicer),
    (saver_pb2_grpc.SaverServicer, SaverServicer),
]


@pytest.mark.parametrize(("base", "impl"), PAIRS, ids=[impl.__name__ for _, impl in PAIRS])
def test_every_rpc_is_implemented(base: type, impl: type) -> None:
    rpcs = [name for name in vars(base) if not name.startswith("_")]
    assert rpcs
    assert [name for name in rpcs if getattr(impl, name) is getattr(base, name)] == []
