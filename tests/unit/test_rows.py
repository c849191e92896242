"""What an expired lease becomes (``store/rows.py``'s pure rule, used by every store's sweep)."""

from __future__ import annotations

import pytest

from underway.jobs import Status
from underway.store import Lease
from underway.store.rows import expired, write_params

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("crashes", "crash_retries"), [(0, 1), (0, 2), (1, 2), (4, 5)])
def test_a_lost_worker_within_the_budget_runs_the_job_again_at_once(crashes: int, crash_retries: int) -> None:
    write = expired("j", 3, crashes, crash_retries, False, NOW)
    assert (write.lease, write.status, write.run_at, write.reason) == (
        Lease("j", 3),
        Status.QUEUED,
        NOW,
        "lease_expired",
    )
    # The task's retries stay untouched: max_attempts grows by one, the crash is counted.
    assert (write.hand_back, write.crash) == (True, True)
    assert write.error is None
    params = write_params(write, 1, NOW)
    assert (params["hand_back"], params["crash"]) == (1, 1)


@pytest.mark.parametrize(
    ("crashes", "crash_retries", "times"),
    [(0, 0, "once"), (1, 1, "twice"), (2, 2, "3 times"), (9, 2, "10 times")],
)
def test_a_job_that_keeps_losing_its_workers_fails_with_worker_lost(
    crashes: int, crash_retries: int, times: str
) -> None:
    write = expired("j", 7, crashes, crash_retries, False, NOW)
    assert (write.status, write.reason, write.hand_back, write.crash) == (
        Status.FAILED,
        "lease_expired",
        False,
        True,
    )
    assert write.error is not None
    assert write.error["type"] == "WorkerLost"
    message = write.error["message"]
    assert f"lost its worker {times}, more than crash_retries={crash_retries} allows" in message
    assert "may be what kills its workers" in message
    assert "UNDERWAY_CRASH_RETRIES" in message
    assert "@app.task(crash_retries=N)" in message


@pytest.mark.parametrize("crashes", [0, 2, 5])
def test_a_job_asked_to_stop_is_cancelled_whatever_its_budget(crashes: int) -> None:
    write = expired("j", 1, crashes, 2, True, NOW)
    assert (write.status, write.reason, write.hand_back, write.error) == (
        Status.CANCELLED,
        "lease_expired",
        False,
        None,
    )
