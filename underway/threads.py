"""The threads sync task bodies run in: a pool whose threads nobody waits for.

``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits, so one
sync task stuck in a long call (a 40 s ``time.sleep``, a hung socket) kept ``underway worker``
alive after its shutdown grace, though its job was already handed back. Python cannot stop a
thread; it can decline to wait for one. These threads are daemon threads, not registered with
``concurrent.futures``: a worker that shuts down abandons the ones still busy (their writes are
refused by the store's fence) and the process may exit while they run.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger("underway.worker")

_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class TaskThreads(Executor):
    """At most ``max_threads`` daemon threads, started as work comes and kept for the next."""

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot run a task body after the worker's threads were shut down")
            self._queue.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_threads:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # handed to whoever waits for the future
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future  # no reference to the result kept while the thread idles
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more bodies; idle threads end. With ``wait``, wait for the busy ones too (a
        worker never does: it abandons them)."""
        with self._lock:
            self._shut = True
            if cancel_futures:
                self._cancel_queued()
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _cancel_queued(self) -> None:
        kept: list[_Item | None] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
            kept.append(item)
        for item in kept:
            if item is None:
                self._queue.put(None)


def exit_unless_gone(timeout: float, jobs: list[str]) -> None:
    """The last resort of a worker process that abandoned task threads: if the process is still
    alive ``timeout`` seconds from now, end it with ``os._exit(0)``.

    Abandoned :class:`TaskThreads` never hold the process, but the code they run may have
    started threads that Python waits for at exit (or work on the event loop's default
    executor, which ``asyncio.run`` waits for): a deploy must not wait on them.
    """

    def watch() -> None:
        threading.Event().wait(timeout)  # a daemon thread: gone with the process if it ends first
        holding = [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
        logger.warning(
            "still running %gs after the worker stopped (threads %s; abandoned jobs %s): exiting now",
            timeout,
            ", ".join(holding) or "none",
            ", ".join(jobs),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    threading.Thread(target=watch, name="underway-exit-watch", daemon=True).start()
