"""The worker: claim → run → heartbeat → record, and a graceful drain.

Each loop is a small coroutine of its own: claiming (as many jobs as there are free slots,
in one transaction), the flusher (every write, batched), heartbeats (leases, lost jobs,
cancel requests), the cancel watch (cancel requests between heartbeats), and the sweeper
(expired leases of dead workers, cancel graces, retention). Async tasks run on the loop;
sync tasks run in threads. A job waiting for an answer gives its slot back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from .bus import Overflow
from .config import Settings
from .events import EventType
from .exceptions import LeaseLost, StoreGone, UnderwayError
from .flusher import Flusher
from .jobs import Status
from .run import JobRun, Verdict
from .store import Store, WorkerInfo, WorkerWrite
from .threads import TaskThreads

if TYPE_CHECKING:
    from .app import App

logger = logging.getLogger("underway.worker")

#: How often a worker looks again at due jobs that limits hold back (rate limits free up with time).
BLOCKED_RECHECK = 0.05
IDLE_RECHECK = 1.0
CANCEL_CHECK_INTERVAL = 0.05
PRUNE_INTERVAL = 60.0
MAX_CLAIM = 100


class Worker:
    def __init__(
        self,
        app: App,
        *,
        settings: Settings | None = None,
        burst: bool = False,
        worker_id: str | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or app.settings
        self.burst = burst
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self.runs: dict[str, JobRun] = {}
        self.busy = 0
        #: The last claim left a due job behind (a limit holds it back, or it came in late).
        self._blocked = False
        #: When the last retry of a job this worker ran is due: a burst worker waits for it.
        self._retries_due = 0.0
        self.started_at = time.time()
        # Made here, not in run(): stop() may come before run() got going.
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._flusher: Flusher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = TaskThreads(self.settings.concurrency * 2 + 4, "underway-task")
        self._tasks: set[asyncio.Task[None]] = set()
        #: Runs whose attempt ended while their sync body still runs in its thread.
        self._lingering: set[JobRun] = set()
        #: The jobs whose sync bodies still ran when the worker stopped: their threads are
        #: abandoned (daemon threads, not waited for; their writes are refused).
        self.abandoned: list[str] = []
        #: Why the worker stopped by itself: its SQLite file was deleted or replaced under it
        #: (:meth:`run` raises it once the worker stopped).
        self.failure: StoreGone | None = None

    @property
    def flusher(self) -> Flusher:
        assert self._flusher is not None, "the worker is not running"
        return self._flusher

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the worker is not running"
        return self._loop

    @property
    def store(self) -> Store:
        return self.app.store

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.settings.queues,
            concurrency=self.settings.concurrency,
            running=len(self.runs),
            started_at=self.started_at,
            last_seen=time.time(),
        )

    # -- life cycle ------------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Work until :meth:`stop` (or SIGTERM/SIGINT when ``install_signal_handlers``)."""
        await self.app.open()
        self._loop = asyncio.get_running_loop()
        self._flusher = Flusher(self.store)
        if install_signal_handlers:
            self._install_signal_handlers()
        logger.info("worker %s serving %s", self.id, ", ".join(self.settings.queues) or "all queues")
        await self.store.heartbeat(self.info(), [], self.settings.lease_timeout)
        flushing = asyncio.create_task(self.flusher.run(), name="underway-flusher")
        helpers = [
            asyncio.create_task(coro, name=name)
            for name, coro in (
                ("underway-heartbeat", self._heartbeat_loop()),
                ("underway-cancel-watch", self._cancel_loop()),
                ("underway-sweeper", self._sweep_loop()),
            )
        ]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.flusher.close()
            await flushing
            if self.failure is None:
                await self._forget()
            self._abandon_threads()
            logger.info("worker %s stopped", self.id)
        if self.failure is not None:
            raise self.failure

    def _abandon_threads(self) -> None:
        """Shut the task threads down without waiting for the busy ones (Python cannot stop a
        thread): the worker returns, and the process may exit, while they run on."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.abandoned = sorted(run.job.id for run in self._lingering if run.body_running)
        if self.abandoned:
            logger.warning(
                "worker %s: abandoning %d sync task threads that still run jobs %s; their attempts"
                " were handed back or ended, and their writes are refused",
                self.id,
                len(self.abandoned),
                ", ".join(self.abandoned),
            )

    def stop(self) -> None:
        """Stop claiming; running jobs get ``shutdown_grace`` seconds, then go back to the queue.

        A second call hands them back at once.
        """
        assert self._stopping is not None
        if self._stopping.is_set():
            self._hand_back_all()
        self._stopping.set()
        assert self._slot_freed is not None
        self._slot_freed.set()

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(signum, self.stop)

    async def _drain(self) -> None:
        """Give running jobs ``shutdown_grace`` to end; jobs waiting for an answer go back at once."""
        if self._working():
            logger.info(
                "worker %s: waiting up to %gs for %d jobs",
                self.id,
                self.settings.shutdown_grace,
                len(self._working()),
            )
        deadline = time.monotonic() + self.settings.shutdown_grace
        while self._working() and time.monotonic() < deadline:
            self._slot_freed.clear()
            try:
                await asyncio.wait_for(self._slot_freed.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        self._hand_back_all()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _give_up(self, gone: StoreGone) -> None:
        """The database file was deleted or replaced: stop at once. Running jobs are handed
        back (the store refuses their writes: they belong to a file nobody reads)."""
        if self.failure is None:
            self.failure = gone
            logger.error("worker %s stops: %s", self.id, gone.message)
        self.stop()
        self.stop()  # the second stop hands running jobs back at once

    def _working(self) -> list[JobRun]:
        return [run for run in self.runs.values() if not run.waiting]

    def _hand_back_all(self) -> None:
        for run in list(self.runs.values()):
            run.hand_back()

    async def _forget(self) -> None:
        try:
            await self.store.remove_worker(self.id)
        except UnderwayError:
            logger.exception("could not remove worker %s from the store", self.id)

    # -- claiming --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        try:
            await self._claim_until_stopped()
        except StoreGone as gone:
            self._give_up(gone)

    async def _claim_until_stopped(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            free = self.settings.concurrency - self.busy
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            limit = min(free, MAX_CLAIM)
            try:
                jobs = await self.store.claim(
                    self.id, self.settings.queues, limit, self.settings.lease_timeout
                )
                failures = 0
            except StoreGone:
                raise
            except UnderwayError:
                failures += 1
                logger.exception("claiming jobs failed (try %d)", failures)
                await asyncio.sleep(min(5.0, 0.05 * 2**failures))
                continue
            if jobs:
                self._blocked = False
            for job in jobs:
                self._start(JobRun(self, job, self.app.tasks.get(job.task), self.settings.progress_interval))
            if len(jobs) == limit:
                continue  # there may be more
            if self.burst and not self.runs and not jobs and time.time() >= self._retries_due:
                return
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        """Until a job may be due: the store changed, a delayed job came due, or the worker stops.

        The change token is taken before looking for due jobs, so a job committed after the look
        wakes the wait; one committed before it is seen by the look. (A claim is not followed by
        another at once: that claim's own commit would look like news, and its transaction would
        hold up the records of the jobs just started.)
        """
        token = self.store.change_token()
        timeout = IDLE_RECHECK
        next_run_at = await self.store.next_run_at(self.settings.queues)
        if next_run_at is not None:
            timeout = min(timeout, max(0.0, next_run_at - time.time()))
            if timeout == 0.0:
                # Due already, yet the last claim did not take it. It may have come in just
                # after that claim: claim again at once. If the next claim leaves it too, a
                # limit holds it back: another job's end wakes us through the store, and a
                # rate window passes with time, so look again shortly.
                if not self._blocked:
                    self._blocked = True
                    return
                timeout = BLOCKED_RECHECK
            else:
                self._blocked = False
        else:
            self._blocked = False
        stopping = asyncio.ensure_future(self._stopping.wait())
        changed = asyncio.ensure_future(self.store.wait_for_change(token, timeout))
        try:
            await asyncio.wait({stopping, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            changed.cancel()

    def _start(self, run: JobRun) -> None:
        older = self.runs.get(run.job.id)
        if older is not None:
            # The store gave the job out again (its lease expired while it waited, say):
            # the older run lost it, even if no heartbeat said so yet.
            older.lost()
        self.runs[run.job.id] = run
        self.busy += 1
        task = asyncio.create_task(self._execute(run), name=f"underway-job-{run.job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, run: JobRun) -> None:
        try:
            verdict = await run.execute(self._threads)
            self._free_slot(run)
            await self._record(run, verdict)
        except Exception:
            logger.exception("recording the end of job %s failed", run.job.id)
        finally:
            self._free_slot(run)
            if self.runs.get(run.job.id) is run:
                del self.runs[run.job.id]
            if run.body_running:
                self._lingering.add(run)
                run.when_body_ends(lambda: self._lingering.discard(run))
            assert self._slot_freed is not None
            self._slot_freed.set()

    def _free_slot(self, run: JobRun) -> None:
        """The body ended: its slot may take the next job while the end is being recorded.

        A run that ends while waiting gave its slot back when it started to wait.
        """
        if run.slot_freed:
            return
        run.slot_freed = True
        if not run.waiting:
            self.busy -= 1
            self._slot_freed.set()

    async def _record(self, run: JobRun, verdict: Verdict) -> None:
        write = run.final_write(verdict)
        if write is None:
            logger.warning(
                "job %s: lease lost, another worker owns it now (%s)", run.job.id, type(verdict).__name__
            )
            return
        if not await self.flusher.move(run, write):
            logger.warning("job %s: the store refused the end of attempt %d", run.job.id, run.job.attempt)
        elif write.status is Status.QUEUED and not write.hand_back and write.run_at is not None:
            self._retries_due = max(self._retries_due, write.run_at)

    # -- questions -------------------------------------------------------------------------

    async def ask(
        self, run: JobRun, prompt: dict[str, Any], timeout: float | None, interrupted: asyncio.Future[Any]
    ) -> Any:
        """Move the job to ``waiting``, give its slot back, and wait for the answer."""
        with await self.app.bus().subscribe(run.job.id) as subscription:
            write = WorkerWrite(lease=run.lease, status=Status.WAITING, prompt=prompt, reason="ask")
            if not await self.flusher.move(run, write):
                raise LeaseLost("the job is no longer this worker's")
            self._set_waiting(run, True)
            try:
                answer = asyncio.ensure_future(self._answer(run, subscription, prompt["key"]))
                done, _ = await asyncio.wait(
                    {answer, interrupted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                answer.cancel()
                if interrupted in done:
                    return interrupted.result()
                if answer in done:
                    return answer.result()
                await self._resume_after_timeout(run)
                raise TimeoutError(f"no answer to {prompt['key']!r} within {timeout:g} s")
            finally:
                self._set_waiting(run, False)

    async def _answer(self, run: JobRun, subscription: Any, key: str) -> Any:
        job = await self.store.get(run.job.id)
        while job is None or job.status is Status.WAITING or key not in job.answers:
            try:
                event = await subscription.get(timeout=self.settings.heartbeat_every)
            except Overflow:
                event = None
            if event is not None and event.type is EventType.ANSWER and event.data["key"] == key:
                return event.data["value"]
            if event is None:
                job = await self.store.get(run.job.id)
        return job.answers[key]

    async def _resume_after_timeout(self, run: JobRun) -> None:
        write = WorkerWrite(lease=run.lease, status=Status.RUNNING, reason="ask_timeout")
        if not await self.flusher.move(run, write):
            raise LeaseLost("the job is no longer this worker's")

    def _set_waiting(self, run: JobRun, waiting: bool) -> None:
        if run.waiting == waiting:
            return
        run.waiting = waiting
        if waiting:
            run.pause_timeout()
        else:
            run.resume_timeout()
        if run.slot_freed:  # the attempt already ended (timed out, lost…) while it waited
            return
        self.busy += -1 if waiting else 1
        if waiting:
            assert self._slot_freed is not None
            self._slot_freed.set()

    # -- keeping leases and watching for cancels -------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_every)
            runs = list(self.runs.values())
            leases = [run.lease for run in runs]
            try:
                beat = await self.store.heartbeat(self.info(), leases, self.settings.lease_timeout)
            except StoreGone as gone:
                self._give_up(gone)
                return
            except UnderwayError:
                logger.exception("heartbeat failed; leases expire in %gs", self.settings.lease_timeout)
                continue
            self._apply(runs, beat.lost, beat.cancelling)

    async def _cancel_loop(self) -> None:
        while True:
            token = self.store.change_token()
            if self.runs:
                try:
                    cancelling = await self.store.cancelling(self.id)
                    self._apply(list(self.runs.values()), frozenset(), cancelling)
                except UnderwayError:
                    logger.exception("checking for cancel requests failed")
            await self.store.wait_for_change(token, self.settings.heartbeat_every)
            await asyncio.sleep(CANCEL_CHECK_INTERVAL)

    def _apply(self, runs: list[JobRun], lost: frozenset[str], cancelling: frozenset[str]) -> None:
        """Tell ``runs`` (the ones the store was asked about, not newer ones) what it said."""
        for run in runs:
            if run.job.id in lost:
                logger.warning("job %s: lease lost", run.job.id)
                run.lost()
            elif run.job.id in cancelling:
                run.request_cancel(self.settings.cancel_grace)

    # -- sweeping --------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        last_prune = 0.0
        while True:
            try:
                swept = await self.store.sweep(self.settings.cancel_grace)
                if swept.total:
                    logger.info("swept %s", swept)
                if time.monotonic() - last_prune > PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    await self._prune()
            except UnderwayError:
                logger.exception("sweeping failed")
            await asyncio.sleep(self.settings.sweep_interval)

    async def _prune(self) -> None:
        pruned = 1000
        while pruned == 1000:
            pruned = await self.store.prune(self.settings.retention, limit=1000)
