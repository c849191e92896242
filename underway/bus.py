"""The in-process fan-out of new events to every subscriber.

One :class:`Bus` per process and event loop reads the store's feed (all jobs' events in commit
order) with one query per change, never one per subscriber, and pushes each event to the
subscriptions of its job and to the catch-all ones. Writes made in this process wake the feed
at once; writes of other processes are seen at the next change poll.

A subscription is a bounded queue. A newer ``progress`` event of a job replaces one that the
subscriber has not read yet (progress is state, not a log). A subscriber that falls further
behind than ``maxsize`` is marked overflowed and must catch up from the store by ``seq``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from .events import Event, EventType
from .exceptions import UnderwayError

if TYPE_CHECKING:
    from .store import Store

logger = logging.getLogger("underway.bus")

FEED_BATCH = 1000


class Overflow(UnderwayError):
    """The subscriber fell behind; read the missed events from the store and go on."""

    code = "overflow"


class Subscription:
    def __init__(self, bus: Bus, job_id: str | None, maxsize: int) -> None:
        self.job_id = job_id
        self._bus = bus
        self._maxsize = maxsize
        self._slots: deque[list[Event | None]] = deque()
        self._pending_progress: dict[str, list[Event | None]] = {}
        self._live = 0
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def push(self, event: Event) -> None:
        if event.type is EventType.PROGRESS:
            older = self._pending_progress.get(event.job_id)
            if older is not None and older[0] is not None:
                older[0] = None
                self._live -= 1
        if self._live >= self._maxsize:
            self.overflowed = True
            self._slots.clear()
            self._pending_progress.clear()
            self._live = 0
        else:
            slot: list[Event | None] = [event]
            self._slots.append(slot)
            self._live += 1
            if event.type is EventType.PROGRESS:
                self._pending_progress[event.job_id] = slot
        self._ready.set()

    def get_nowait(self) -> Event | None:
        if self.overflowed:
            self.overflowed = False
            raise Overflow("the subscriber fell behind: read the missed events from the store")
        while self._slots:
            event = self._slots.popleft()[0]
            if event is not None:
                self._live -= 1
                if self._pending_progress.get(event.job_id) is not None and event.type is EventType.PROGRESS:
                    self._pending_progress.pop(event.job_id, None)
                return event
        self._ready.clear()
        return None

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; ``None`` after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for may swallow a cancel that
                # arrives as the wait completes, and the subscriber would never stop.
                async with asyncio.timeout(remaining):
                    await self._ready.wait()
            except TimeoutError:
                return None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Bus:
    def __init__(self, store: Store, *, maxsize: int = 1000, linger: float = 5.0) -> None:
        self._store = store
        self._maxsize = maxsize
        self._linger = linger
        self._subscriptions: dict[str | None, set[Subscription]] = {}
        self._position = 0
        self._feed: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._subscriptions.values())

    async def subscribe(self, job_id: str | None = None) -> Subscription:
        """Events of one job (or of all jobs) committed from now on.

        Returns once the feed is reading, so that an event committed after this call is
        delivered: read history from the store *after* subscribing and nothing is missed.
        """
        subscription = Subscription(self, job_id, self._maxsize)
        self._subscriptions.setdefault(job_id, set()).add(subscription)
        async with self._starting:
            if self._feed is None or self._feed.done():
                self._position = await self._store.feed_position()
                self._feed = asyncio.create_task(self._run_feed(), name="underway-bus-feed")
        return subscription

    def publish(self, events: list[Event]) -> None:
        everyone = self._subscriptions.get(None, ())
        for event in events:
            for subscription in (*self._subscriptions.get(event.job_id, ()), *everyone):
                subscription.push(event)

    async def close(self) -> None:
        if self._feed is not None:
            self._feed.cancel()
            try:
                await self._feed
            except asyncio.CancelledError:
                pass
        self._feed = None

    def _remove(self, subscription: Subscription) -> None:
        subs = self._subscriptions.get(subscription.job_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscriptions[subscription.job_id]

    async def _run_feed(self) -> None:
        idle_since: float | None = None
        failures = 0
        while True:
            token = self._store.change_token()
            try:
                events, self._position = await self._store.feed(self._position, FEED_BATCH)
                failures = 0
            except UnderwayError:
                failures += 1
                logger.exception("reading the event feed failed; retrying")
                await asyncio.sleep(min(5.0, 0.05 * 2**failures))
                continue
            self.publish(events)
            if len(events) == FEED_BATCH:
                continue
            if self._subscriptions:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self._linger:
                return
            await self._store.wait_for_change(token, 1.0)
