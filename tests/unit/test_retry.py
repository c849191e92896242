"""Retry policy decisions (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from underway.retry import GiveUp, Retry, RetryPolicy


def fixed(value: float):  # type: ignore[no-untyped-def]
    return lambda: value


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay, policy.max_delay, policy.jitter) == (1, 1.0, 300.0, 0.5)
    assert policy.non_retryable == ()


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0)])
def test_delay_doubles_per_attempt(attempt: int, ceiling: float) -> None:
    policy = RetryPolicy(base_delay=2.0, jitter=0.5)
    assert policy.delay(attempt, fixed(0.0)) == ceiling  # no jitter drawn: the ceiling
    assert policy.delay(attempt, fixed(1.0)) == ceiling / 2  # the most jitter: half of it
    assert policy.delay(attempt, fixed(0.5)) == ceiling * 0.75


def test_delay_without_jitter_is_exact() -> None:
    policy = RetryPolicy(base_delay=1.5, jitter=0.0)
    assert [policy.delay(n, fixed(0.9)) for n in (1, 2, 3)] == [1.5, 3.0, 6.0]


def test_full_jitter_may_retry_at_once() -> None:
    assert RetryPolicy(base_delay=10.0, jitter=1.0).delay(1, fixed(1.0)) == 0.0


def test_delay_capped_by_max_delay() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=60.0, jitter=0.0)
    assert policy.delay(6) == 32.0
    assert policy.delay(7) == 60.0
    assert policy.delay(50) == 60.0


@pytest.mark.parametrize("attempt", [1_024, 1_025, 5_000, 10**6])
def test_delay_of_a_very_late_attempt_is_the_cap(attempt: int) -> None:
    assert RetryPolicy(base_delay=1.0, max_delay=60.0, jitter=0.0).delay(attempt) == 60.0
    assert RetryPolicy(base_delay=0.0, max_delay=60.0, jitter=0.0).delay(attempt) == 0.0


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=1e4),
    cap=st.floats(min_value=0.0, max_value=1e5),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    drawn=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_delay_bounds(attempt: int, base: float, cap: float, jitter: float, drawn: float) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=cap, jitter=jitter)
    delay = policy.delay(attempt, fixed(drawn))
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 1000))
    assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9
    assert 0.0 <= delay <= cap


def test_delay_uses_random_by_default() -> None:
    policy = RetryPolicy(base_delay=8.0, jitter=0.5)
    delays = {policy.delay(1) for _ in range(100)}
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len(delays) > 1


# -- decisions -----------------------------------------------------------------------------------


def test_retry_while_attempts_remain() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=1.0, jitter=0.0)
    assert policy.decide(1, ValueError()) == Retry(delay=1.0)
    assert policy.decide(2, ValueError()) == Retry(delay=2.0)
    assert policy.decide(3, ValueError()) == GiveUp(reason="attempts_exhausted")


def test_single_attempt_never_retries() -> None:
    assert RetryPolicy().decide(1, RuntimeError()) == GiveUp(reason="attempts_exhausted")


def test_no_error_counts_as_a_failed_attempt() -> None:
    # A timeout or a lost lease: no exception to look at, the attempts still count.
    policy = RetryPolicy(max_attempts=2, jitter=0.0)
    assert policy.decide(1) == Retry(delay=1.0)
    assert policy.decide(2) == GiveUp(reason="attempts_exhausted")


def test_attempt_past_the_limit_gives_up() -> None:
    assert RetryPolicy(max_attempts=2).decide(5, ValueError()) == GiveUp(reason="attempts_exhausted")


def test_non_retryable_errors_give_up_at_once() -> None:
    policy = RetryPolicy(max_attempts=5, non_retryable=(KeyError, TypeError))
    assert policy.decide(1, KeyError("k")) == GiveUp(reason="non_retryable")
    assert policy.decide(1, TypeError()) == GiveUp(reason="non_retryable")
    assert isinstance(policy.decide(1, ValueError()), Retry)


def test_non_retryable_matches_subclasses() -> None:
    policy = RetryPolicy(max_attempts=5, non_retryable=(LookupError,))
    assert policy.decide(1, IndexError()) == GiveUp(reason="non_retryable")


def test_max_attempts_override() -> None:
    policy = RetryPolicy(max_attempts=1, jitter=0.0)
    assert policy.decide(1, ValueError(), max_attempts=3) == Retry(delay=1.0)
    assert policy.decide(3, ValueError(), max_attempts=3) == GiveUp(reason="attempts_exhausted")
    generous = RetryPolicy(max_attempts=10)
    assert generous.decide(2, ValueError(), max_attempts=2) == GiveUp(reason="attempts_exhausted")


def test_decide_passes_rand_to_the_delay() -> None:
    policy = RetryPolicy(max_attempts=3, base_delay=4.0, jitter=1.0)
    assert policy.decide(2, ValueError(), rand=fixed(0.25)) == Retry(delay=6.0)


@given(
    attempt=st.integers(min_value=1, max_value=50),
    limit=st.integers(min_value=1, max_value=50),
)
def test_retry_exactly_while_attempts_remain(attempt: int, limit: int) -> None:
    decision = RetryPolicy(max_attempts=limit).decide(attempt, ValueError())
    assert isinstance(decision, Retry) is (attempt < limit)


# -- invalid policies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"max_attempts": -3}, "max_attempts must be at least 1"),
        ({"jitter": -0.1}, "jitter must be between 0 and 1"),
        ({"jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"base_delay": -1.0}, "delays must not be negative"),
        ({"max_delay": -1.0}, "delays must not be negative"),
    ],
)
def test_invalid_policies_raise(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RetryPolicy().max_attempts = 3  # type: ignore[misc]
