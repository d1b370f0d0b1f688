"""room's configuration (every default here; env PUSHWIRE_ROOM_<FIELD>)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from pushwire_protocol.errors import ConfigError
from services.kit.config import ServiceConfig
from services.kit.tls import TlsConfig


@dataclass(frozen=True)
class RoomConfig(ServiceConfig, TlsConfig):
    grpc_port: int = 9400
    ws_port: int = 8200
    ws_advertise: str = ""             # host clients use; empty: `advertise`
    # The URL clients must use when it is not this room's own ws(s)://<ws_advertise>:<port>/,
    # e.g. a TLS-terminating balancer's wss://push.example.com:443 (the dispatcher hands it out).
    ws_public_url: str = ""
    max_connections: int = 100_000     # global limit (close 4004 beyond it)
    max_frame: int = 64 * 1024         # bytes per client message (close 4104 beyond it)
    outbound_limit: int = 1024 * 1024  # unsent bytes per connection (close 4001 beyond it)
    auth_timeout_s: float = 10.0
    heartbeat_factor: float = 1.5
    heartbeat_grace_s: float = 5.0
    replay_batch: int = 100            # offline messages per load round
    # A read of an app's broadcast log answers connects' replay checks this long (the room
    # learns the broadcasts that start in it meanwhile; services/room/logview.py); 0: every
    # connect asks saver.
    broadcast_view_s: float = 1.0
    load_report_s: float = 5.0         # how often the connection count goes to discovery
    # A gRPC call costs the room ~0.4 ms of CPU whatever its size: let batches fill longer than
    # other services do (connection storm: -22% room CPU per session; bench/RESULTS.md).
    rpc_linger_ms: float = 5.0
    redeliver_every_s: float = 30.0    # sweep for overdue messages of online sessions
    redeliver_min_age_s: float = 10.0  # a message unacked this long is overdue
    # A live write's delivery record waits this long (to twice as long) for the client's ACK
    # to carry it to saver: one saver call per push instead of two (services/saver/client.py;
    # capped at a quarter of redeliver_min_age_s). 0: send each record at once.
    delivered_hold_s: float = 1.0
    # Sessions owed nothing the room knows of are asked about in turn: each this often.
    redeliver_full_every_s: float = 60.0
    # Access policy (services/room/policy.py, docs/operations.md §2); apps add their own.
    allow_cidrs: tuple[str, ...] = ()  # non-empty: only these client networks (else 4107)
    deny_cidrs: tuple[str, ...] = ()   # these client networks are refused (4107)
    ip_max_connections: int = 0        # open connections per client address, 0: no limit (4104)
    accept_rate_per_s: float = 0.0     # new connections per second, 0: no limit (4004)
    accept_burst: int = 0              # accepted at once above the rate; 0: one second's worth
    up_rate_per_s: float = 20.0        # UP packets per connection per second (ERROR 1005) ...
    up_burst: int = 40                 # ... after a burst; refused this many more times: 4104
    # Bounds on one connection (services/room/protocol.py Bounds, docs/protocol.md §9);
    # beyond any of them the connection closes with 4104 (a BATCH before AUTH_REPLY: 4103).
    ack_max_ids: int = 1024            # ids in one ACK (the SDK sends at most 256)
    batch_max_packets: int = 64        # packets in one client BATCH (the SDK sends none)
    packet_rate_per_s: float = 100.0   # packets per connection per second ...
    packet_burst: int = 100            # ... after a burst of this many
    ack_id_rate_per_s: float = 2000.0  # ACK ids per connection per second ...
    ack_id_burst: int = 4000           # ... after a burst of this many
    pre_auth_packets: int = 8          # packets before AUTH_REPLY, AUTH included
    pre_auth_max_frame: int = 4096     # bytes per message before AUTH_REPLY (an AUTH: < 1.3 KiB)
    # Flash-disconnect resume (services/room/resume.py, docs/protocol.md §8).
    resume_linger_s: float = 20.0      # a dropped session is kept this long; 0: no resume
    resume_keep: int = 64              # unacked messages kept per session for a resume
    # Drain and rebalance (services/room/drain.py, docs/operations.md §3).
    drain_rate_per_s: float = 2000.0   # clients sent RECONNECT per second
    drain_spread_ms: int = 3000        # RECONNECT after_ms is spread over [0, this)
    drain_timeout_s: float = 30.0      # SIGTERM: move clients at most this long, then close
    rebalance_after_s: float = 30.0    # a room (re)joined this long ago gets its users back; 0: no
    rebalance_rate_per_s: float = 200.0
    # Workers and addresses (services/room/workers.py).
    reuse_port: bool = False           # share ws_port with other processes (SO_REUSEPORT)
    ws_isp: tuple[str, ...] = ()       # per-ISP addresses for clients: "isp=host[:port]"
    # Behind a TCP load balancer (services/kit/proxy.py, docs/config.md): connections from
    # these networks must start with a PROXY protocol v1/v2 header naming the client.
    trusted_proxies: tuple[str, ...] = ()
    proxy_timeout_s: float = 5.0       # ... sent within this long, else the connection closes
    # JWKS of apps with a `jwks_url` (services/room/jwks.py, docs/security.md).
    jwks_max_age_s: float = 300.0      # keys are fetched again when older than this
    jwks_refetch_s: float = 10.0       # at most one fetch per URL this often (unknown kid)
    jwks_timeout_s: float = 5.0        # one fetch

    def validate(self) -> None:
        super().validate()
        self.validate_tls()
        if not 0 <= self.ws_port <= 65535:
            raise ConfigError("ws_port must be a port number")
        if min(self.max_connections, self.max_frame, self.outbound_limit, self.replay_batch) < 1:
            raise ConfigError("room limits must be >= 1")
        if self.broadcast_view_s < 0 or self.delivered_hold_s < 0:
            raise ConfigError("broadcast_view_s and delivered_hold_s must be >= 0")
        if self.auth_timeout_s <= 0 or self.heartbeat_factor < 1:
            raise ConfigError("auth_timeout_s must be > 0 and heartbeat_factor >= 1")
        if min(self.jwks_max_age_s, self.jwks_refetch_s, self.jwks_timeout_s) <= 0:
            raise ConfigError("jwks_max_age_s, jwks_refetch_s and jwks_timeout_s must be > 0")
        self._validate_policy()
        self._validate_bounds()

    def _validate_bounds(self) -> None:
        if min(self.ack_max_ids, self.batch_max_packets, self.packet_rate_per_s,
               self.ack_id_rate_per_s, self.pre_auth_packets) <= 0:
            raise ConfigError("connection bounds (ack_max_ids, batch_max_packets, rates, "
                              "pre_auth_packets) must be > 0")
        if not 1024 <= self.pre_auth_max_frame <= self.max_frame:
            raise ConfigError("pre_auth_max_frame must be between 1024 (an AUTH fits) and "
                              "max_frame")
        if self.packet_burst < self.batch_max_packets or self.ack_id_burst < self.ack_max_ids:
            raise ConfigError("packet_burst must be >= batch_max_packets and ack_id_burst >= "
                              "ack_max_ids (else a full BATCH or ACK could never pass)")

    def _validate_policy(self) -> None:
        if self.proxy_timeout_s <= 0:
            raise ConfigError("proxy_timeout_s must be > 0")
        for entry in (*self.allow_cidrs, *self.deny_cidrs, *self.trusted_proxies):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(f"bad network {entry!r} in allow_cidrs/deny_cidrs/"
                                  "trusted_proxies") from exc
        if min(self.ip_max_connections, self.accept_rate_per_s, self.accept_burst,
               self.up_rate_per_s, self.up_burst, self.resume_linger_s, self.resume_keep,
               self.drain_spread_ms, self.rebalance_after_s) < 0:
            raise ConfigError("room policy, resume and drain settings must be >= 0")
        if min(self.drain_rate_per_s, self.drain_timeout_s, self.rebalance_rate_per_s) <= 0:
            raise ConfigError("drain_rate_per_s, drain_timeout_s, rebalance_rate_per_s must be > 0")
        for entry in self.ws_isp:
            isp, _, where = entry.partition("=")
            if not isp or not where or "." in isp:
                raise ConfigError(f"ws_isp entries are isp=host[:port] or isp=wss://host:port, "
                                  f"got {entry!r}")
            if "://" in where:
                _checked_url(where, f"ws_isp entry {entry!r}")
        if self.ws_public_url:
            _checked_url(self.ws_public_url, "ws_public_url")


def _checked_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{what}: a ws:// or wss:// URL with a host, like "
                          "wss://push.example.com:443")
