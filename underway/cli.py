"""The ``underway`` command line. Every flag mirrors a :class:`~underway.config.Settings` field
and its ``UNDERWAY_*`` variable; ``--json`` prints the same shapes as the HTTP API."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from .cli_batches import batch, queue, queues
from .cli_doctor import doctor
from .cli_keys import keys
from .cli_state import CliState, console, parse_label, print_json, run
from .config import Settings, parse_field
from .events import Event
from .exceptions import ConfigError
from .jobs import Job, Status
from .sources import JobSource
from .terminal import JobBars
from .threads import exit_unless_gone
from .timefmt import to_iso
from .worker import Worker

F = TypeVar("F", bound=Callable[..., Any])

#: How long ``underway worker`` may take to exit once it stopped with task threads still
#: running, before it ends itself (see :func:`~underway.threads.exit_unless_gone`).
EXIT_TIMEOUT = 2.0

#: Settings that the commands below take as flags (``--lease-timeout 30s``).
WORKER_FIELDS = (
    "queues",
    "concurrency",
    "lease_timeout",
    "heartbeat_interval",
    "progress_interval",
    "cancel_grace",
    "shutdown_grace",
    "crash_retries",
    "poll_interval",
    "sweep_interval",
    "retention",
    "max_log_line",
    "max_log_lines",
    "max_result_size",
    "max_checkpoint_size",
)


def settings_flags(*names: str) -> Callable[[F], F]:
    """Add a ``--name`` flag for each Settings field, parsed like its variable."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}

    def decorate(fn: F) -> F:
        for name in reversed(names):
            help_text = fields[name].metadata.get("help", "")
            fn = click.option(
                f"--{name.replace('_', '-')}",
                name,
                default=None,
                callback=lambda _ctx, _param, value, name=name: (
                    None if value is None else _parse(name, value)
                ),
                help=f"{help_text} [UNDERWAY_{name.upper()}]",
            )(fn)
        return fn

    return decorate


def _parse(name: str, value: str) -> Any:
    try:
        return parse_field(name, value)
    except ConfigError as exc:
        raise click.BadParameter(exc.message) from None


@click.group()
@click.option("--url", default=None, help="store URL [UNDERWAY_URL; default sqlite:///underway.db]")
@click.option("--app", "app_path", default=None, help="module:attribute of the App [UNDERWAY_APP]")
@click.option(
    "--server",
    default=None,
    envvar="UNDERWAY_SERVER",
    help="API of a running server (http://127.0.0.1:8000/api): the job, batch and queue commands "
    "go through it, not the store [UNDERWAY_SERVER]",
)
@click.option(
    "--api-key",
    default=None,
    envvar="UNDERWAY_API_KEY",
    help="the API key sent to --server (underway keys create) [UNDERWAY_API_KEY]",
)
@click.option("-v", "--verbose", count=True, help="log more (-vv for debug)")
@click.version_option(package_name="underway")
@click.pass_context
def main(
    ctx: click.Context,
    url: str | None,
    app_path: str | None,
    server: str | None,
    api_key: str | None,
    verbose: int,
) -> None:
    """underway: durable background jobs with live progress."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    ctx.obj = CliState(url, app_path, server, api_key)


# -- running -----------------------------------------------------------------------------------


@main.command()
@settings_flags(*WORKER_FIELDS)
@click.option("--burst", is_flag=True, help="drain the queues, then exit")
@click.pass_obj
def worker(state: CliState, /, burst: bool, **flags: Any) -> None:
    """Run jobs of the App's tasks until SIGTERM/SIGINT."""

    async def work() -> None:
        app = state.app(required=True, **flags)
        worker = Worker(app, settings=app.settings, burst=burst)
        try:
            await worker.run(install_signal_handlers=True)
        finally:
            await app.close()
        if worker.abandoned:  # their threads do not hold the process; what they started might
            exit_unless_gone(EXIT_TIMEOUT, worker.abandoned)

    run(work())


SERVER_FIELDS = (
    "host",
    "port",
    "max_body_size",
    "sse_ping_interval",
    "sse_send_timeout",
    "ws_max_message",
    "ws_max_subscriptions",
    "ws_max_connections",
    "sse_retry",
    "auth",
    "allowed_origins",
    "max_batch_items",
    "max_json_depth",
    "max_args_size",
    "max_listed_result",
    "max_labels",
    "max_label_key",
    "max_label_value",
    "max_streams_per_user",
    "max_submissions_per_minute",
    "key_check_interval",
    "session_ttl",
)


@main.command()
@settings_flags(*SERVER_FIELDS, "crash_retries")  # for the jobs submitted through it
@click.pass_obj
def server(state: CliState, /, **flags: Any) -> None:
    """Serve the dashboard (at /) and the HTTP API (under /api) until SIGTERM/SIGINT."""
    from .web import create_app, serve
    from .web.dashboard import dashboard_url

    async def go() -> None:
        app = state.app(**flags)
        settings = app.settings
        url = dashboard_url(settings.host, settings.port)
        click.echo(f"underway server: dashboard {url} · API {url}api/docs · store {settings.url}")
        await serve(create_app(app, settings=app.settings), app.settings)

    run(go(), serving=True)


@main.command()
@settings_flags(*SERVER_FIELDS, *WORKER_FIELDS)
@click.pass_obj
def dev(state: CliState, /, **flags: Any) -> None:
    """Serve the dashboard and the HTTP API and run a worker in one process (for development)."""
    from .web import create_app, serve
    from .web.dashboard import dashboard_url

    async def go() -> None:
        app = state.app(required=True, **flags)
        settings = app.settings
        url = dashboard_url(settings.host, settings.port)
        click.echo(f"underway dev: dashboard {url} · API {url}api/docs · store {settings.url}")
        await serve(create_app(app, settings=app.settings, with_worker=True), app.settings)

    run(go(), serving=True)


@main.command()
@click.pass_obj
def migrate(state: CliState) -> None:
    """Create or upgrade the store's schema."""

    async def go() -> list[str]:
        app = state.app()
        try:
            return await app.store.migrate()
        finally:
            await app.close()

    applied = run(go())
    click.echo(f"applied {', '.join(applied)}" if applied else "the schema is up to date")


@main.command()
@settings_flags("host", "port", *WORKER_FIELDS)
@click.option("--answer", default="yes", show_default=True, help="answer given to the demo's question")
@click.option("--once", is_flag=True, help="exit when the demo jobs have ended, instead of serving on")
@click.option(
    "--no-browser",
    is_flag=True,
    help="do not open the dashboard in a browser (never in CI or without a display)",
)
@click.pass_obj
def demo(state: CliState, /, answer: str, once: bool, no_browser: bool, **flags: Any) -> None:
    """Serve the dashboard and the API, run a worker and demo jobs in this process, with live bars;
    open the dashboard in a browser."""
    from . import demo as demo_module

    task_logs = logging.getLogger("underway.tasks")  # the bars show task logs already
    task_logs.propagate = False
    task_logs.addHandler(logging.NullHandler())  # else warnings reach stderr via logging.lastResort
    app = demo_module.app
    app.settings = app.settings.replace(**state.overrides(**flags))
    browser = demo_module.should_open_browser(no_browser)
    run(demo_module.run(app, console, answer=answer, once=once, browser=browser), serving=True)


# -- jobs --------------------------------------------------------------------------------------


@main.command()
@click.argument("task")
@click.option("--args", "args_json", default="{}", help="the task's arguments as a JSON object")
@click.option("--queue", default=None)
@click.option("--priority", type=int, default=None)
@click.option("--delay", type=float, default=None, help="seconds to wait before it may run")
@click.option("--max-attempts", type=int, default=None)
@click.option("--timeout", type=float, default=None)
@click.option(
    "--idempotency-key", default=None, help="a second submit with this key gives the first job back"
)
@click.option("--watch", "follow", is_flag=True, help="show its progress until it ends")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def submit(
    state: CliState, /, task: str, args_json: str, follow: bool, as_json: bool, **options: Any
) -> None:
    """Queue a job of TASK."""
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
    if not isinstance(args, dict):
        raise click.BadParameter("must be a JSON object of argument names to values", param_hint="--args")

    async def go() -> int:
        async with state.jobs(tasks=True) as source:
            job = await source.submit(task, args, **{k: v for k, v in options.items() if v is not None})
            if as_json:
                print_json(job.to_dict())
            else:
                click.echo(job.id)
            return await _watch(source, job.id) if follow else 0

    sys.exit(run(go()))


@main.command()
@click.argument("job_id")
@click.pass_obj
def watch(state: CliState, job_id: str) -> None:
    """Show a job's live progress until it ends (exit status 0 if it succeeded)."""

    async def go() -> int:
        async with state.jobs() as source:
            return await _watch(source, job_id)

    sys.exit(run(go()))


async def _watch(source: JobSource, job_id: str) -> int:
    job = await source.get(job_id)
    with JobBars(console) as bars:
        bars.add(job)
        async for event in source.watch(job_id, after=0):
            bars.update(event)
    final = await source.get(job_id)
    if final.status is Status.SUCCEEDED:
        console.print(f"[green]succeeded[/] {escape(json.dumps(final.result))}")
        return 0
    console.print(f"[red]{final.status.value}[/] {escape((final.error or {}).get('message', ''))}")
    return 1


@main.command()
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in Status]))
@click.option("--queue", default=None)
@click.option("--task", default=None)
@click.option("--owner", default=None, help="only this owner's jobs (with --server: admins)")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def jobs(
    state: CliState,
    statuses: tuple[str, ...],
    queue: str | None,
    task: str | None,
    owner: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List jobs, newest first."""

    async def go() -> list[Job]:
        async with state.jobs() as source:
            return await source.list_jobs(status=statuses, queue=queue, task=task, owner=owner, limit=limit)

    found = run(go())
    if as_json:
        print_json({"jobs": [job.to_dict() for job in found]})
        return
    table = Table("id", "task", "queue", "status", "progress", "attempt", "crashes", "created")
    for job in found:
        percent = (job.progress or {}).get("percent")
        table.add_row(
            job.id,
            escape(job.task),
            escape(job.queue),
            job.status.value + (" (cancelling)" if job.cancel_requested else ""),
            "" if percent is None else f"{percent:.0f}%",
            f"{job.attempt}/{job.max_attempts}",
            f"{job.crashes}/{job.crash_retries}",
            to_iso(job.created_at),
        )
    console.print(table)


#: The fields ``show`` prints as one line: ``attempt 2 of 3 · crashes 1 of 2``.
SHOWN_AS_ATTEMPTS = ("attempt", "max_attempts", "crashes", "crash_retries")


@main.command()
@click.argument("job_id")
@click.option("--events", "with_events", is_flag=True, help="also list its events")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(state: CliState, job_id: str, with_events: bool, as_json: bool) -> None:
    """Show one job."""

    async def go() -> tuple[Job, list[Event]]:
        async with state.jobs() as source:
            job = await source.get(job_id)
            return job, (await source.events(job_id, limit=100_000) if with_events else [])

    job, events = run(go())
    if as_json:
        shown = job.to_dict()
        if with_events:
            shown["events"] = [event.to_dict() for event in events]
        print_json(shown)
        return
    table = Table(show_header=False, box=None)
    for key, value in job.to_dict().items():
        if key in SHOWN_AS_ATTEMPTS:
            if key == "attempt":
                table.add_row("[bold]attempts[/]", job.attempts_summary)
        elif value not in (None, {}, []):
            table.add_row(f"[bold]{key}[/]", escape(value if isinstance(value, str) else json.dumps(value)))
    console.print(table)
    if with_events:
        listing = Table("seq", "at", "type", "data")
        for event in events:
            listing.add_row(
                str(event.seq), to_iso(event.at), event.type.value, escape(json.dumps(event.data))
            )
        console.print(listing)


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all", "cancel_all", is_flag=True, help="cancel every unfinished job (that matches)")
@click.option("--queue", default=None, help="with --all: only the jobs of this queue")
@click.option("--batch", "batch_id", default=None, help="with --all: only the items of this batch")
@click.option("--label", default=None, metavar="KEY=VALUE", help="with --all: only the jobs with this label")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def cancel(
    state: CliState,
    job_ids: tuple[str, ...],
    cancel_all: bool,
    queue: str | None,
    batch_id: str | None,
    label: str | None,
    as_json: bool,
) -> None:
    """Cancel jobs: queued ones at once, running ones are asked to stop."""
    if bool(job_ids) == cancel_all:
        raise click.UsageError("name the jobs to cancel, or pass --all (with --queue, --batch or --label)")
    if (queue or batch_id or label) and not cancel_all:
        raise click.UsageError("--queue, --batch and --label go with --all")
    label_pair = None if label is None else parse_label(label, "--label")

    async def go() -> list[Job] | int:
        async with state.jobs() as source:
            if cancel_all:
                return await source.cancel_all(queue=queue, batch=batch_id, label=label_pair)
            return [await source.cancel(job_id) for job_id in job_ids]

    outcome = run(go())
    if isinstance(outcome, int):
        print_json({"cancelled": outcome}) if as_json else click.echo(f"cancelled {outcome} jobs")
    elif as_json:
        print_json({"jobs": [job.to_dict() for job in outcome]})
    else:
        for job in outcome:
            click.echo(f"{job.id} {'cancelling' if job.cancel_requested else job.status.value}")


@main.command()
@click.argument("job_id")
@click.argument("value")
@click.option("--key", default=None, help="the question's key (default: the one it asks now)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def answer(state: CliState, job_id: str, value: str, key: str | None, as_json: bool) -> None:
    """Answer the question a waiting job asks (VALUE is read as JSON when it parses)."""
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    job = _one_change(state, lambda source: source.answer(job_id, parsed, key))
    print_json(job.to_dict()) if as_json else click.echo(f"{job.id} {job.status.value}")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def retry(state: CliState, job_id: str, as_json: bool) -> None:
    """Run a finished job again."""
    job = _one_change(state, lambda source: source.retry(job_id))
    print_json(job.to_dict()) if as_json else click.echo(f"{job.id} {job.status.value}")


def _one_change(state: CliState, change: Callable[[JobSource], Coroutine[Any, Any, Job]]) -> Job:
    async def go() -> Job:
        async with state.jobs() as source:
            return await change(source)

    return run(go())


main.add_command(batch)
main.add_command(queues)
main.add_command(queue)
main.add_command(keys)
main.add_command(doctor)

if __name__ == "__main__":
    main()
