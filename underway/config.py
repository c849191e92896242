"""Settings: one frozen value holding every knob.

Each field is also an ``UNDERWAY_<FIELD>`` environment variable and a ``--field`` flag of the
command line. Durations are float seconds; in variables and flags they may carry a unit
(``500ms``, ``30s``, ``5m``, ``2h``, ``7d``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .bounds import LabelBounds, TaskBounds, check_queue_name
from .exceptions import ConfigError
from .jobs import CRASH_RETRIES

ENV_PREFIX = "UNDERWAY_"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """``"30"`` → 30.0, ``"500ms"`` → 0.5, ``"7d"`` → 604800.0."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{text!r} is not a duration: write seconds, or a number with ms, s, m, h or d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    url: str = field(default="sqlite:///underway.db", metadata={"help": "store URL"})
    app: str | None = field(default=None, metadata={"help": "module:attribute of the App to load"})
    queues: tuple[str, ...] = field(default=(), metadata={"help": "queues a worker serves (empty: all)"})
    concurrency: int = field(default=10, metadata={"help": "jobs one worker runs at once"})
    lease_timeout: float = field(default=30.0, metadata={"help": "seconds a claim lasts without heartbeat"})
    heartbeat_interval: float | None = field(default=None, metadata={"help": "default: a third of the lease"})
    progress_interval: float = field(
        default=0.05, metadata={"help": "at most one progress write per job per interval"}
    )
    cancel_grace: float = field(default=10.0, metadata={"help": "seconds a cancelled job may take to stop"})
    shutdown_grace: float = field(
        default=30.0, metadata={"help": "seconds running jobs get to finish on SIGTERM"}
    )
    crash_retries: int = field(
        default=CRASH_RETRIES,
        metadata={"help": "times a job submitted here may lose its worker and run again (tasks may say)"},
    )
    poll_interval: float = field(
        default=0.001, metadata={"help": "how often idle processes look for changes by others"}
    )
    sweep_interval: float = field(
        default=5.0, metadata={"help": "how often a worker requeues jobs with expired leases"}
    )
    retention: float = field(
        default=7 * 86400.0, metadata={"help": "finished jobs are pruned after this long"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address the server listens on"})
    port: int = field(default=8000, metadata={"help": "port the server listens on"})
    max_body_size: int = field(
        default=1024 * 1024, metadata={"help": "largest request body in bytes (413 above)"}
    )
    sse_ping_interval: float = field(
        default=15.0, metadata={"help": "seconds between SSE comment heartbeats"}
    )
    sse_send_timeout: float = field(
        default=10.0, metadata={"help": "a stream client that takes longer to read is dropped"}
    )
    sse_retry: float = field(default=2.0, metadata={"help": "reconnect delay told to SSE clients"})
    ws_max_message: int = field(
        default=64 * 1024, metadata={"help": "largest WebSocket message in bytes (1009 above)"}
    )
    ws_max_subscriptions: int = field(default=100, metadata={"help": "subscriptions one WebSocket may hold"})
    ws_max_connections: int = field(
        default=10_000, metadata={"help": "WebSockets one server accepts (4429 above)"}
    )
    auth: str = field(
        default="auto",
        metadata={"help": "auto (off only on loopback with no API key), on or off"},
    )
    allowed_origins: tuple[str, ...] = field(
        default=(), metadata={"help": "browser Origins allowed by CORS and WebSockets (empty: same origin)"}
    )
    max_batch_items: int = field(default=100_000, metadata={"help": "most items in one batch (413 above)"})
    max_json_depth: int = field(
        default=32, metadata={"help": "deepest nesting of submitted arguments and answers (422 above)"}
    )
    max_args_size: int = field(
        default=256 * 1024, metadata={"help": "largest arguments of one job, in bytes of JSON (422 above)"}
    )
    max_log_line: int = field(
        default=8192, metadata={"help": "longest log line of a task, in characters (cut with a marker above)"}
    )
    max_log_lines: int = field(
        default=10_000,
        metadata={"help": "log lines stored per job; further ones are counted, not stored"},
    )
    max_result_size: int = field(
        default=1024 * 1024,
        metadata={"help": "largest result of a task, in bytes of JSON (the job fails above)"},
    )
    max_checkpoint_size: int = field(
        default=256 * 1024,
        metadata={"help": "largest checkpoint of a task, in bytes of JSON (ctx.checkpoint() raises above)"},
    )
    max_listed_result: int = field(
        default=4096,
        metadata={"help": "largest result a job list or list stream shows, bytes of JSON (above: its size)"},
    )
    max_labels: int = field(default=20, metadata={"help": "most labels of one job or batch (422 above)"})
    max_label_key: int = field(default=64, metadata={"help": "longest label key, in characters (422 above)"})
    max_label_value: int = field(
        default=256, metadata={"help": "longest label value, in characters (422 above)"}
    )
    max_streams_per_user: int = field(
        default=100,
        metadata={"help": "open streams and WebSocket subscriptions of one user, per server (429 above)"},
    )
    max_submissions_per_minute: int = field(
        default=600, metadata={"help": "submissions of one user per minute, per server (429 above)"}
    )
    session_ttl: float = field(
        default=12 * 3600.0, metadata={"help": "how long a browser stays signed in (POST /session)"}
    )
    key_check_interval: float = field(
        default=2.0, metadata={"help": "how often open streams check that their key is not revoked"}
    )

    def __post_init__(self) -> None:
        positive = (
            "lease_timeout",
            "progress_interval",
            "poll_interval",
            "sweep_interval",
            "key_check_interval",
            "session_ttl",
            "max_batch_items",
            "max_json_depth",
            "max_args_size",
            "max_log_line",
            "max_log_lines",
            "max_result_size",
            "max_checkpoint_size",
            "max_listed_result",
            "max_label_key",
            "max_label_value",
            "max_streams_per_user",
            "max_submissions_per_minute",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be greater than 0, not {getattr(self, name)}")
        if self.max_labels < 0:
            raise ConfigError(f"max_labels must not be negative, not {self.max_labels}")
        for queue in self.queues:
            try:
                check_queue_name(queue)
            except ValueError as exc:
                raise ConfigError(f"queues: {exc}") from None
        if self.crash_retries < 0:
            raise ConfigError(f"crash_retries must not be negative, not {self.crash_retries}")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.auth not in ("auto", "on", "off"):
            raise ConfigError(f"auth is auto, on or off, not {self.auth!r}")
        if "*" in self.allowed_origins:
            raise ConfigError(
                "allowed_origins cannot be '*' (credentials go with these requests): list the origins,"
                " such as https://app.example.com"
            )
        if self.heartbeat_interval is not None and not 0 < self.heartbeat_interval < self.lease_timeout:
            raise ConfigError("heartbeat_interval must be greater than 0 and less than lease_timeout")

    @property
    def task_bounds(self) -> TaskBounds:
        """What one running job may write (log lines, result, checkpoint)."""
        return TaskBounds(
            max_log_line=self.max_log_line,
            max_log_lines=self.max_log_lines,
            max_result_size=self.max_result_size,
            max_checkpoint_size=self.max_checkpoint_size,
        )

    @property
    def label_bounds(self) -> LabelBounds:
        return LabelBounds(
            max_labels=self.max_labels, max_label_key=self.max_label_key, max_label_value=self.max_label_value
        )

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat_interval or self.lease_timeout / 3

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``UNDERWAY_*`` variables, then ``overrides`` that are not ``None``."""
        values = env_values(os.environ if environ is None else environ)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields that ``UNDERWAY_*`` variables set, parsed."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None and raw != "":
            values[f.name] = parse_field(f.name, raw)
    return values


_FLOAT_FIELDS = {f.name for f in dataclasses.fields(Settings) if "float" in str(f.type)}
_INT_FIELDS = {f.name for f in dataclasses.fields(Settings) if f.type in ("int", int)}
_TUPLE_FIELDS = {"queues", "allowed_origins"}


def parse_field(name: str, raw: str) -> Any:
    """Turn the text of a variable or flag into the field's type, with a clear error."""
    try:
        if name in _FLOAT_FIELDS:
            return parse_duration(raw)
        if name in _INT_FIELDS:
            return int(raw)
        if name in _TUPLE_FIELDS:
            return tuple(q.strip() for q in raw.split(",") if q.strip())
    except (ValueError, ConfigError) as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
    return raw
