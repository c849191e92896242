"""Live progress bars in the terminal (rich): one per job, fed by job events (:class:`JobBars`),
or one for a batch, fed by its views, with what its running items say below (:class:`BatchBar`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Column
from rich.text import Text

from .batches import BatchView, RunningItem
from .events import Event, EventType
from .jobs import Job, Status

_STATUS_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "waiting": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}

_BATCH_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "paused": "yellow",
    "completed": "green",
    "partial": "yellow",
    "failed": "red",
    "cancelled": "magenta",
}

_LOG_STYLE = {"debug": "dim", "info": "", "warning": "yellow", "error": "red"}


def _rate_and_eta(data: dict[str, Any]) -> str:
    parts = []
    if data.get("rate"):
        parts.append(f"{data['rate']:.1f}/s")
    if data.get("eta_s") is not None:
        seconds = int(data["eta_s"])
        parts.append(f"ETA {seconds // 60}:{seconds % 60:02d}")
    return "  ".join(parts)


class JobBars:
    """One bar per job: description, bar, count, rate, ETA, status; logs printed above."""

    def __init__(self, console: Console | None = None, *, show_logs: bool = True) -> None:
        self.console = console or Console()
        self.show_logs = show_logs
        self.progress = Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("{task.description}", table_column=Column(width=34, no_wrap=True)),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}", table_column=Column(width=18, no_wrap=True)),
            TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True)),
            console=self.console,
            transient=False,
        )
        self._bars: dict[str, TaskID] = {}
        self._names: dict[str, str] = {}

    def __enter__(self) -> JobBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def add(self, job: Job) -> None:
        name = f"{job.task.rsplit('.', 1)[-1]} {job.id[-6:]}"
        self._names[job.id] = name
        self._bars[job.id] = self.progress.add_task(
            escape(name), total=None, speed="", status=self._status_text(job.status.value)
        )
        if job.progress:
            self._progress(job.id, job.progress)

    def update(self, event: Event) -> None:
        bar = self._bars.get(event.job_id)
        if bar is None:
            return
        if event.type is EventType.PROGRESS:
            self._progress(event.job_id, event.data)
        elif event.type is EventType.STATUS:
            self._status(bar, event)
        elif event.type is EventType.LOG and self.show_logs:
            style = _LOG_STYLE.get(event.data["level"], "")
            line = f"[dim]{escape(self._names[event.job_id])}[/] {escape(event.data['message'])}"
            self.progress.console.print(f"[{style}]{line}[/]" if style else line)
        elif event.type is EventType.PROMPT:
            self.progress.update(bar, status=f"[yellow]asks: {escape(event.data['message'])}[/]")

    def _progress(self, job_id: str, data: dict[str, Any]) -> None:
        name = self._names[job_id]
        if data.get("message"):
            step = f"{data['step']}/{data['steps']} " if data.get("steps") else ""
            name = f"{name} · {step}{data['message']}"
        self.progress.update(
            self._bars[job_id],
            description=escape(name),
            completed=data.get("current", 0),
            total=data.get("total"),
            speed=_rate_and_eta(data),
        )

    def _status(self, bar: TaskID, event: Event) -> None:
        status = event.data["status"]
        text = self._status_text(status)
        if event.data.get("cancel_requested"):
            text = "[magenta]cancelling…[/]"
        elif status == Status.QUEUED.value and event.data.get("error"):
            text = f"[yellow]retrying: {escape(event.data['error']['message'])}[/]"
        elif status == Status.FAILED.value and event.data.get("error"):
            text = f"[red]failed: {escape(event.data['error']['message'])}[/]"
        self.progress.update(bar, status=text)
        if Status(status).terminal:
            task = self.progress.tasks[bar]
            if status == Status.SUCCEEDED.value and task.total is not None:
                self.progress.update(bar, completed=task.total)
            self.progress.stop_task(bar)

    @staticmethod
    def _status_text(status: str) -> str:
        style = _STATUS_STYLE.get(status, "")
        return f"[{style}]{status}[/]"


def batch_status_text(view: BatchView) -> str:
    """``running``, ``partial · 3 failed``…: the status, and the items that did not succeed."""
    style = _BATCH_STYLE.get(view.status, "")
    text = f"[{style}]{view.status}[/]" if style else view.status
    if view.cancelled and not view.terminal:
        text = "[magenta]cancelling…[/]"
    unlucky = [f"{view.counts.get(s, 0)} {s}" for s in ("failed", "cancelled") if view.counts.get(s, 0)]
    return " · ".join([text, *unlucky])


def running_item_text(item: RunningItem) -> str:
    """``01abc…f3k2q · step 2/3 Parsing · 40/200 20%``: what one running item says now."""
    data = item.progress or {}
    parts = [f"[dim]{item.id}[/]"]
    if data.get("message"):
        step = f"step {data['step']}/{data['steps']} " if data.get("steps") else ""
        parts.append(escape(f"{step}{data['message']}"))
    if data.get("current") is not None:
        total = f"/{data['total']:g}" if data.get("total") is not None else ""
        percent = f" {data['percent']:.0f}%" if data.get("percent") is not None else ""
        parts.append(f"{data['current']:g}{total}{percent}")
    return " · ".join(parts)


class _BatchProgress(Progress):
    """A Progress that also shows the running items of the batch under its bar."""

    running: Iterable[RunningItem] = ()

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for item in self.running:
            yield Text.from_markup(f"  {running_item_text(item)}")


class BatchBar:
    """One bar for a batch: name, bar, items ended of total, rate, ETA, status; below it, what
    each running item says now. Feed it with :meth:`update` as new views of the batch come."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.progress = _BatchProgress(
            SpinnerColumn(finished_text="•"),
            TextColumn("{task.description}", table_column=Column(width=34, no_wrap=True)),
            BarColumn(bar_width=28),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}", table_column=Column(width=18, no_wrap=True)),
            TextColumn("{task.fields[status]}", table_column=Column(no_wrap=True)),
            console=self.console,
            transient=False,
        )
        self._bar: TaskID | None = None

    def __enter__(self) -> BatchBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, view: BatchView) -> None:
        speed = _rate_and_eta({"rate": view.rate, "eta_s": view.eta_s})
        status = batch_status_text(view)
        if self._bar is None:
            name = f"{view.name or view.task.rsplit('.', 1)[-1]} {view.id[-6:]}"
            self._bar = self.progress.add_task(escape(name), total=None, speed="", status="")
        self.progress.update(self._bar, total=view.total, completed=view.done, speed=speed, status=status)
        self.progress.running = view.running
        if view.terminal:
            self.progress.stop_task(self._bar)
