"""``underway doctor``: can the store be reached, read and written? Exit status 1 if not."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from .cli_state import CliState, console, errors, print_json, run
from .exceptions import StoreError, StoreUnhealthy


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print {ok, store}, the shape of GET /healthz")
@click.pass_obj
def doctor(state: CliState, as_json: bool) -> None:
    """Check that the store can be read and written (not read-only, not full); with --server,
    ask that server's /healthz instead. Exit status 0 if healthy, 1 if not."""
    health = run(_server_health(state) if state.server is not None else _store_health(state))
    if as_json:
        print_json({"ok": health["ok"], "store": health["store"]})
    elif health["ok"]:
        console.print("store: [green]ok[/]")
    else:
        console.print(f"store: [red]{escape(health['store'])}[/]")
        if health.get("message"):
            errors.print(escape(health["message"]))
    raise SystemExit(0 if health["ok"] else 1)


async def _store_health(state: CliState) -> dict[str, Any]:
    app = state.app()
    try:
        await app.check_health()
    except StoreUnhealthy as exc:
        return {"ok": False, "store": exc.reason, "message": exc.message}
    except StoreError as exc:
        return {"ok": False, "store": "unreachable", "message": exc.message}
    finally:
        await app.close()
    return {"ok": True, "store": "ok"}


async def _server_health(state: CliState) -> dict[str, Any]:
    from .client import AsyncClient

    assert state.server is not None
    async with AsyncClient(state.server, api_key=state.api_key or "") as client:
        answer: dict[str, Any] = await client.health()
    return answer
