"""Progress values, percent, rate, ETA and the write throttle (pure)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from underway.progress import Progress, RateMeter, Throttle, eta_seconds

# -- percent -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "total", "percent"),
    [
        (0, 10, 0.0),
        (5, 10, 50.0),
        (1, 3, 33.3),
        (2, 3, 66.7),
        (10, 10, 100.0),
        (15, 10, 100.0),  # clamped above
        (-5, 10, 0.0),  # clamped below
        (0.5, 1.0, 50.0),
        (5, None, None),  # unknown total
        (5, 0, None),  # nothing to do: no meaningful percent
        (5, -1, None),
    ],
)
def test_percent(current: float, total: float | None, percent: float | None) -> None:
    assert Progress(current=current, total=total).percent == percent


@given(
    current=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
    total=st.none() | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
)
def test_percent_is_none_or_between_0_and_100(current: float, total: float | None) -> None:
    percent = Progress(current=current, total=total).percent
    assert percent is None or 0.0 <= percent <= 100.0
    assert (percent is None) == (total is None or total <= 0)


# -- event data ----------------------------------------------------------------------------------


def test_to_data_minimal() -> None:
    assert Progress(current=3).to_data() == {"current": 3}


def test_to_data_full() -> None:
    progress = Progress(current=40, total=100, message="Resizing", step=2, steps=4)
    assert progress.to_data(rate=3.0) == {
        "current": 40,
        "total": 100,
        "percent": 40.0,
        "message": "Resizing",
        "step": 2,
        "steps": 4,
        "rate": 3.0,
        "eta_s": 20.0,
    }


def test_to_data_integers_stay_integers() -> None:
    data = Progress(current=5.0, total=10.0).to_data()
    assert data == {"current": 5, "total": 10, "percent": 50.0}
    assert type(data["current"]) is int
    assert type(data["total"]) is int
    assert type(Progress(current=7).to_data()["current"]) is int


def test_to_data_fractions_stay_fractions() -> None:
    data = Progress(current=2.5, total=7.25).to_data()
    assert data["current"] == 2.5
    assert data["total"] == 7.25


def test_to_data_total_zero() -> None:
    assert Progress(current=0, total=0).to_data() == {"current": 0, "total": 0, "percent": None}


def test_to_data_rate_rounded_and_without_eta_when_total_unknown() -> None:
    assert Progress(current=10).to_data(rate=1.23456) == {"current": 10, "rate": 1.235}


@pytest.mark.parametrize("rate", [None, 0.0, -2.0])
def test_to_data_no_rate_when_not_moving(rate: float | None) -> None:
    assert Progress(current=1, total=10).to_data(rate=rate) == {"current": 1, "total": 10, "percent": 10.0}


# -- ETA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "total", "rate", "eta"),
    [
        (40, 100, 3.0, 20.0),
        (0, 10, 3.0, 3.3),
        (100, 100, 5.0, 0.0),
        (120, 100, 5.0, 0.0),  # past the total: nothing remains
        (40, None, 3.0, None),
        (40, 100, 0.0, None),
        (40, 100, -1.0, None),
    ],
)
def test_eta_seconds(current: float, total: float | None, rate: float, eta: float | None) -> None:
    assert eta_seconds(Progress(current=current, total=total), rate) == eta


# -- rate ----------------------------------------------------------------------------------------


def test_rate_first_observation_has_no_rate() -> None:
    meter = RateMeter()
    assert meter.observe(100.0, 5) is None
    assert meter.rate is None


def test_rate_of_constant_speed_is_that_speed() -> None:
    meter = RateMeter()
    for i in range(50):
        rate = meter.observe(100.0 + i * 0.1, i * 2.0)
    assert rate == pytest.approx(20.0)


@given(
    speed=st.floats(min_value=0.001, max_value=1e6),
    gaps=st.lists(st.floats(min_value=0.001, max_value=10.0), min_size=1, max_size=50),
)
def test_rate_of_constant_speed_with_uneven_gaps(speed: float, gaps: list[float]) -> None:
    meter = RateMeter()
    at = 1000.0
    meter.observe(at, 0.0)
    rate = None
    for gap in gaps:
        at += gap
        rate = meter.observe(at, (at - 1000.0) * speed)
    assert rate == pytest.approx(speed, rel=1e-6)


def test_rate_converges_to_a_new_constant_speed() -> None:
    meter = RateMeter()
    at, value = 0.0, 0.0
    for _ in range(50):  # 5 s at 100/s
        meter.observe(at, value)
        at, value = at + 0.1, value + 10.0
    assert meter.rate == pytest.approx(100.0)
    for _ in range(600):  # then 60 s at 10/s
        at, value = at + 0.1, value + 1.0
        meter.observe(at, value)
    assert meter.rate == pytest.approx(10.0, rel=0.01)


def test_rate_follows_time_not_sample_count() -> None:
    # One long gap weighs as much as many short ones covering the same time.
    few, many = RateMeter(), RateMeter()
    for meter in (few, many):
        meter.observe(0.0, 0.0)
        meter.observe(1.0, 100.0)  # 100/s
    few.observe(6.0, 150.0)  # 10/s for 5 s in one sample
    at, value = 1.0, 100.0
    for _ in range(50):  # 10/s for 5 s in 50 samples
        at, value = at + 0.1, value + 1.0
        many.observe(at, value)
    assert few.rate == pytest.approx(many.rate, rel=1e-6)


def test_rate_a_step_backwards_restarts_the_measurement() -> None:
    meter = RateMeter()
    meter.observe(0.0, 0.0)
    assert meter.observe(1.0, 100.0) == pytest.approx(100.0)
    assert meter.observe(2.0, 3.0) is None  # a new stage started from 0
    assert meter.rate is None
    assert meter.observe(3.0, 8.0) == pytest.approx(5.0)


def test_rate_zero_elapsed_keeps_the_rate() -> None:
    meter = RateMeter()
    meter.observe(0.0, 0.0)
    meter.observe(1.0, 10.0)
    assert meter.observe(1.0, 50.0) == pytest.approx(10.0)
    assert meter.observe(0.5, 60.0) == pytest.approx(10.0)  # a clock going back changes nothing
    # The samples with no elapsed time did not move the baseline: 1 s later, 20 units more.
    assert meter.observe(2.0, 30.0) == pytest.approx(10.0 + (1 - math.exp(-1 / 5.0)) * (20.0 - 10.0))


def test_rate_zero_elapsed_before_any_rate() -> None:
    meter = RateMeter()
    meter.observe(5.0, 1.0)
    assert meter.observe(5.0, 2.0) is None


def test_rate_standing_still_decays_towards_zero() -> None:
    meter = RateMeter()
    meter.observe(0.0, 0.0)
    meter.observe(1.0, 10.0)
    for second in range(2, 60):
        meter.observe(float(second), 10.0)
    assert meter.rate is not None
    assert 0.0 <= meter.rate < 0.01


# -- throttle ------------------------------------------------------------------------------------


def test_throttle_first_write_is_due_at_once() -> None:
    throttle = Throttle(0.05)
    assert throttle.due() == -math.inf
    assert throttle.interval == 0.05


def test_throttle_next_write_due_one_interval_after_the_last() -> None:
    throttle = Throttle(0.05)
    throttle.wrote(10.0)
    assert throttle.due() == pytest.approx(10.05)
    throttle.wrote(10.2)
    assert throttle.due() == pytest.approx(10.25)


def coalesce(calls: list[tuple[float, float]], interval: float) -> list[tuple[float, float]]:
    """The writes a coalescing reporter makes for ``calls`` of ``(time, value)``, using a Throttle.

    Like the worker's flusher: a call is written at once when the throttle allows it; otherwise
    it becomes the pending value (replacing any older one) and a timer writes it when the
    throttle is due; when the task ends, whatever is pending is written (still no sooner than
    the throttle allows).
    """
    throttle = Throttle(interval)
    writes: list[tuple[float, float]] = []
    pending: float | None = None

    def write(at: float, value: float) -> None:
        nonlocal pending
        writes.append((at, value))
        throttle.wrote(at)
        pending = None

    for at, value in calls:
        if pending is not None and throttle.due() <= at:  # the timer fired before this call
            write(throttle.due(), pending)
        pending = value
        if throttle.due() <= at:
            write(at, value)
    if pending is not None:
        write(max(throttle.due(), calls[-1][0]), pending)
    return writes


call_sequences = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=0.2), st.floats(min_value=0, max_value=1e6)),
    min_size=1,
    max_size=200,
).map(
    lambda steps: list(zip(itertools.accumulate(gap for gap, _ in steps), (v for _, v in steps), strict=True))
)


@given(calls=call_sequences, interval=st.floats(min_value=0.001, max_value=1.0))
def test_throttled_writes(calls: list[tuple[float, float]], interval: float) -> None:
    writes = coalesce(calls, interval)
    # The leading edge is written at once.
    assert writes[0] == calls[0]
    # Then at most one write per interval.
    for (earlier, _), (later, _) in itertools.pairwise(writes):
        assert later - earlier >= interval - 1e-9
    # The last value always lands, last.
    assert writes[-1][1] == calls[-1][1]
    # Writes carry values that were reported, in the order they were reported.
    # and never before they were reported.
    values = [v for _, v in calls]
    position = -1
    for at, value in writes:
        position = values.index(value, position + 1)
        assert at >= calls[position][0]
    # So a burst of calls costs about one write per interval.
    span = calls[-1][0] - calls[0][0]
    assert len(writes) <= span / interval + 2


def test_throttled_writes_example() -> None:
    calls = [(0.0, 1), (0.01, 2), (0.02, 3), (0.07, 4), (0.2, 5), (0.21, 6)]
    assert coalesce(calls, 0.05) == [(0.0, 1), (0.05, 3), (0.1, 4), (0.2, 5), (0.25, 6)]


def test_throttled_writes_of_many_calls_are_few() -> None:
    calls = [(i * 5e-6, float(i)) for i in range(200_000)]  # one second of calls
    writes = coalesce(calls, 0.05)
    assert 20 <= len(writes) <= 22
    assert writes[-1][1] == 199_999.0
