"""Runtime profiling of one service process: a thread that samples every thread's Python
stack a fixed number of times per second, for a bounded time (docs/operations.md §9).

    Profiler.profile(seconds, hz) ──Conflict while another runs──▶ a thread:
        every 1/hz s: sys._current_frames() → each thread's stack (root first) → counted
    ──▶ Profile: frames + {(thread, stack): samples} ──▶ collapsed() (flamegraph.pl input)
                                                      └─▶ speedscope() (speedscope.app JSON)

Off unless asked: no thread, no hook, no counter exists between profiles, so a service that
is not being profiled pays nothing. While one runs, the sampler holds the GIL for one walk
of every stack per tick (tens of microseconds for a service's few threads); `sampler_cpu_s`
says what it cost. One profile at a time per process: a second request is refused
(Conflict) rather than doubling the cost or splitting the samples. The profile is of wall
clock time: an idle thread's waiting stack is counted too (in an asyncio service, the event
loop's own frame is where it waits).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from pushwire_protocol.errors import BadRequest, Conflict

MIN_S, MAX_S = 1.0, 60.0            # bounds of one profile's duration
HZ_DEFAULT, HZ_MAX = 100, 1000      # samples per second
# While sampling, a thread that runs Python code hands the GIL to the sampler within this
# long (default 5 ms): work done in bursts shorter than the switch interval would otherwise
# finish before the sampler gets the GIL, and the event loop would look idle.
SWITCH_S = 0.0005
MAX_DEPTH = 256                     # frames kept of one stack (the innermost are dropped)
SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


@dataclass(frozen=True, slots=True)
class Frame:
    name: str           # qualified function name
    file: str           # path relative to its sys.path entry (services/room/connection.py)
    line: int           # first line of the function

    @property
    def label(self) -> str:
        return f"{self.name} ({self.file}:{self.line})"


@dataclass(frozen=True)
class Profile:
    """Samples of one process: `stacks` maps (thread name, frame indexes root first) to the
    number of ticks that saw that thread in that stack."""

    frames: tuple[Frame, ...]
    stacks: dict[tuple[str, tuple[int, ...]], int]
    ticks: int
    seconds: float              # how long it sampled
    hz: int
    sampler_cpu_s: float        # CPU time the sampling thread used

    def collapsed(self) -> str:
        """One line per distinct stack, `thread;outer;...;inner count` (Brendan Gregg's
        collapsed format: flamegraph.pl, speedscope, inferno read it)."""
        lines = [";".join((_clean(thread), *(_clean(self.frames[i].label) for i in stack)))
                 + f" {count}" for (thread, stack), count in sorted(self.stacks.items())]
        return "".join(line + "\n" for line in lines)

    def speedscope(self, name: str) -> dict[str, Any]:
        """The profile as speedscope's file format: one sampled profile per thread, weights
        in seconds."""
        threads: dict[str, tuple[list[list[int]], list[float]]] = {}
        for (thread, stack), count in sorted(self.stacks.items()):
            samples, weights = threads.setdefault(thread, ([], []))
            samples.append(list(stack))
            weights.append(count / self.hz)
        return {
            "$schema": SPEEDSCOPE_SCHEMA, "name": name, "exporter": "pushwire",
            "activeProfileIndex": 0,
            "shared": {"frames": [{"name": f.name, "file": f.file, "line": f.line}
                                  for f in self.frames]},
            "profiles": [{"type": "sampled", "name": thread, "unit": "seconds",
                          "startValue": 0, "endValue": self.seconds, "samples": samples,
                          "weights": weights} for thread, (samples, weights) in threads.items()],
        }


def _clean(label: str) -> str:
    # ';' separates frames and the last space the count: neither may appear inside one
    return label.replace(";", ",")


def checked(seconds: float, hz: int) -> tuple[float, int]:
    """(seconds, hz) when within bounds (hz 0: the default), else BadRequest."""
    if not MIN_S <= seconds <= MAX_S:
        raise BadRequest(f"seconds must be {MIN_S:g} to {MAX_S:g}")
    hz = hz or HZ_DEFAULT
    if not 1 <= hz <= HZ_MAX:
        raise BadRequest(f"hz must be 1 to {HZ_MAX}")
    return seconds, hz


class Profiler:
    """The process's one profiler: at most one profile runs at a time."""

    def __init__(self) -> None:
        self._running = threading.Lock()    # held by the sampling thread while it runs

    @property
    def busy(self) -> bool:
        return self._running.locked()

    async def profile(self, seconds: float, hz: int = HZ_DEFAULT) -> Profile:
        """Sample this process for `seconds` at `hz`; Conflict while another profile runs,
        BadRequest out of bounds. Cancelling stops the sampler at its next tick."""
        seconds, hz = checked(seconds, hz)
        if not self._running.acquire(blocking=False):
            raise Conflict("a profile of this instance is already running; retry when it ends")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Profile] = loop.create_future()
        stop = threading.Event()
        # A thread of its own, started here: it always runs, so it always releases the lock
        # (a pool's queued job can be cancelled before it starts).
        try:
            threading.Thread(target=self._sample, args=(seconds, hz, stop, loop, done),
                             name="pushwire-profiler", daemon=True).start()
        except BaseException:
            self._running.release()
            raise
        try:
            return await done
        finally:
            stop.set()

    def _sample(self, seconds: float, hz: int, stop: threading.Event,
                loop: asyncio.AbstractEventLoop, done: asyncio.Future[Profile]) -> None:
        outcome: Profile | Exception
        try:
            outcome = Sampler(hz).run(seconds, stop)
        except Exception as exc:            # a bug: the caller gets it, the process goes on
            outcome = exc
        finally:
            self._running.release()
        with suppress(RuntimeError):        # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, done, outcome)


def _settle(done: asyncio.Future[Profile], outcome: Profile | Exception) -> None:
    if done.done():                         # cancelled: the caller left
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


class Sampler:
    """The sampling loop (run on a thread of its own, never the event loop's)."""

    def __init__(self, hz: int) -> None:
        self.hz = hz
        self.me = threading.get_ident()
        self.frames: list[Frame] = []
        self.index: dict[CodeType, int] = {}
        self.threads: dict[int, str] = {}
        self.counts: Counter[tuple[str, tuple[int, ...]]] = Counter()
        self.roots = sorted({str(Path(p).resolve()) for p in sys.path if p}, key=len,
                            reverse=True)

    def run(self, seconds: float, stop: threading.Event) -> Profile:
        """Tick every 1/hz s (on a fixed schedule: a slow tick does not shift the next)
        until `seconds` passed or `stop` is set."""
        cpu0, start = time.thread_time(), time.monotonic()
        ticks = 0
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, SWITCH_S))
        try:
            while True:
                self.tick()
                ticks += 1
                due = start + ticks / self.hz
                if due - start >= seconds or stop.wait(max(0.0, due - time.monotonic())):
                    break
        finally:
            sys.setswitchinterval(switch)
        return Profile(tuple(self.frames), dict(self.counts), ticks,
                       time.monotonic() - start, self.hz, time.thread_time() - cpu0)

    def tick(self) -> None:
        """Count one sample of every thread but this one."""
        for ident, frame in sys._current_frames().items():
            if ident != self.me:
                self.counts[(self.thread_name(ident), self.stack(frame))] += 1

    def stack(self, frame: FrameType | None) -> tuple[int, ...]:
        codes: list[CodeType] = []
        while frame is not None and len(codes) < MAX_DEPTH:
            codes.append(frame.f_code)
            frame = frame.f_back
        return tuple(self.frame_of(code) for code in reversed(codes))

    def frame_of(self, code: CodeType) -> int:
        found = self.index.get(code)
        if found is None:
            found = self.index[code] = len(self.frames)
            self.frames.append(Frame(code.co_qualname, self.short(code.co_filename),
                                     code.co_firstlineno))
        return found

    def short(self, filename: str) -> str:
        """`filename` relative to the longest sys.path entry holding it (services/room/...,
        asyncio/events.py), so a profile reads the same on every machine."""
        for root in self.roots:
            if filename.startswith(root + "/"):
                return filename[len(root) + 1:]
        return filename

    def thread_name(self, ident: int) -> str:
        if ident not in self.threads:       # a thread started since: learn every name again
            self.threads.update({t.ident: t.name for t in threading.enumerate()
                                 if t.ident is not None})
        return self.threads.setdefault(ident, f"thread-{ident}")
