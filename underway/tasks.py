"""Tasks: functions registered with ``@app.task``, their argument schema and submission."""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from .events import dumps
from .exceptions import InvalidArguments
from .retry import RetryPolicy
from .store.rows import LONGEST_RATE_WINDOW

if TYPE_CHECKING:
    from .app import App
    from .jobs import Job

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitOptions:
    """How one submission differs from the task's defaults."""

    queue: str | None = None
    priority: int | None = None
    delay: float | None = None
    run_at: float | None = None
    max_attempts: int | None = None
    #: Times the job may lose its worker and run again (default: the task's, else the settings').
    crash_retries: int | None = None
    timeout: float | None = None
    labels: dict[str, str] | None = None
    owner: str | None = None
    #: A second submission with this key returns the first job (same arguments) or is refused
    #: (other arguments: ``IdempotencyConflict``).
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` starts per ``per`` seconds."""

    count: int
    per: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """``"5/s"``, ``"100/m"``, ``"1000/h"``, ``"3/10s"``."""
        match = _RATE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"rate_limit {text!r}: write COUNT/UNIT, e.g. 5/s, 100/m, 1000/h or 3/10s")
        count, amount, unit = int(match["count"]), float(match["amount"] or 1), match["unit"]
        per = amount * _UNITS[unit]
        if count < 1 or not 0 < per <= LONGEST_RATE_WINDOW:
            raise ValueError(f"rate_limit {text!r}: the count must be at least 1, the window at most 1 h")
        return cls(count, per)


_RATE = re.compile(r"(?P<count>\d+)\s*/\s*(?P<amount>\d+(?:\.\d+)?)?\s*(?P<unit>s|m|h)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Limits:
    """How many jobs of a task may run at once and start per window, per key, over all workers."""

    key: Callable[..., object] | None = None
    concurrency: int | None = None
    rate: RateLimit | None = None

    def key_of(self, task: str, args: dict[str, Any]) -> str | None:
        if self.concurrency is None and self.rate is None:
            return None
        return task if self.key is None else str(self.key(**args))


class Task(Generic[P, R]):
    """A registered task. Call it to run the function directly; ``submit`` to queue a job."""

    def __init__(
        self,
        app: App,
        fn: Callable[..., Any],
        *,
        name: str,
        queue: str,
        priority: int,
        timeout: float | None,
        retry: RetryPolicy,
        limits: Limits | None = None,
        crash_retries: int | None = None,
    ) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.fn = fn
        self.name = name
        self.queue = queue
        self.priority = priority
        self.timeout = timeout
        self.retry = retry
        #: Times a job may lose its worker and run again; ``None``: the ``crash_retries`` setting.
        self.crash_retries = crash_retries
        self.is_async = inspect.iscoroutinefunction(fn)
        self.takes_context, self.args_model = _arguments_model(fn, name)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return typing.cast(R, self.fn(*args, **kwargs))

    @property
    def schema(self) -> dict[str, Any]:
        """JSON schema of the task's arguments."""
        return self.args_model.model_json_schema()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "queue": self.queue,
            "priority": self.priority,
            "timeout": self.timeout,
            "max_attempts": self.retry.max_attempts,
            "is_async": self.is_async,
            "doc": inspect.getdoc(self.fn),
            "schema": self.schema,
        }

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check ``args`` against the signature; return them as JSON values, defaults filled in.

        Validation is strict as in JSON: ``"5"`` is not an ``int``, ``false`` is not an ``int``.
        """
        try:
            model = self.args_model.model_validate_json(dumps(args), strict=True)
        except ValidationError as exc:
            problems = [{"loc": list(e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
            summary = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'args'}: {p['message']}" for p in problems)
            raise InvalidArguments(
                f"invalid arguments for task {self.name!r}: {summary}", details=problems
            ) from None
        except (TypeError, ValueError) as exc:
            raise InvalidArguments(f"arguments for task {self.name!r} are not JSON: {exc}") from None
        return model.model_dump(mode="json")

    def validate_all(self, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """``validate`` of every item in one pydantic call; None if any item is wrong (then
        ``validate`` them one by one to learn which, and why)."""
        try:
            models = self._list_adapter.validate_json(dumps(items), strict=True)
        except (ValidationError, TypeError, ValueError):
            return None
        return [model.model_dump(mode="json") for model in models]

    @functools.cached_property
    def _list_adapter(self) -> TypeAdapter[list[BaseModel]]:
        return TypeAdapter(list[self.args_model])  # type: ignore[name-defined]

    def bind(self, args: dict[str, Any]) -> dict[str, Any]:
        """Stored JSON arguments → the Python values the function takes."""
        model = self.args_model.model_validate(args)
        return {name: getattr(model, name) for name in self._arg_names}

    @functools.cached_property
    def _arg_names(self) -> tuple[str, ...]:
        return tuple(self.args_model.model_fields)

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Queue a job of this task with these arguments (by keyword) and return it."""
        return await self.app.submit(self, _keywords(self, args, kwargs))

    def submit_sync(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        return self.app.submit_sync(self, _keywords(self, args, kwargs))

    def options(self, **options: Any) -> BoundTask:
        """``task.options(queue="slow", delay=60).submit(...)``: submit with other options."""
        return BoundTask(self, SubmitOptions(**options))


@dataclass(frozen=True, slots=True)
class BoundTask:
    task: Task[..., Any]
    options: SubmitOptions

    async def submit(self, **kwargs: Any) -> Job:
        return await self.task.app.submit(self.task, kwargs, options=self.options)

    def submit_sync(self, **kwargs: Any) -> Job:
        return self.task.app.submit_sync(self.task, kwargs, options=self.options)


def _keywords(task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if args:
        raise InvalidArguments(
            f"pass the arguments of task {task.name!r} by keyword: {task.name}.submit(name=value, ...)"
        )
    return dict(kwargs)


def _arguments_model(fn: Callable[..., Any], name: str) -> tuple[bool, type[BaseModel]]:
    """A pydantic model of the function's parameters, less the leading ``ctx``."""
    from .context import Context

    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(signature.parameters.values())
    takes_context = bool(params) and (params[0].name == "ctx" or hints.get(params[0].name) is Context)
    fields: dict[str, Any] = {}
    for param in params[1 if takes_context else 0 :]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(
                f"task {name}: parameter {param.name!r} must be a plain or keyword-only parameter"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    model = create_model(f"{name.replace('.', '_')}_args", __config__=ConfigDict(extra="forbid"), **fields)
    return takes_context, typing.cast(type[BaseModel], model)
