"""The buckets of ``GET /stats`` and the answer assembled from the store's rows, without a store."""

from __future__ import annotations

import itertools
import math

import pytest

from underway.exceptions import InvalidArguments
from underway.stats import (
    MAX_WINDOW,
    FinishedBucket,
    nearest_rank,
    parse_window,
    stats_answer,
    stats_window,
)
from underway.timefmt import to_iso

NOW = 1_700_000_000.25  # a multiple of 60 s plus 20.25 s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600.0), ("15m", 900.0), ("1h", 3600.0), ("24h", 86400.0), ("7d", MAX_WINDOW), (" 90 ", 90.0)],
)
def test_a_window_is_seconds_or_a_duration(text: str, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "1w", "0", "0s", "7d1s", "604801", "8d"])
def test_a_window_that_is_no_duration_or_out_of_range_is_refused(text: str) -> None:
    with pytest.raises(InvalidArguments, match="window"):
        parse_window(text)


@pytest.mark.parametrize(
    ("window", "bucket", "count"),
    [(3600.0, 60, 60), (MAX_WINDOW, 10080, 60), (900.0, 15, 60), (90.0, 2, 45), (59.0, 1, 59), (0.5, 1, 1)],
)
def test_about_sixty_buckets_of_whole_seconds(window: float, bucket: int, count: int) -> None:
    span = stats_window(window, NOW)
    assert (span.bucket, span.count) == (bucket, count)


def test_buckets_are_aligned_and_the_last_one_holds_now() -> None:
    span = stats_window(3600.0, NOW)
    starts = span.starts()
    assert starts[-1] == math.floor(NOW / 60) * 60 <= NOW < span.end == starts[-1] + 60
    assert span.start == starts[0] == starts[-1] - 59 * 60
    assert all(start % 60 == 0 for start in starts)
    assert [b - a for a, b in itertools.pairwise(starts)] == [60] * 59


def test_a_window_on_a_bucket_edge_starts_a_new_bucket() -> None:
    edge = 1_700_000_040.0  # a multiple of 60 s
    assert stats_window(3600.0, edge).starts()[-1] == edge
    assert stats_window(3600.0, edge - 0.001).starts()[-1] == edge - 60


def test_a_window_out_of_range_is_refused() -> None:
    for window in (0.0, -1.0, MAX_WINDOW + 1, math.nan, math.inf):
        with pytest.raises(InvalidArguments):
            stats_window(window, NOW)


def test_nearest_rank_is_the_ceil_p_n_th_smallest() -> None:
    values = [float(v) for v in (7, 1, 10, 3, 9, 2, 8, 4, 6, 5)]
    assert nearest_rank(values, 0.5) == 5.0  # ceil(5.0) = 5th
    assert nearest_rank(values, 0.9) == 9.0  # ceil(9.0) = 9th
    assert nearest_rank(values, 0.99) == 10.0  # ceil(9.9) = 10th
    assert nearest_rank([4.0], 0.5) == nearest_rank([4.0], 0.99) == 4.0
    assert nearest_rank([1.0, 2.0], 0.5) == 1.0
    assert nearest_rank([1.0, 2.0, 3.0], 0.5) == 2.0
    assert nearest_rank([], 0.5) is None
    eleven = [float(v) for v in range(1, 12)]
    assert [nearest_rank(eleven, p) for p in (0.5, 0.9, 0.99)] == [6.0, 10.0, 11.0]


def test_the_answer_fills_empty_buckets_with_zeros_and_nulls() -> None:
    span = stats_window(300.0, NOW)  # 60 buckets of 5 s
    rows = [
        FinishedBucket(index=0, succeeded=2, p50=1.0, p90=2.0, p99=2.0),
        FinishedBucket(index=59, failed=1, cancelled=3, p50=0.5, p90=4.0, p99=4.5),
        FinishedBucket(index=60, succeeded=9, p50=9.0, p90=9.0, p99=9.0),  # past the end: left out
    ]
    answer = stats_answer(span, rows, {"queued": 4, "running": 1, "succeeded": 99})
    assert set(answer) == {"window_s", "bucket_s", "from", "to", "buckets", "finished", "latency", "depth"}
    assert (answer["window_s"], answer["bucket_s"]) == (300.0, 5)
    assert answer["from"] == answer["buckets"][0] == to_iso(span.start)
    assert answer["to"] == to_iso(NOW)
    assert len(answer["buckets"]) == 60
    finished = answer["finished"]
    assert finished["succeeded"] == [2] + [0] * 59
    assert finished["failed"] == [0] * 59 + [1]
    assert finished["cancelled"] == [0] * 59 + [3]
    latency = answer["latency"]
    assert latency["p50"] == [1.0] + [None] * 58 + [0.5]
    assert (latency["p90"][0], latency["p99"][-1]) == (2.0, 4.5)
    assert answer["depth"] == {"queued": 4, "running": 1, "waiting": 0}
