"""Settings: defaults, UNDERWAY_* variables, validation (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from underway.config import ENV_PREFIX, Settings, parse_duration, parse_field
from underway.exceptions import ConfigError, UnderwayError


def test_defaults() -> None:
    settings = Settings()
    assert settings.url == "sqlite:///underway.db"
    assert settings.app is None
    assert settings.queues == ()
    assert settings.concurrency == 10
    assert settings.lease_timeout == 30.0
    assert settings.heartbeat_interval is None
    assert settings.heartbeat_every == 10.0
    assert settings.progress_interval == 0.05
    assert settings.cancel_grace == 10.0
    assert settings.shutdown_grace == 30.0
    assert settings.retention == 7 * 86400.0
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_every_field_has_help() -> None:
    for f in dataclasses.fields(Settings):
        assert f.metadata.get("help"), f.name


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


def test_heartbeat_every_is_a_third_of_the_lease_by_default() -> None:
    assert Settings(lease_timeout=9.0).heartbeat_every == 3.0
    assert Settings(lease_timeout=9.0, heartbeat_interval=1.5).heartbeat_every == 1.5


# -- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("2.5", 2.5),
        (".5", 0.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        (" 10 s ", 10.0),
        ("1.5m", 90.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "-1", "1e3", "5 minutes", "m", "1,5s", "ms5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text)


# -- environment ---------------------------------------------------------------------------------


def test_from_env_reads_prefixed_variables() -> None:
    settings = Settings.from_env(
        {
            "UNDERWAY_URL": "sqlite:////tmp/x.db",
            "UNDERWAY_APP": "myapp.jobs:app",
            "UNDERWAY_QUEUES": "a,b",
            "UNDERWAY_CONCURRENCY": "4",
            "UNDERWAY_LEASE_TIMEOUT": "5m",
            "UNDERWAY_HEARTBEAT_INTERVAL": "20s",
            "UNDERWAY_PROGRESS_INTERVAL": "500ms",
            "UNDERWAY_CANCEL_GRACE": "2",
            "UNDERWAY_RETENTION": "7d",
            "UNDERWAY_HOST": "0.0.0.0",
            "UNDERWAY_PORT": "9000",
            "UNRELATED": "x",
        }
    )
    assert settings == Settings(
        url="sqlite:////tmp/x.db",
        app="myapp.jobs:app",
        queues=("a", "b"),
        concurrency=4,
        lease_timeout=300.0,
        heartbeat_interval=20.0,
        progress_interval=0.5,
        cancel_grace=2.0,
        retention=604800.0,
        host="0.0.0.0",
        port=9000,
    )


def test_from_env_with_nothing_set_gives_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_ignores_empty_variables() -> None:
    assert Settings.from_env({"UNDERWAY_PORT": "", "UNDERWAY_QUEUES": ""}) == Settings()


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNDERWAY_PORT", "8123")
    assert Settings.from_env().port == 8123


@pytest.mark.parametrize(
    ("raw", "queues"),
    [("a,b", ("a", "b")), (" a , b ,", ("a", "b")), ("solo", ("solo",)), (",,", ())],
)
def test_queues_variable(raw: str, queues: tuple[str, ...]) -> None:
    assert Settings.from_env({"UNDERWAY_QUEUES": raw}).queues == queues


def test_overrides_win_over_variables_unless_none() -> None:
    environ = {"UNDERWAY_PORT": "9000", "UNDERWAY_HOST": "0.0.0.0"}
    settings = Settings.from_env(environ, port=7000, host=None)
    assert (settings.port, settings.host) == (7000, "0.0.0.0")


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("UNDERWAY_PORT", "eighty"),
        ("UNDERWAY_CONCURRENCY", "2.5"),
        ("UNDERWAY_LEASE_TIMEOUT", "soon"),
        ("UNDERWAY_RETENTION", "7 weeks"),
        ("UNDERWAY_HEARTBEAT_INTERVAL", "-1"),
    ],
)
def test_bad_variables_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env({name: raw})
    assert repr(raw) in caught.value.message


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("UNDERWAY_CONCURRENCY", "0", "concurrency must be at least 1"),
        ("UNDERWAY_LEASE_TIMEOUT", "0", "lease_timeout must be greater than 0"),
        ("UNDERWAY_PROGRESS_INTERVAL", "0ms", "progress_interval must be greater than 0"),
        ("UNDERWAY_HEARTBEAT_INTERVAL", "30s", "heartbeat_interval must be greater than 0 and less than"),
    ],
)
def test_variables_that_parse_but_are_invalid(name: str, raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({name: raw})


def test_parse_field_types() -> None:
    assert parse_field("port", "80") == 80
    assert parse_field("lease_timeout", "1m") == 60.0
    assert parse_field("heartbeat_interval", "250ms") == 0.25
    assert parse_field("url", "sqlite:///a.db") == "sqlite:///a.db"
    assert parse_field("queues", "x,y") == ("x", "y")


def test_every_field_can_be_set_from_its_variable() -> None:
    samples = {int: "3", float: "2", str: "x", tuple: "q"}
    words = {"auth": "on"}  # fields whose text is one of a few words
    for f in dataclasses.fields(Settings):
        kind = next(t for t in (int, float, tuple, str) if t.__name__ in str(f.type))
        sample = words.get(f.name, samples[kind])
        value = parse_field(f.name, sample)
        assert getattr(Settings.from_env({ENV_PREFIX + f.name.upper(): sample}), f.name) == value


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lease_timeout": 0.0}, "lease_timeout must be greater than 0"),
        ({"lease_timeout": -5.0}, "lease_timeout must be greater than 0"),
        ({"progress_interval": 0.0}, "progress_interval must be greater than 0"),
        ({"poll_interval": -0.001}, "poll_interval must be greater than 0"),
        ({"sweep_interval": 0.0}, "sweep_interval must be greater than 0"),
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"heartbeat_interval": 0.0}, "heartbeat_interval must be greater than 0"),
        ({"heartbeat_interval": 30.0}, "less than lease_timeout"),
        ({"heartbeat_interval": 5.0, "lease_timeout": 4.0}, "less than lease_timeout"),
    ],
)
def test_validation(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**changes)  # type: ignore[arg-type]


def test_config_error_is_an_underway_error() -> None:
    with pytest.raises(UnderwayError) as caught:
        Settings(concurrency=0)
    assert caught.value.code == "invalid_config"


def test_replace_ignores_none() -> None:
    settings = Settings(port=9000)
    changed = settings.replace(port=None, host="0.0.0.0")
    assert (changed.port, changed.host) == (9000, "0.0.0.0")
    assert settings.host == "127.0.0.1"


def test_replace_validates() -> None:
    with pytest.raises(ConfigError):
        Settings().replace(concurrency=0)


def test_crash_retries_is_read_from_its_variable_and_must_not_be_negative() -> None:
    assert Settings().crash_retries == 2
    assert Settings.from_env({"UNDERWAY_CRASH_RETRIES": "5"}).crash_retries == 5
    assert Settings.from_env({"UNDERWAY_CRASH_RETRIES": "0"}).crash_retries == 0
    with pytest.raises(ConfigError, match="crash_retries must not be negative"):
        Settings(crash_retries=-1)
