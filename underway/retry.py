"""Retry policy: after a failed attempt, run again later or give up (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped.

    The n-th retry waits a random time in ``[base·2ⁿ⁻¹·(1-jitter), base·2ⁿ⁻¹]`` seconds,
    never more than ``max_delay``. ``max_attempts`` counts the first run (``retries + 1``).
    """

    max_attempts: int = 1
    base_delay: float = 1.0
    max_delay: float = 300.0
    jitter: float = 0.5
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (retries must not be negative)")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before the run that follows failed attempt ``attempt`` (from 1)."""
        # The exponent is capped: 2.0 ** 1024 overflows, and any cap is reached long before.
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 1000))
        return ceiling * (1.0 - self.jitter * rand())

    def decide(
        self,
        attempt: int,
        error: BaseException | None = None,
        *,
        max_attempts: int | None = None,
        rand: Callable[[], float] = random.random,
    ) -> Retry | GiveUp:
        """What to do after attempt ``attempt`` failed with ``error`` (``None``: timeout, lost lease).

        ``max_attempts`` overrides the policy's, for jobs submitted with their own limit.
        """
        limit = self.max_attempts if max_attempts is None else max_attempts
        if error is not None and isinstance(error, self.non_retryable):
            return GiveUp(reason="non_retryable")
        if attempt >= limit:
            return GiveUp(reason="attempts_exhausted")
        return Retry(delay=self.delay(attempt, rand))


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str
