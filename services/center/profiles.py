"""center's side of runtime profiling (docs/operations.md §9, docs/api.md §4): an operator
names a service instance (its id in discovery), center has that instance profile itself over
internal gRPC and hands the result over as a file.

    POST /v1/admin/instances/{instance}/profile {"seconds", "hz", "format"}
    ──Profiles.take──▶ discovery: the instance's gRPC address (404 unknown; dispatchers serve
                       no gRPC: 400) ──Profiler.Profile RPC──▶ Profile (409 while another runs)
    ──▶ collapsed stacks (text/plain) or speedscope JSON

The sampling happens inside the profiled process (services/kit/profiler.py), so center only
waits; several centers may profile several instances at once, one instance one at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pushwire_protocol.errors import BadRequest, NotFound
from services.center.topology import KINDS
from services.kit.discovery import Discovery, Instance
from services.kit.profiler import HZ_DEFAULT, HZ_MAX, MAX_S, MIN_S, Profile
from services.kit.rpc import profiling
from services.kit.rpc.grpcio import Channels
from services.kit.schema import Integer, Number, OneOf, Schema

FORMATS = {"collapsed": "text/plain", "speedscope": "application/json"}
PROFILE = Schema({"seconds": Number(MIN_S, MAX_S), "hz": Integer(1, HZ_MAX),
                  "format": OneOf(tuple(FORMATS))},
                 defaults={"seconds": 10.0, "hz": HZ_DEFAULT, "format": "collapsed"})


@dataclass(frozen=True)
class Download:
    """A finished profile as the file an operator gets."""

    body: bytes
    media: str               # content type
    filename: str
    profile: Profile


class Profiles:
    def __init__(self, discovery: Discovery, channels: Channels, timeout_s: float) -> None:
        self.discovery = discovery
        self.channels = channels
        self.timeout_s = timeout_s

    def find(self, instance_id: str) -> Instance:
        """The instance of any kind with this id; NotFound when discovery has none, and
        BadRequest for one without internal gRPC (a dispatcher)."""
        found = next((i for kind in KINDS for i in self.discovery.instances(kind)
                      if i.id == instance_id), None)
        if found is None:
            raise NotFound("unknown instance")
        if "grpc" not in found.addresses:
            raise BadRequest(f"{found.kind} instances serve no internal gRPC: they cannot be "
                             "profiled")
        return found

    async def take(self, instance_id: str, body: dict[str, Any]) -> Download:
        """Profile `instance_id` for the body's seconds and answer the chosen format."""
        checked = PROFILE.parse(body)
        media = FORMATS[checked["format"]]
        target = self.find(instance_id).addresses["grpc"]
        profile = await profiling.profile(self.channels, target, checked["seconds"],
                                          checked["hz"], self.timeout_s)
        if checked["format"] == "collapsed":
            return Download(profile.collapsed().encode(), media,
                            f"{instance_id}.collapsed.txt", profile)
        return Download(json.dumps(profile.speedscope(instance_id)).encode(), media,
                        f"{instance_id}.speedscope.json", profile)
