"""The batch and queue commands of the command line: ``underway batch …``, ``underway queues``
and ``underway queue …``. Like the job commands, they work on the store or, with ``--server``,
through a running server, and ``--json`` prints the HTTP API's shapes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import click
from rich.markup import escape
from rich.table import Table

from .batches import BatchView
from .cli_state import CliState, console, parse_label, print_json, run
from .sources import JobSource
from .terminal import BatchBar, batch_status_text, running_item_text
from .timefmt import to_iso

if TYPE_CHECKING:
    from .client import ExportFormat

T = TypeVar("T")

#: Seconds between two reads of a batch that ``batch watch`` follows.
WATCH_INTERVAL = 0.25
EXPORT_FORMATS = ("json", "ndjson", "csv")


@click.group()
def batch() -> None:
    """Submit batches, follow them, act on them and export their results."""


@batch.command("submit")
@click.argument("task")
@click.option(
    "--items",
    "items_file",
    type=click.File("r", encoding="utf-8"),
    required=True,
    help="the items' arguments: a JSON array of objects, or one object per line (NDJSON); - for stdin",
)
@click.option("--name", default=None, help="a name to show the batch by")
@click.option("--queue", default=None)
@click.option("--priority", type=int, default=None)
@click.option("--delay", type=float, default=None, help="seconds to wait before the items may run")
@click.option("--max-attempts", type=int, default=None)
@click.option("--timeout", type=float, default=None)
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="a label of every item (repeatable)"
)
@click.option("--watch", "follow", is_flag=True, help="show its progress until it ends")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def submit_batch(
    state: CliState,
    /,
    task: str,
    items_file: IO[str],
    labels: tuple[str, ...],
    follow: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Queue one job of TASK per item, all or none, and print the batch's id."""
    items = read_items(items_file.read())
    given = {k: v for k, v in options.items() if v is not None}
    if labels:
        given["labels"] = dict(parse_label(label, "--label") for label in labels)

    async def go() -> int:
        async with state.jobs(tasks=True) as source:
            view = await source.submit_batch(task, items, **given)
            print_json(view.to_dict()) if as_json else click.echo(view.id)
            return await watch_batch(source, view.id) if follow else 0

    sys.exit(run(go()))


def read_items(text: str) -> list[dict[str, Any]]:
    """The items of ``--items``: a JSON array, or NDJSON (one JSON object per line)."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not a JSON array: {exc}", param_hint="--items") from None
    else:
        items = []
        for number, line in enumerate(stripped.splitlines(), 1):
            try:
                items += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"line {number} is not JSON: {exc}", param_hint="--items") from None
    if not isinstance(items, list) or not items:
        raise click.BadParameter("give at least one item", param_hint="--items")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise click.BadParameter(
                f"item {index} is not a JSON object of argument names to values", param_hint="--items"
            )
    return items


@batch.command("watch")
@click.argument("batch_id")
@click.pass_obj
def watch(state: CliState, batch_id: str) -> None:
    """Show a batch's live progress until every item has ended (exit status 0 if all succeeded)."""

    async def go() -> int:
        async with state.jobs() as source:
            return await watch_batch(source, batch_id)

    sys.exit(run(go()))


async def watch_batch(source: JobSource, batch_id: str) -> int:
    """Draw the batch's bar, read again every ``WATCH_INTERVAL``, until it ends; 0 if it completed."""
    view = await source.batch(batch_id)
    with BatchBar(console) as bar:
        bar.update(view)
        while not view.terminal:
            await asyncio.sleep(WATCH_INTERVAL)
            view = await source.batch(batch_id)
            bar.update(view)
    succeeded = view.counts.get("succeeded", 0)
    console.print(f"{batch_status_text(view)} · {succeeded}/{view.total} succeeded", highlight=False)
    return 0 if view.status == "completed" else 1


@batch.command("show")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(state: CliState, batch_id: str, as_json: bool) -> None:
    """Show a batch: its counts per status, percent, rate, ETA and what its running items say."""
    view = _one(state, lambda source: source.batch(batch_id))
    if as_json:
        print_json(view.to_dict())
        return
    table = Table(show_header=False, box=None)
    for key, value in _fields(view):
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)
    if view.running:
        console.print("[bold]running[/]")
        for item in view.running:
            console.print(f"  {running_item_text(item)}", highlight=False)


def _fields(view: BatchView) -> list[tuple[str, str]]:
    eta = None if view.eta_s is None else f"{int(view.eta_s) // 60}:{int(view.eta_s) % 60:02d}"
    counts = " · ".join(f"{status} {n}" for status, n in view.counts.items() if n)
    rows = [
        ("id", view.id),
        ("name", escape(view.name or "")),
        ("task", escape(view.task)),
        ("queue", escape(view.queue)),
        ("labels", escape(" ".join(f"{k}={v}" for k, v in view.labels.items()))),
        ("status", batch_status_text(view) + (" (paused)" if view.paused and not view.terminal else "")),
        ("done", f"{view.done}/{view.total} ({view.percent:g}%)"),
        ("counts", counts),
        ("rate", "" if view.rate is None else f"{view.rate:g} items/s"),
        ("eta", eta or ""),
        ("created", to_iso(view.created_at) or ""),
        ("started", to_iso(view.started_at) or ""),
        ("finished", to_iso(view.finished_at) or ""),
    ]
    return [(key, value) for key, value in rows if value]


@batch.command("list")
@click.option("--owner", default=None, help="only this owner's batches (with --server: admins)")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def list_batches(state: CliState, owner: str | None, limit: int, as_json: bool) -> None:
    """List batches, newest first."""
    found = _one(state, lambda source: source.list_batches(owner=owner, limit=limit))
    if as_json:
        print_json({"batches": [view.to_dict() for view in found]})
        return
    table = Table("id", "name", "task", "status", "done", "created")
    for view in found:
        table.add_row(
            view.id,
            escape(view.name or ""),
            escape(view.task),
            batch_status_text(view),
            f"{view.done}/{view.total} ({view.percent:g}%)",
            to_iso(view.created_at),
        )
    console.print(table)


def _batch_action(name: str, summary: str) -> None:
    """``batch cancel|pause|resume ID``: the same command three times."""

    @batch.command(name, help=summary)
    @click.argument("batch_id")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def action(state: CliState, batch_id: str, as_json: bool) -> None:
        view = _one(state, lambda source: getattr(source, f"{name}_batch")(batch_id))
        if as_json:
            print_json(view.to_dict())
        else:
            click.echo(f"{view.id} {'cancelling' if view.cancelled and not view.terminal else view.status}")


_batch_action("cancel", "Cancel a batch: its queued items at once; its running ones are asked to stop.")
_batch_action("pause", "Start no more of a batch's items; running ones go on.")
_batch_action("resume", "Start a paused batch's items again.")


@batch.command("retry-failed")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def retry_failed(state: CliState, batch_id: str, as_json: bool) -> None:
    """Run a batch's failed and cancelled items again (same ids)."""

    async def go() -> tuple[int, BatchView]:
        async with state.jobs() as source:
            retried = await source.retry_failed(batch_id)
            return retried, await source.batch(batch_id)

    retried, view = run(go())
    if as_json:
        print_json({"retried": retried, "batch": view.to_dict()})
    else:
        click.echo(f"retried {retried} items")


@batch.command("export")
@click.argument("batch_id")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="json", show_default=True)
@click.option("--output", "-o", default=None, help="the file to write (default: standard output)")
@click.pass_obj
def export(state: CliState, batch_id: str, fmt: str, output: str | None) -> None:
    """Write every item of a batch (arguments, status, result or error) in submission order."""
    out = Output(output)

    async def go() -> None:
        async with state.jobs() as source:
            async for chunk in source.export(batch_id, cast("ExportFormat", fmt)):
                out.write(chunk)

    try:
        run(go())
    finally:
        out.close()


class Output:
    """Standard output, or a file opened at the first write (an export that fails makes none)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def write(self, text: str) -> None:
        if self._file is None:
            if self.path is None:
                self._file = sys.stdout
            else:
                self._file = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._file.write(text)

    def close(self) -> None:
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()


# -- queues ------------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def queues(state: CliState, as_json: bool) -> None:
    """List queues: paused, limit, depth, running, waiting, throughput, oldest wait."""
    found = _one(state, lambda source: source.queues())
    if as_json:
        print_json({"queues": found})
        return
    table = Table("name", "paused", "limit", "depth", "running", "waiting", "throughput 1m", "oldest age")
    for queue in found:
        age = queue["oldest_queued_age_s"]
        table.add_row(
            escape(queue["name"]),
            "yes" if queue["paused"] else "no",
            "none" if queue["concurrency"] is None else str(queue["concurrency"]),
            str(queue["depth"]),
            str(queue["running"]),
            str(queue["waiting"]),
            str(queue["throughput_1m"]),
            "" if age is None else f"{age:.1f}s",
        )
    console.print(table)


@click.group()
def queue() -> None:
    """Pause, resume or limit a queue (on every worker)."""


@queue.command("pause")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def pause_queue(state: CliState, name: str, as_json: bool) -> None:
    """Start none of the queue's jobs, on any worker; running ones go on."""
    _show_queue(_one(state, lambda source: source.pause_queue(name)), as_json)


@queue.command("resume")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def resume_queue(state: CliState, name: str, as_json: bool) -> None:
    """Start the queue's jobs again."""
    _show_queue(_one(state, lambda source: source.resume_queue(name)), as_json)


@queue.command("limit")
@click.argument("name")
@click.argument("concurrency", metavar="N|none")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def limit_queue(state: CliState, name: str, concurrency: str, as_json: bool) -> None:
    """Run at most N of the queue's jobs at once over all workers (none: no limit)."""
    limit = _parse_limit(concurrency)
    _show_queue(_one(state, lambda source: source.limit_queue(name, limit)), as_json)


def _parse_limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f"{text!r}: give a number of jobs of at least 1, or none", param_hint="N")
    return int(text)


def _show_queue(queue: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(queue)
        return
    limit = "none" if queue["concurrency"] is None else queue["concurrency"]
    click.echo(f"{queue['name']} {'paused' if queue['paused'] else 'running'} limit {limit}")


def _one(state: CliState, call: Callable[[JobSource], Awaitable[T]]) -> T:
    """Run one call on the command's source and return its answer."""

    async def go() -> T:
        async with state.jobs() as source:
            return await call(source)

    return run(go())
