"""``GET /healthz``'s answer, and the server's watch on its SQLite file.

A server whose database file was deleted or replaced under it does not exit: it may be mounted
in someone else's app, and an orchestrator's health probe is what should restart it. It answers
503 to ``/healthz`` and to every request that reaches the store (``store_error``), and says so
once in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..exceptions import StoreGone, StoreUnhealthy

if TYPE_CHECKING:
    from ..app import App

logger = logging.getLogger("underway.web")

#: ``/healthz`` says the store is unreachable when its checks take longer than this.
HEALTH_TIMEOUT = 10.0
#: How often a server looks whether its database file is still the one at the path (one stat).
STORE_CHECK_INTERVAL = 2.0


async def store_health(app: App) -> dict[str, Any]:
    """``{"ok": true, "store": "ok"}``, or ``ok`` false and what is wrong, naming no address."""
    try:
        await asyncio.wait_for(app.check_health(), HEALTH_TIMEOUT)
    except StoreUnhealthy as exc:
        return {"ok": False, "store": exc.reason}
    except TimeoutError:
        return {"ok": False, "store": f"unreachable: no answer within {HEALTH_TIMEOUT:g} s"}
    except Exception as exc:
        return {"ok": False, "store": f"unreachable: {type(exc).__name__}"}
    return {"ok": True, "store": "ok"}


class StoreWatch:
    """Every ``interval`` seconds, :meth:`~underway.App.check_store_identity`; logs once when
    the database file is gone (the store refuses every call from then on)."""

    def __init__(self, app: App, interval: float = STORE_CHECK_INTERVAL) -> None:
        self._app = app
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="underway-store-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self._app.check_store_identity()
            except StoreGone as exc:
                logger.error(
                    "%s. Until then this server answers 503 to /healthz and to every request"
                    " that needs the store",
                    exc.message,
                )
                return
