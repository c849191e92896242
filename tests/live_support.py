"""What the tests of live servers share (tests/web, tests/browser): waiting for a condition,
gates that test tasks wait on, and the settings of a test server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import underway

T = TypeVar("T")

#: Longest a gate of a test task stays closed before the task gives up.
GATE_LIMIT = 30.0


def wait_until(
    predicate: Callable[[], T | None], timeout: float = 5.0, *, interval: float = 0.01, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something true, and return that; fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


class Gates:
    """Named one-shot gates that test tasks wait on and tests open (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[str, threading.Event] = {}
        self._closing = threading.Event()

    def _gate(self, name: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(name, threading.Event())

    def open(self, name: str) -> None:
        self._gate(name).set()

    def open_all(self) -> None:
        """Let every task through, now and later (at the end of a test)."""
        self._closing.set()

    async def wait(self, name: str) -> None:
        """Until the gate opens; it always yields to the loop once, so that a task that waits in
        a loop for gates already open does not hold its event loop (and the server) to itself."""
        await asyncio.sleep(0)
        gate = self._gate(name)
        deadline = time.monotonic() + GATE_LIMIT
        while not (gate.is_set() or self._closing.is_set()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {name!r} stayed closed for {GATE_LIMIT} s")
            await asyncio.sleep(0.005)


def server_settings(url: str, **overrides: Any) -> underway.Settings:
    """Settings for a test server: loopback, port 0, short graces; ``overrides`` win."""
    values: dict[str, Any] = {
        "url": url,
        "host": "127.0.0.1",
        "port": 0,
        "lease_timeout": 5.0,
        "cancel_grace": 0.5,
        "shutdown_grace": 1.0,
        "progress_interval": 0.02,
        "sweep_interval": 0.2,
        "concurrency": 8,
    }
    values.update(overrides)
    return underway.Settings(**values)
