"""The ``underway keys …`` commands: create, list and revoke the built-in API keys, and rotate
the secret that signs stream tokens. They work on the store (``--url``), never through a
server: whoever can reach the store is its administrator already."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from .auth import ROLES
from .cli_state import CliState, console, errors, print_json, run
from .timefmt import to_iso

if TYPE_CHECKING:
    from .accounts import Accounts
    from .store import ApiKey

T = TypeVar("T")


@click.group()
def keys() -> None:
    """Create, list and revoke API keys; rotate the stream-token secret (on the store)."""


@keys.command("create")
@click.option("--owner", required=True, help="who the key acts as: its jobs are this owner's")
@click.option("--role", type=click.Choice(ROLES), default="user", show_default=True)
@click.option("--json", "as_json", is_flag=True, help='print {"id", "key", "owner", "role"}')
@click.pass_obj
def create(state: CliState, owner: str, role: str, as_json: bool) -> None:
    """Create a key and print it: only now, the store keeps only its hash."""
    record, key = _on_accounts(state, lambda accounts: accounts.create_key(owner, role))
    if as_json:
        print_json({"id": record.id, "key": key, "owner": record.owner, "role": record.role})
        return
    click.echo(key)
    errors.print(
        f"created key {record.id} for {escape(record.owner)} ({record.role}): it will not be shown "
        "again, keep it now",
        highlight=False,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_keys(state: CliState, as_json: bool) -> None:
    """List the keys, revoked ones too (never the keys themselves)."""
    found = _on_accounts(state, lambda accounts: accounts.keys())
    if as_json:
        print_json([key_json(record) for record in found])
        return
    table = Table("id", "owner", "role", "created", "revoked")
    for record in found:
        table.add_row(
            record.id,
            escape(record.owner),
            record.role,
            to_iso(record.created_at),
            to_iso(record.revoked_at) or "",
        )
    console.print(table)


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def revoke(state: CliState, key_id: str, as_json: bool) -> None:
    """Revoke the key KEY_ID: servers refuse it, and end its streams, within key_check_interval."""
    record = _on_accounts(state, lambda accounts: accounts.revoke(key_id))
    if as_json:
        print_json(key_json(record))
    else:
        click.echo(f"revoked key {record.id} of {record.owner} ({record.role})")


@keys.command("rotate-token-secret")
@click.pass_obj
def rotate_token_secret(state: CliState) -> None:
    """Sign new stream tokens with a new secret."""
    _on_accounts(state, lambda accounts: accounts.rotate())
    click.echo(
        "new stream tokens are signed with a new secret; tokens made before stay valid until they expire"
    )


def key_json(record: ApiKey) -> dict[str, Any]:
    """A key as ``--json`` prints it: never its digest."""
    return {
        "id": record.id,
        "owner": record.owner,
        "role": record.role,
        "created_at": to_iso(record.created_at),
        "revoked_at": to_iso(record.revoked_at),
    }


def _on_accounts(state: CliState, call: Callable[[Accounts], Awaitable[T]]) -> T:
    """Run one call on the accounts of the store, and close it."""

    async def go() -> T:
        async with state.app() as app:
            return await call(app.accounts)

    return run(go())
