"""One attempt of one job inside a worker: run the task body, decide how the attempt ended.

The first of these ends an attempt, whatever happens after: the body returns or raises, the
timeout fires, the cancel grace runs out, the lease is lost, the worker hands the job back.
That first verdict is what the worker records; a body that keeps running afterwards (a sync
task in its thread) can no longer write, because the store fences it out.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .bounds import json_size, result_too_large
from .context import Context, TaskTimeout
from .events import dumps, error_info, log_event
from .exceptions import Cancelled, InvalidArguments, LeaseLost, UnderwayError
from .jobs import Job, Status
from .progress import RateMeter, Throttle
from .retry import GiveUp
from .store import Lease, WorkerWrite
from .timefmt import now

if TYPE_CHECKING:
    from .tasks import Task
    from .worker import Worker

logger = logging.getLogger("underway.worker")

#: A job whose last event number is at most this (``queued``, ``running``) has no log lines yet.
FRESH_LAST_SEQ = 2


@dataclass(frozen=True, slots=True)
class Succeeded:
    value: Any


@dataclass(frozen=True, slots=True)
class Raised:
    error: BaseException
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class TimedOut:
    seconds: float


@dataclass(frozen=True, slots=True)
class Stopped:
    """Cancelled by request: ``forced`` when the body did not stop within the grace."""

    forced: bool


@dataclass(frozen=True, slots=True)
class Lost:
    """The store no longer lets this worker write about the job."""


@dataclass(frozen=True, slots=True)
class HandedBack:
    """The worker shut down before the job ended."""


Verdict = Succeeded | Raised | TimedOut | Stopped | Lost | HandedBack


class JobRun:
    """The worker's side of a running job (the context's :class:`~underway.context.RunControl`)."""

    def __init__(
        self, worker: Worker, job: Job, task: Task[..., Any] | None, progress_interval: float
    ) -> None:
        self.worker = worker
        self.job = job
        self.task = task
        self.lease = Lease(job.id, job.attempt)
        self.ctx = Context(job, self, worker.settings.task_bounds)
        self.throttle = Throttle(progress_interval)
        self.rate = RateMeter()
        self.urgent = False
        self.waiting = False
        self.slot_freed = False
        self.cancel_requested = False
        self.verdict: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._body: asyncio.Future[Any] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._answer: asyncio.Future[Any] | None = None
        self._timeout_timer: asyncio.TimerHandle | None = None
        self._timeout_left = 0.0
        self._timeout_since = 0.0

    def __repr__(self) -> str:
        return f"<JobRun {self.job.id} attempt={self.job.attempt} task={self.job.task}>"

    # -- running the body ------------------------------------------------------------------

    async def execute(self, threads: Executor) -> Verdict:
        """Start the body and return the first verdict."""
        await self._count_logs()
        try:
            body = self._start(threads)
        except Exception as exc:
            self._decide(Raised(exc, retryable=False))
        else:
            self._body = body
            body.add_done_callback(self._body_done)
            if self.job.timeout is not None:
                self._arm_timeout(self.job.timeout)
        try:
            return await self.verdict
        finally:
            self.pause_timeout()
            for timer in self._timers:
                timer.cancel()

    async def _count_logs(self) -> None:
        """Tell the context how many log lines earlier attempts stored (the cap is per job)."""
        if self.job.last_seq <= FRESH_LAST_SEQ:
            return
        try:
            self.ctx.log.start_from(await self.worker.store.log_lines(self.job.id))
        except UnderwayError:
            logger.exception("job %s: counting its log lines failed; counting from 0", self.job.id)

    def _start(self, threads: Executor) -> asyncio.Future[Any]:
        task = self.task
        if task is None:
            raise UnderwayError(
                f"no task named {self.job.task!r} is registered in this worker's app",
                details={"task": self.job.task},
            )
        try:
            kwargs = task.bind(self.job.args)
        except ValidationError as exc:
            raise InvalidArguments(f"stored arguments no longer fit task {task.name!r}: {exc}") from None
        args = (self.ctx,) if task.takes_context else ()
        if task.is_async:
            body: asyncio.Future[Any] = asyncio.ensure_future(task.fn(*args, **kwargs))
            return body
        call = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
        return asyncio.get_running_loop().run_in_executor(threads, call)

    @property
    def body_running(self) -> bool:
        """Whether the body still runs: a sync task's thread goes on after its attempt ended."""
        return self._body is not None and not self._body.done()

    def when_body_ends(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop once the body ends (never, if the loop stops first)."""
        if self._body is None or self._body.done():
            callback()
        else:
            self._body.add_done_callback(lambda _: callback())

    def _body_done(self, body: asyncio.Future[Any]) -> None:
        if body.cancelled():
            self._decide(Stopped(forced=False) if self.cancel_requested else Lost())
            return
        error = body.exception()
        if error is None:
            # A body that returns once asked to stop stopped early: the job is cancelled.
            self._decide(Stopped(forced=False) if self.cancel_requested else Succeeded(body.result()))
        elif isinstance(error, Cancelled) or self.cancel_requested:
            self._decide(Stopped(forced=False))
        elif isinstance(error, TaskTimeout) and self.job.timeout is not None:
            self._decide(TimedOut(self.job.timeout))
        else:
            self._decide(Raised(error))

    def _decide(self, verdict: Verdict) -> None:
        if not self.verdict.done():
            self.verdict.set_result(verdict)

    # -- stopping it -----------------------------------------------------------------------

    def _arm_timeout(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._timeout_left = seconds
        self._timeout_since = loop.time()
        self._timeout_timer = loop.call_later(seconds, self._time_out, self.job.timeout or seconds)

    def pause_timeout(self) -> None:
        """Stop the timeout's clock: time spent waiting for an answer does not count."""
        if self._timeout_timer is not None:
            self._timeout_timer.cancel()
            self._timeout_timer = None
            self._timeout_left -= asyncio.get_running_loop().time() - self._timeout_since

    def resume_timeout(self) -> None:
        if self._timeout_timer is None and self.job.timeout is not None and not self.verdict.done():
            self._arm_timeout(max(0.0, self._timeout_left))

    def _time_out(self, seconds: float) -> None:
        self.ctx.stop(TaskTimeout(f"the task ran longer than its timeout of {seconds:g} s"))
        self._decide(TimedOut(seconds))
        self._interrupt()

    def request_cancel(self, grace: float) -> None:
        """The job was asked to stop: raise at cancellation points, end it after ``grace``."""
        if self.cancel_requested or self.verdict.done():
            return
        self.cancel_requested = True
        self.ctx.stop(Cancelled())
        self._interrupt()
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(grace, self._decide, Stopped(forced=True)))

    def lost(self) -> None:
        self.ctx.stop(LeaseLost("another worker runs this job now, or it ended"))
        self._decide(Lost())
        self._interrupt()

    def hand_back(self) -> None:
        self.ctx.stop(Cancelled("the worker is shutting down"))
        self._decide(HandedBack())
        self._interrupt()

    def _interrupt(self) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(self.ctx._stop or Cancelled())
        if self._body is not None and self.task is not None and self.task.is_async:
            self._body.cancel()

    # -- what the context calls ------------------------------------------------------------

    def mark(self, urgent: bool = False) -> None:
        self.worker.flusher.mark(self, urgent)

    async def ask(self, prompt: dict[str, Any], timeout: float | None) -> Any:
        answer = self._answer = asyncio.get_running_loop().create_future()
        try:
            return await self.worker.ask(self, prompt, timeout, answer)
        finally:
            self._answer = None
            if answer.done() and not answer.cancelled():
                answer.exception()  # retrieved: an interruption also cancels the body

    def ask_blocking(self, prompt: dict[str, Any], timeout: float | None) -> Any:
        loop = self.worker.loop
        return asyncio.run_coroutine_threadsafe(self.ask(prompt, timeout), loop).result()

    # -- what the flusher and the worker write ---------------------------------------------

    def pending_write(self, monotonic_now: float) -> WorkerWrite:
        logs, progress, checkpoint = self.ctx.take_pending()
        data = None
        if progress is not None:
            self.throttle.wrote(monotonic_now)
            try:
                data = progress.to_data(rate=self.rate.observe(monotonic_now, float(progress.current)))
                dumps(data)
            except (TypeError, ValueError) as exc:
                data = None
                logs += (log_event("error", f"progress not recorded: {exc}"),)
        return WorkerWrite(lease=self.lease, events=logs, progress=data, checkpoint=checkpoint)

    def final_write(self, verdict: Verdict) -> WorkerWrite | None:
        """How the attempt is recorded; ``None`` when it is not this worker's to record."""
        lease = self.lease
        self.ctx.log.ending()
        match verdict:
            case Succeeded(value):
                return self._success(value)
            case Stopped(forced):
                reason = "cancel_grace" if forced else "cancelled"
                return WorkerWrite(lease=lease, status=Status.CANCELLED, reason=reason)
            case HandedBack():
                return WorkerWrite(
                    lease=lease, status=Status.QUEUED, run_at=now(), reason="worker_shutdown", hand_back=True
                )
            case TimedOut(seconds):
                error = {
                    "type": "Timeout",
                    "message": f"the task ran longer than its timeout of {seconds:g} s",
                }
                return self._failure(error, None)
            case Raised(error, retryable):
                return self._failure(error_info(error), error, retryable=retryable)
            case _:
                return None

    def _success(self, value: Any) -> WorkerWrite:
        """The end of an attempt that returned ``value``: a failure when it cannot be stored
        (not JSON, or larger than ``max_result_size``; not retried: it would fail again)."""
        problem: Exception
        try:
            text = dumps(value)
        except (TypeError, ValueError) as exc:
            problem = TypeError(f"the task's result cannot be stored as JSON: {exc}")
            return self._failure(error_info(problem), problem, retryable=False)
        limit = self.worker.settings.max_result_size
        size = json_size(text)
        if size > limit:
            problem = result_too_large(size, limit)
            return self._failure(error_info(problem), problem, retryable=False)
        return WorkerWrite(lease=self.lease, status=Status.SUCCEEDED, result=value, result_json=text)

    def _failure(
        self, error: dict[str, Any], exc: BaseException | None, *, retryable: bool = True
    ) -> WorkerWrite:
        policy = self.task.retry if self.task is not None else None
        if policy is None or not retryable or (exc is not None and not isinstance(exc, Exception)):
            decision: Any = GiveUp(reason="non_retryable")
        else:
            decision = policy.decide(self.job.attempt, exc, max_attempts=self.job.max_attempts)
        if isinstance(decision, GiveUp):
            return WorkerWrite(lease=self.lease, status=Status.FAILED, error=error, reason=decision.reason)
        return WorkerWrite(
            lease=self.lease, status=Status.QUEUED, error=error, run_at=now() + decision.delay, reason="retry"
        )
