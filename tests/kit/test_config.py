"""services/kit/config.py: defaults, TOML file, environment and overrides, validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from pushwire_protocol.errors import ConfigError
from services.dispatcher.config import DispatcherConfig
from services.kit.config import ServiceConfig, checked_secret, client_secret, load, new_secret

SECRET = "s3cret-of-the-test-cluster"


@dataclass(frozen=True)
class DemoConfig(ServiceConfig):
    workers: int = 2
    ratio: float = 0.5
    verbose: bool = False
    greeting: str = "hi"
    peers: tuple[str, ...] = ()

    def validate(self) -> None:
        super().validate()
        if self.workers < 1:
            raise ConfigError("workers must be >= 1")


def _load(env: dict[str, str] | None = None, **overrides: object) -> DemoConfig:
    return load(DemoConfig, "demo", {"PUSHWIRE_CLUSTER_SECRET": SECRET, **(env or {})},
                **overrides)


def _toml(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "pushwire.toml"
    path.write_text(text)
    return {"PUSHWIRE_CONFIG": str(path)}


def test_defaults() -> None:
    config = _load()
    assert (config.workers, config.ratio, config.verbose, config.greeting, config.peers) == \
        (2, 0.5, False, "hi", ())
    assert config.rpc_batch_max == 256 and config.grpc_port == 0 and config.idc == "dc1"


def test_instance_id_generated_when_empty_and_unique() -> None:
    first, second = _load().instance, _load().instance
    assert first.startswith("demo-") and len(first) > len("demo-")
    assert first != second


def test_instance_id_kept_when_given() -> None:
    assert _load({"PUSHWIRE_INSTANCE": "demo-7"}).instance == "demo-7"


def test_env_converts_to_field_types() -> None:
    config = _load({"PUSHWIRE_WORKERS": "7", "PUSHWIRE_RATIO": "0.25", "PUSHWIRE_VERBOSE": "yes",
                    "PUSHWIRE_GREETING": "hello", "PUSHWIRE_PEERS": "a:1, b:2,,"})
    assert (config.workers, config.ratio, config.verbose, config.greeting, config.peers) == \
        (7, 0.25, True, "hello", ("a:1", "b:2"))


@pytest.mark.parametrize("order", ["global-first", "service-first"])
def test_service_env_beats_global_env(order: str) -> None:
    pairs = [("PUSHWIRE_WORKERS", "3"), ("PUSHWIRE_DEMO_WORKERS", "5")]
    env = dict(pairs if order == "global-first" else reversed(pairs))
    assert _load(env).workers == 5


def test_other_service_env_is_ignored() -> None:
    assert _load({"PUSHWIRE_ROOM_WORKERS": "9"}).workers == 2


def test_explicit_overrides_beat_env_and_none_means_unset() -> None:
    env = {"PUSHWIRE_DEMO_WORKERS": "5", "PUSHWIRE_RATIO": "0.1"}
    config = _load(env, workers=11, ratio=None)
    assert (config.workers, config.ratio) == (11, 0.1)


@pytest.mark.parametrize(("raw", "value"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("On", True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False),
])
def test_bool_parsing(raw: str, value: bool) -> None:
    assert _load({"PUSHWIRE_VERBOSE": raw}).verbose is value


@pytest.mark.parametrize(("var", "raw"), [
    ("PUSHWIRE_DEMO_WORKERS", "many"), ("PUSHWIRE_WORKERS", "1.5"), ("PUSHWIRE_RATIO", "half"),
    ("PUSHWIRE_VERBOSE", "maybe"), ("PUSHWIRE_GRPC_PORT", "80a"),
])
def test_bad_env_value_names_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=var):
        _load({var: raw})


def test_unknown_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="wokers"):
        _load(wokers=3)


def test_toml_top_level_and_section(tmp_path: Path) -> None:
    env = _toml(tmp_path, 'workers = 3\nratio = 0.75\n[demo]\nratio = 0.125\ngreeting = "yo"\n'
                          '[room]\nworkers = 99\n')
    config = _load(env)
    assert (config.workers, config.ratio, config.greeting) == (3, 0.125, "yo")


def test_env_beats_toml(tmp_path: Path) -> None:
    env = _toml(tmp_path, "workers = 3\n[demo]\nworkers = 4\n")
    assert _load(env).workers == 4
    assert _load({**env, "PUSHWIRE_WORKERS": "6"}).workers == 6


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="colour"):
        _load(_toml(tmp_path, '[demo]\ncolour = "red"\n'))


def test_unreadable_or_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        _load({"PUSHWIRE_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(ConfigError, match="cannot read"):
        _load(_toml(tmp_path, "workers = = 3\n"))


@pytest.mark.parametrize("line", ['rpc_workers = "many"', 'grpc_port = "http"',
                                  'workers = "two"', 'verbose = "perhaps"'])
def test_wrongly_typed_toml_value_is_a_config_error(tmp_path: Path, line: str) -> None:
    """A TOML value of the wrong type is named in a ConfigError, not a TypeError later."""
    key = line.split()[0]
    with pytest.raises(ConfigError, match=key):
        _load(_toml(tmp_path, f"[demo]\n{line}\n"))


def test_quoted_false_in_toml_does_not_turn_true(tmp_path: Path) -> None:
    try:
        config = _load(_toml(tmp_path, '[demo]\nverbose = "false"\n'))
    except ConfigError:
        return  # rejecting the quoted bool is fine too
    assert config.verbose is False


@pytest.mark.parametrize(("override", "message"), [
    ({"grpc_port": 70000}, "grpc_port"), ({"metrics_port": -1}, "metrics_port"),
    ({"rpc_batch_max": 0}, "rpc_batch_max"), ({"rpc_workers": 0}, "rpc_workers"),
    ({"rpc_queue": 0}, "rpc_queue"), ({"rpc_timeout_s": 0.0}, "rpc_timeout_s"),
    ({"rpc_linger_ms": -1.0}, "rpc_linger_ms"), ({"log_level": "loud"}, "log_level"),
    ({"workers": 0}, "workers"),
])
def test_validate_failures(override: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load({}, **override)


def test_log_level_is_case_insensitive() -> None:
    assert _load({"PUSHWIRE_LOG_LEVEL": "DEBUG"}).log_level == "DEBUG"


# --- the cluster secret (docs/security.md) ---


def test_a_service_refuses_to_start_without_a_cluster_secret() -> None:
    with pytest.raises(ConfigError, match="PUSHWIRE_CLUSTER_SECRET"):
        load(DemoConfig, "demo", {})


def test_the_secret_comes_from_env_or_a_file(tmp_path: Path) -> None:
    assert _load().rpc_secret() == SECRET
    path = tmp_path / "secret"
    path.write_text(f"  {SECRET}x\n")
    config = load(DemoConfig, "demo", {"PUSHWIRE_CLUSTER_SECRET_FILE": str(path)})
    assert config.rpc_secret() == SECRET + "x"


def test_the_secret_is_not_in_the_config_repr() -> None:
    assert SECRET not in repr(_load())


def test_running_without_a_secret_must_be_asked_for() -> None:
    config = load(DemoConfig, "demo", {"PUSHWIRE_INSECURE_RPC": "1"})
    assert config.rpc_secret() is None
    with pytest.raises(ConfigError, match="exclude"):
        _load({"PUSHWIRE_INSECURE_RPC": "1"})


@pytest.mark.parametrize(("env", "message"), [
    ({"PUSHWIRE_CLUSTER_SECRET": "short"}, "at least 16"),
    ({"PUSHWIRE_CLUSTER_SECRET": "with a space in the middle"}, "printable ASCII"),
    ({"PUSHWIRE_CLUSTER_SECRET": "ünïcödé-ünïcödé-ünïcödé"}, "printable ASCII"),
    ({"PUSHWIRE_CLUSTER_SECRET_FILE": "/nonexistent/secret"}, "cannot read"),
    ({"PUSHWIRE_CLUSTER_SECRET_FILE": "/dev/null"}, "empty"),
    ({"PUSHWIRE_CLUSTER_SECRET_FILE": "/x", "PUSHWIRE_CLUSTER_SECRET": SECRET}, "not both"),
], ids=["short", "space", "non-ascii", "missing-file", "empty-file", "both"])
def test_a_bad_secret_stops_the_service_with_a_clear_error(env: dict[str, str],
                                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(DemoConfig, "demo", env)


def test_the_dispatcher_needs_no_secret() -> None:
    """It reads discovery and answers HTTP: no internal gRPC either way."""
    assert load(DispatcherConfig, "dispatcher", {}).http_port == 8000


def test_tools_find_the_secret_in_env_then_file_then_the_dev_cluster(tmp_path: Path) -> None:
    dev = tmp_path / "cluster-secret"
    assert client_secret({}, dev) is None
    dev.write_text(SECRET + "-dev\n")
    assert client_secret({}, dev) == SECRET + "-dev"
    other = tmp_path / "other"
    other.write_text(SECRET + "-file")
    assert client_secret({"PUSHWIRE_CLUSTER_SECRET_FILE": str(other)}, dev) == SECRET + "-file"
    assert client_secret({"PUSHWIRE_CLUSTER_SECRET": SECRET,
                          "PUSHWIRE_CLUSTER_SECRET_FILE": str(other)}, dev) == SECRET


# --- at the edge: trusted proxies and CORS (docs/config.md "At the edge") -----------------------

def test_edge_settings_of_the_dispatcher() -> None:
    assert load(DispatcherConfig, "dispatcher", {}).cors_origins == ("*",)
    assert load(DispatcherConfig, "dispatcher",
                {"PUSHWIRE_DISPATCHER_CORS_ORIGINS": ""}).cors_origins == ()
    config = load(DispatcherConfig, "dispatcher", {
        "PUSHWIRE_DISPATCHER_CORS_ORIGINS": "https://a.example,http://localhost:3000",
        "PUSHWIRE_DISPATCHER_TRUSTED_PROXIES": "10.0.0.0/8"})
    assert config.cors_origins == ("https://a.example", "http://localhost:3000")
    assert config.trusted_proxies == ("10.0.0.0/8",)
    for var, raw in (("PUSHWIRE_DISPATCHER_CORS_ORIGINS", "https://a.example/"),
                     ("PUSHWIRE_DISPATCHER_TRUSTED_PROXIES", "10.0.0.0/33")):
        with pytest.raises(ConfigError):
            load(DispatcherConfig, "dispatcher", {var: raw})


def test_new_secret_never_starts_with_a_dash_so_a_flag_can_carry_it() -> None:
    """One token_urlsafe in 64 starts with "-", which argparse reads as a flag after
    `--admin-key` (CI saw `pushwire app set ... --admin-key -x...` fail with usage)."""
    made = [new_secret() for _ in range(2000)]
    assert not [s for s in made if s.startswith("-")]
    assert len(set(made)) == len(made)
    assert all(checked_secret(s, "test") == s and len(s) >= 43 for s in made)
    assert any("-" in s for s in made)                  # the alphabet itself is unchanged
