"""What a running task sees: progress, logs, questions, checkpoints and cancellation.

``progress()`` is on the hot path: a task may call it millions of times. It stores the value
in slots and, the first time after a write, tells the worker that something is pending; the
worker's flusher writes at most one update per ``progress_interval`` and always the last.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from .bounds import TaskBounds, capped_notice, checked_checkpoint, cut_line, dropped_notice, json_size
from .events import NewEvent, dumps, log_event
from .exceptions import Cancelled, UnderwayError
from .progress import Progress
from .store.base import UNSET

if TYPE_CHECKING:
    from .jobs import Job

T = TypeVar("T")

_task_logger = logging.getLogger("underway.tasks")


class TaskTimeout(UnderwayError):
    """Raised at a cancellation point once the task ran past its timeout."""

    code = "timeout"


class RunControl(Protocol):
    """The worker's side of a running job, as the context needs it."""

    def mark(self, urgent: bool = False) -> None:
        """Something is pending; ``urgent``: write it without waiting for the interval."""

    async def ask(self, prompt: dict[str, Any], timeout: float | None) -> Any: ...

    def ask_blocking(self, prompt: dict[str, Any], timeout: float | None) -> Any: ...


class TaskLog:
    """``ctx.log.info("saved %s", post_id, source=src)``: a ``log`` event of the job.

    Extra keyword arguments become the event's ``fields``. Lines also go to the standard
    ``underway.tasks`` logger when it is enabled for their level.

    Bounded (see :class:`~underway.bounds.TaskBounds`): a line longer than ``max_log_line``
    characters is cut with a marker (its event's ``truncated`` says how many characters were
    cut; ``fields`` larger than that are left out, ``fields_truncated`` giving their size); a
    job stores at most ``max_log_lines`` lines over all its attempts, further ones are counted
    (one warning when the cap is reached, one with the count when the attempt ends).
    """

    __slots__ = ("_cap", "_ctx", "_dropped", "_lock", "_notice_due", "_stored")

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._cap = ctx._bounds.max_log_lines
        self._lock = threading.Lock()
        #: Log events the job has in the store (earlier attempts) or on their way there.
        self._stored = 0
        self._dropped = 0
        #: Past the cap, a notice is due unless an earlier attempt wrote it (then the job
        #: already has more log events than the cap).
        self._notice_due = True

    @property
    def dropped(self) -> int:
        """Log lines of this attempt counted, not stored (past ``max_log_lines``)."""
        return self._dropped

    def start_from(self, stored: int) -> None:
        """The job already has ``stored`` log events (from earlier attempts)."""
        with self._lock:
            self._stored += stored
            self._notice_due = self._stored <= self._cap

    def debug(self, message: str, *args: Any, **fields: Any) -> None:
        self._emit("debug", logging.DEBUG, message, args, fields)

    def info(self, message: str, *args: Any, **fields: Any) -> None:
        self._emit("info", logging.INFO, message, args, fields)

    def warning(self, message: str, *args: Any, **fields: Any) -> None:
        self._emit("warning", logging.WARNING, message, args, fields)

    def error(self, message: str, *args: Any, **fields: Any) -> None:
        self._emit("error", logging.ERROR, message, args, fields)

    def _emit(
        self, level: str, number: int, message: str, args: tuple[Any, ...], fields: dict[str, Any]
    ) -> None:
        limit = self._ctx._bounds.max_log_line
        text, cut = cut_line(message % args if args else message, limit)
        event = log_event(level, text)
        if cut:
            event.data["truncated"] = cut
        if fields:
            size = json_size(_check_json(fields, "log fields"))
            if size > limit:
                event.data["fields_truncated"] = size
            else:
                event.data["fields"] = fields
        if _task_logger.isEnabledFor(number):
            _task_logger.log(number, "[%s] %s", self._ctx.job_id, printable(text))
        if not self._admit():
            return
        self._ctx._logs.append(event)
        self._ctx._control.mark()

    def _admit(self) -> bool:
        """Whether one more line is stored; past the cap it is counted, and the first one
        dropped queues the notice."""
        with self._lock:
            if self._stored < self._cap:
                self._stored += 1
                return True
            self._dropped += 1
            notice = self._notice_due
            self._notice_due = False
        if notice:
            self._ctx._logs.append(capped_notice(self._cap))
            self._ctx._control.mark()
        return False

    def ending(self) -> None:
        """The attempt ends: queue the count of the lines it dropped, if any."""
        if self._dropped:
            self._ctx._logs.append(dropped_notice(self._dropped, self._cap))


class Context:
    """Handed to a task as its first argument (``ctx``)."""

    __slots__ = (
        "_asked",
        "_bounds",
        "_checkpoint",
        "_control",
        "_current",
        "_dirty",
        "_last_checkpoint",
        "_logs",
        "_message",
        "_step",
        "_steps",
        "_stop",
        "_total",
        "job",
        "log",
    )

    def __init__(self, job: Job, control: RunControl, bounds: TaskBounds | None = None) -> None:
        self.job = job
        self._bounds = bounds or TaskBounds()
        self.log = TaskLog(self)
        self._control = control
        self._current: float = 0
        self._total: float | None = None
        self._message: str | None = None
        self._step: int | None = None
        self._steps: int | None = None
        self._dirty = False
        self._stop: UnderwayError | None = None
        self._logs: deque[NewEvent] = deque()
        self._checkpoint: deque[Any] = deque(maxlen=1)
        self._last_checkpoint: Any = job.checkpoint
        self._asked = 0

    # -- what the task reads -------------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def cancelled(self) -> bool:
        """True once the job was asked to stop (a cooperative task returns soon after)."""
        return isinstance(self._stop, Cancelled)

    @property
    def last_checkpoint(self) -> Any:
        """The value of the last ``checkpoint()``, also from an earlier attempt; ``None`` if none."""
        return self._last_checkpoint

    # -- progress --------------------------------------------------------------------------

    def progress(self, current: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress; raises :class:`Cancelled` once the job was asked to stop."""
        if self._stop is not None:
            raise self._stop
        self._current = current
        if total is not None:
            self._total = total
        if message is not None:
            self._message = message
        if not self._dirty:
            self._dirty = True
            self._control.mark()

    @overload
    def track(
        self, items: AsyncIterable[T], total: float | None = None, message: str | None = None
    ) -> AsyncIterator[T]: ...

    @overload
    def track(
        self, items: Iterable[T], total: float | None = None, message: str | None = None
    ) -> Iterator[T]: ...

    def track(
        self,
        items: Iterable[T] | AsyncIterable[T],
        total: float | None = None,
        message: str | None = None,
    ) -> Iterator[T] | AsyncIterator[T]:
        """Iterate ``items`` reporting one unit of progress per item (sync or async iterables)."""
        if total is None and isinstance(items, Sized):
            total = len(items)
        if isinstance(items, AsyncIterable):
            return self._track_async(items, total, message)
        return self._track(items, total, message)

    def _track(self, items: Iterable[T], total: float | None, message: str | None) -> Iterator[T]:
        self.progress(0, total, message)
        for done, item in enumerate(items, 1):
            yield item
            self.progress(done)

    async def _track_async(
        self, items: AsyncIterable[T], total: float | None, message: str | None
    ) -> AsyncIterator[T]:
        self.progress(0, total, message)
        done = 0
        async for item in items:
            yield item
            done += 1
            self.progress(done)

    def step(self, name: str, steps: int | None = None) -> None:
        """Start the next named stage (``step 2 of 4: "Extracting"``); progress restarts at 0."""
        if self._stop is not None:
            raise self._stop
        self._step = (self._step or 0) + 1
        if steps is not None:
            self._steps = steps
        self._current, self._total, self._message = 0, None, name
        self._dirty = True
        self._control.mark(urgent=True)

    def snapshot(self) -> Progress:
        """The current progress value (read by the worker's flusher)."""
        return Progress(
            current=self._current,
            total=self._total,
            message=self._message,
            step=self._step,
            steps=self._steps,
        )

    # -- checkpoints and questions -------------------------------------------------------

    def checkpoint(self, value: Any) -> None:
        """Store a small JSON value with the job; a re-run reads it from ``last_checkpoint``.

        Raises :class:`~underway.CheckpointTooLarge` for a value larger than
        ``max_checkpoint_size`` bytes of JSON (nothing is stored then).
        """
        checked_checkpoint(value, self._bounds.max_checkpoint_size)
        self._checkpoint.append(value)
        self._last_checkpoint = value
        self._control.mark(urgent=True)

    async def ask(
        self,
        message: str,
        options: list[Any] | None = None,
        schema: dict[str, Any] | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Ask the user a question and wait for the answer; the job is ``waiting`` meanwhile.

        Answers are stored with the job under ``key`` (by default ``q1``, ``q2``… in the order
        of asking), so a re-run that asks again gets the stored answer at once. Raises
        ``TimeoutError`` when ``timeout`` seconds pass without an answer.
        """
        prompt = self._prompt(message, options, schema, key)
        if prompt["key"] in self.job.answers:
            return self.job.answers[prompt["key"]]
        return await self._control.ask(prompt, timeout)

    def ask_sync(
        self,
        message: str,
        options: list[Any] | None = None,
        schema: dict[str, Any] | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``ask`` for sync tasks: blocks the task's thread until the answer comes."""
        prompt = self._prompt(message, options, schema, key)
        if prompt["key"] in self.job.answers:
            return self.job.answers[prompt["key"]]
        return self._control.ask_blocking(prompt, timeout)

    def _prompt(
        self, message: str, options: list[Any] | None, schema: dict[str, Any] | None, key: str | None
    ) -> dict[str, Any]:
        if self._stop is not None:
            raise self._stop
        self._asked += 1
        prompt: dict[str, Any] = {"key": key or f"q{self._asked}", "message": message}
        if options is not None:
            prompt["options"] = list(options)
        if schema is not None:
            prompt["schema"] = schema
        _check_json(prompt, "a question")
        return prompt

    # -- the worker's side -----------------------------------------------------------------

    def stop(self, reason: UnderwayError) -> None:
        """Make every later cancellation point raise ``reason``."""
        if self._stop is None:
            self._stop = reason

    def take_pending(self) -> tuple[tuple[NewEvent, ...], Progress | None, Any]:
        """Logs, progress and checkpoint written since the last call (read by the flusher)."""
        logs = []
        while self._logs:
            logs.append(self._logs.popleft())
        progress = None
        if self._dirty:
            self._dirty = False
            progress = self.snapshot()
        checkpoint = self._checkpoint.popleft() if self._checkpoint else UNSET
        return tuple(logs), progress, checkpoint


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` for a log line of the process: control characters (newlines, ANSI escapes…)
    written as escapes, so that job-provided text cannot forge log lines or colour a terminal."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _check_json(value: Any, what: str) -> str:
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON data: {exc}") from None
