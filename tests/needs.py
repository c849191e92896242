"""What a test needs from the machine (PostgreSQL, Chromium, Node): without it the test skips
with the reason, except under ``CI=true``, where it fails: CI must not pass by skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(what: str, reason: str) -> NoReturn:
    """Skip for ``reason``; fail instead under ``CI=true``, where ``what`` is required."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true: {reason}")
    pytest.skip(reason)
