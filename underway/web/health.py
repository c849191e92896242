"""``GET /healthz``'s answer, and the server's watch on its SQLite file.

A server whose database file was deleted or replaced under it does not exit: it may be mounted
in someone else's app, and an orchestrator's health probe is what should restart it. It answers
503 to ``/healthz`` and to every request that reaches the store (``store_error``), and says so
once in its log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..exceptions import StoreGone, StoreUnhealthy
from .periodic import Periodic

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


class StoreWatch(Periodic):
    """Every ``interval`` seconds, :meth:`~underway.App.check_store_identity`; logs once when
    the database file is gone (the store refuses every call from then on)."""

    name = "underway-store-watch"

    def __init__(self, app: App, interval: float = STORE_CHECK_INTERVAL) -> None:
        super().__init__(interval)
        self._app = app

    async def tick(self) -> bool:
        try:
            self._app.check_store_identity()
        except StoreGone as exc:
            logger.error(
                "%s. Until then this server answers 503 to /healthz and to every request"
                " that needs the store",
                exc.message,
            )
            return False
        return True
