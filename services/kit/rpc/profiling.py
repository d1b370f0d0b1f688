"""The Profiler gRPC face every service's server carries (proto/pushwire/profile.proto), and
the call to it: services/kit/profiler.py does the sampling, this module only translates.

`start_server` adds `ProfilerServicer` to every gRPC server, behind the same cluster
credential as every other internal method (services/kit/rpc/credential.py), so no service
wires it and none can be reached without the credential.
"""

from __future__ import annotations

import grpc.aio

from services.kit.pb import profile_pb2, profile_pb2_grpc
from services.kit.profiler import Frame, Profile, Profiler
from services.kit.rpc.grpcio import Channels, Registration, servicer, translate_call


def registration() -> Registration:
    """The Profiler of this process, for `start_server`."""
    return profile_pb2_grpc.add_ProfilerServicer_to_server, ProfilerServicer(Profiler())


class ProfilerServicer(profile_pb2_grpc.ProfilerServicer):
    def __init__(self, profiler: Profiler) -> None:
        self.profiler = profiler

    @servicer
    async def Profile(self, request: profile_pb2.ProfileRequest,
                      context: grpc.aio.ServicerContext) -> profile_pb2.ProfileReply:
        return to_pb(await self.profiler.profile(request.seconds, request.hz))


def to_pb(profile: Profile) -> profile_pb2.ProfileReply:
    return profile_pb2.ProfileReply(
        frames=[profile_pb2.Frame(name=f.name, file=f.file, line=f.line)
                for f in profile.frames],
        stacks=[profile_pb2.Stack(thread=thread, frames=stack, count=count)
                for (thread, stack), count in profile.stacks.items()],
        ticks=profile.ticks, seconds=profile.seconds, hz=profile.hz,
        sampler_cpu_s=profile.sampler_cpu_s)


def from_pb(reply: profile_pb2.ProfileReply) -> Profile:
    return Profile(tuple(Frame(f.name, f.file, f.line) for f in reply.frames),
                   {(s.thread, tuple(s.frames)): s.count for s in reply.stacks},
                   reply.ticks, reply.seconds, reply.hz, reply.sampler_cpu_s)


async def profile(channels: Channels, target: str, seconds: float, hz: int,
                  timeout_s: float) -> Profile:
    """Profile the process whose gRPC listens at `target`; it answers after `seconds`, so
    the deadline is that plus `timeout_s`."""
    stub = profile_pb2_grpc.ProfilerStub(channels.get(target))
    reply: profile_pb2.ProfileReply = await translate_call(target, stub.Profile(
        profile_pb2.ProfileRequest(seconds=seconds, hz=hz), timeout=seconds + timeout_s))
    return from_pb(reply)
