"""What every command of the command line shares: which store or server it works on
(:class:`CliState`), how it runs and reports errors (:func:`run`), and how it prints."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from .app import App
from .config import Settings, env_values
from .exceptions import ConfigError, UnderwayError
from .sources import JobSource, LocalJobs, ServerJobs

T = TypeVar("T")

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # one line per error, also when stderr is a file


@dataclasses.dataclass
class CliState:
    url: str | None
    app_path: str | None
    server: str | None = None
    #: The key the client sends with ``--server`` (``None``: none).
    api_key: str | None = dataclasses.field(default=None, repr=False)

    def overrides(self, **flags: Any) -> dict[str, Any]:
        """The settings that flags and ``UNDERWAY_*`` variables set explicitly."""
        given = {"url": self.url, "app": self.app_path, **flags}
        return {**env_values(os.environ), **{k: v for k, v in given.items() if v is not None}}

    def app(self, *, required: bool = False, **flags: Any) -> App:
        """The App named by ``--app``, its own settings overridden by flags and variables."""
        overrides = self.overrides(**flags)
        path = overrides.get("app")
        if path is None:
            if required:
                raise ConfigError(
                    "this command runs tasks: name their App with --app module:attribute (or UNDERWAY_APP)"
                )
            return App(settings=Settings().replace(**overrides))
        app = load_app(path)
        app.settings = app.settings.replace(**overrides)
        return app

    @asynccontextmanager
    async def jobs(self, *, tasks: bool = False) -> AsyncIterator[JobSource]:
        """The jobs to read and change: through ``--server`` if given, else in the store.

        ``tasks``: the App's tasks are needed (to submit to the store; a server has its own).
        """
        if self.server is not None:
            from .client import AsyncClient

            async with AsyncClient(self.server, api_key=self.api_key or "") as client:
                yield ServerJobs(client)
            return
        app = self.app(required=tasks)
        try:
            yield LocalJobs(app)
        finally:
            await app.close()


def load_app(path: str) -> App:
    """Import ``module:attribute`` and return the App there."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--app {path!r}: write module:attribute, e.g. myproject.jobs:app")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--app {path!r}: cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigError(f"--app {path!r}: {attribute!r} in {module_name} is not an underway.App")
    return app


def run(coro: Coroutine[Any, Any, T], *, serving: bool = False) -> T:
    """Run a command's coroutine; a server runs on uvloop (``uvicorn.Config(loop=)`` only
    applies to ``uvicorn.run()``, not to a server started inside a running loop)."""
    try:
        if serving:
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro)
        return asyncio.run(coro)
    except UnderwayError as exc:
        errors.print(f"[red]error:[/] {escape(exc.message)}")
        raise SystemExit(1) from None


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def parse_label(text: str, hint: str) -> tuple[str, str]:
    """``key=value`` → ``(key, value)``."""
    key, equals, value = text.partition("=")
    if not equals or not key or ":" in key:
        raise click.BadParameter(f"{text!r}: write key=value (a key without ':')", param_hint=hint)
    return key, value
