"""The room's local index of who listens to what: apps and topics (docs/protocol.md §6).

    by app           -> connections serving the app       (broadcast fan-out)
    by (app, topic)  -> connections bound to the topic    (topic publish)
    by (app, uid)    -> connections that BOUND the app    (unicast to an app bound after AUTH;
                                                           the AUTH app is in the room's Hub)

The reverse direction (what one connection holds) lives in the connection's own state
(`Holdings`: services/room/state.py ConnState), so dropping a connection costs what it held,
not a scan.
Plain dicts used as ordered sets; event loop only. Audience lookups return new lists: a write
can close a slow consumer, which leaves the index while the caller iterates.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from pushwire_protocol.errors import BadRequest, LimitError

MAX_TOPIC_LEN = 128
MAX_TOPICS = 64              # topics bound per connection (all apps together)
MAX_APPS = 8                 # apps one connection serves (AUTH app included)


class Listener(Protocol):
    """A connection as the index needs it (hashable by identity)."""

    @property
    def uid(self) -> str: ...

    @property
    def device(self) -> str: ...


class Holdings(Protocol):
    """What one connection holds; the index keeps it in step with its own maps."""

    apps: set[str]
    topics: set[tuple[str, str]]


M = TypeVar("M", bound=Listener)


class TopicIndex(Generic[M]):
    """Apps and topics of one room's connections."""

    def __init__(self, max_topics: int = MAX_TOPICS, max_apps: int = MAX_APPS) -> None:
        self.max_topics = max_topics
        self.max_apps = max_apps
        self._by_app: dict[str, dict[M, None]] = {}
        self._by_topic: dict[tuple[str, str], dict[M, None]] = {}
        self._guests: dict[tuple[str, str], dict[M, None]] = {}

    # --- changes ------------------------------------------------------------------------------

    def join(self, member: M, held: Holdings, app: str, *, guest: bool = False) -> None:
        """Add `member` to the audience of `app`: after AUTH (the AUTH app) and after a BIND
        of another app (`guest`: unicast for that app finds it here). Idempotent."""
        self.check_join(held, app)
        held.apps.add(app)
        self._by_app.setdefault(app, {})[member] = None
        if guest:
            self._guests.setdefault((app, member.uid), {})[member] = None

    def leave(self, member: M, held: Holdings, app: str) -> list[str]:
        """Remove `member` from `app` and from the app's topics (UNBIND of an app, or the
        connection closed); return the topics it had."""
        removed = self.unbind(member, held, app, ())
        held.apps.discard(app)
        _discard(self._by_app, app, member)
        _discard(self._guests, (app, member.uid), member)
        return removed

    def bind(self, member: M, held: Holdings, app: str, topics: list[str]) -> list[str]:
        """Bind topics of an app the member serves; return every topic of `app` it has now.

        Raises BadRequest for an app it does not serve or a bad topic name, LimitError
        beyond `max_topics` (nothing is bound then)."""
        if app not in held.apps:
            raise BadRequest(f"bind app {app!r} first")
        wanted = self.check_bind(held, app, topics)
        for topic in wanted:
            held.topics.add((app, topic))
            self._by_topic.setdefault((app, topic), {})[member] = None
        return sorted(t for a, t in held.topics if a == app)

    def check_join(self, held: Holdings, app: str) -> None:
        """Raise LimitError when the connection cannot serve `app` too (`max_apps`)."""
        if app not in held.apps and len(held.apps) >= self.max_apps:
            raise LimitError(f"a connection serves at most {self.max_apps} apps")

    def check_bind(self, held: Holdings, app: str, topics: list[str]) -> list[str]:
        """The topics of `app` in `topics` not bound yet; raises BadRequest for a bad name,
        LimitError beyond `max_topics`. Changes nothing."""
        wanted = [t for t in dict.fromkeys(topics) if (app, t) not in held.topics]
        for topic in wanted:
            if not topic or len(topic) > MAX_TOPIC_LEN:
                raise BadRequest(f"topic names are 1-{MAX_TOPIC_LEN} characters")
        if len(held.topics) + len(wanted) > self.max_topics:
            raise LimitError(f"a connection binds at most {self.max_topics} topics")
        return wanted

    def unbind(self, member: M, held: Holdings, app: str, topics: list[str] | tuple[()]) \
            -> list[str]:
        """Unbind topics of `app` (every one of the app's if `topics` is empty); return those
        that were bound."""
        names = topics or [t for a, t in held.topics if a == app]
        removed = []
        for topic in dict.fromkeys(names):
            if (app, topic) in held.topics:
                held.topics.discard((app, topic))
                _discard(self._by_topic, (app, topic), member)
                removed.append(topic)
        return sorted(removed)

    def drop(self, member: M, held: Holdings) -> None:
        """Forget the member everywhere (its connection closed)."""
        for app in list(held.apps):
            self.leave(member, held, app)

    # --- audiences ----------------------------------------------------------------------------

    def app_members(self, app: str) -> list[M]:
        """Connections serving `app` now (broadcast), as a new list."""
        return list(self._by_app.get(app, ()))

    def topic_members(self, app: str, topic: str) -> list[M]:
        """Connections bound to (app, topic) now, as a new list."""
        return list(self._by_topic.get((app, topic), ()))

    def guests_of(self, app: str, uid: str, device: str = "") -> list[M]:
        """Connections of `uid` that bound `app` after AUTH (one device's only if `device`)."""
        members = self._guests.get((app, uid), ())
        return [m for m in members if not device or m.device == device]

    def app_count(self, app: str) -> int:
        return len(self._by_app.get(app, ()))

    def topic_count(self, app: str, topic: str) -> int:
        return len(self._by_topic.get((app, topic), ()))


K = TypeVar("K")


def _discard(index: dict[K, dict[M, None]], key: K, member: M) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(member, None)
        if not members:
            del index[key]
