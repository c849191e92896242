"""The chaos suite (bench/chaos.py) at a small size: workers SIGKILLed, the API server SIGKILLed
under open streams, a private PostgreSQL cluster restarted and its sessions terminated, a full
disk. The scenarios are bench/chaos.py's own functions; here they run small and every figure
that must be zero is asserted to be."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from needs import unavailable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import chaos_scenarios as chaos  # noqa: E402
from bench.chaos_support import Unavailable  # noqa: E402

pytestmark = pytest.mark.slow

#: Figures of the store that must be zero after every scenario.
STORE_ZEROS = ("lost", "finished_twice", "events_missing", "events_duplicated")
#: Figures of the stream clients that must be zero.
CLIENT_ZEROS = (
    "client_events_lost",
    "client_events_duplicated",
    "clients_out_of_order",
    "clients_data_mismatch",
    "clients_not_ended",
    "clients_with_faults",
)


def assert_zeros(figures: dict[str, Any], keys: tuple[str, ...]) -> None:
    found = {key: figures[key] for key in keys if figures[key]}
    assert not found, f"{found}; all figures: {figures}"


def run_or_skip(what: str, scenario: Any) -> dict[str, Any]:
    try:
        return dict(asyncio.run(scenario))
    except Unavailable as exc:
        unavailable(what, str(exc))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_workers_killed_at_random_lose_nothing(db_url: str, tmp_path: Path) -> None:
    figures = asyncio.run(
        chaos.workers_killed(db_url, tmp_path, jobs=200, workers=2, job_seconds=0.2, timeout=90, seed=12)
    )
    assert figures["kills"] >= 2, figures
    assert figures["jobs"] == 200
    assert_zeros(figures, (*STORE_ZEROS, "worker_exits"))
    # WorkerLost only for a job whose worker was killed more often than its crash budget allows
    # (RELIABILITY.md: a whole claim of jobs can be that unlucky together).
    assert figures["worker_lost"] == 0 or figures["most_crashes"] == 3, figures


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_streams_resume_across_a_killed_server(db_url: str, tmp_path: Path) -> None:
    figures = asyncio.run(
        chaos.server_killed(
            db_url, tmp_path, streams=50, subscribers=10, jobs=5, server_kills=1, processes=2, settle=1.0
        )
    )
    assert figures["clients"] == 60
    assert len(figures["resume_max_s"]) == 1
    assert figures["client_drops"] >= 60, figures  # every stream was dropped by the kill and resumed
    assert_zeros(figures, (*CLIENT_ZEROS, *STORE_ZEROS, "worker_lost"))
    assert figures["statuses"] == {"succeeded": 5}


@pytest.mark.timeout(120)
def test_a_private_postgres_restarted_and_its_sessions_terminated_loses_nothing(tmp_path: Path) -> None:
    figures = run_or_skip(
        "initdb and pg_ctl",
        chaos.postgres_restarted(tmp_path, jobs=300, workers=2, tickers_count=2, streams=6, subscribers=2),
    )
    assert figures["sessions_terminated"] > 0
    assert len(figures["recovery_s"]) == 2
    assert figures["process_exits"] == 0, figures
    assert_zeros(figures, (*STORE_ZEROS, *CLIENT_ZEROS, "worker_lost"))


@pytest.mark.timeout(120)
def test_a_full_disk_refuses_submissions_with_503_and_recovers(tmp_path: Path) -> None:
    figures = run_or_skip("mounting a tmpfs (root)", chaos.disk_full(tmp_path, jobs=60, refused=10, after=10))
    assert figures["full_codes"] == {503: 10}, figures
    assert figures["after_codes"] == {201: 10}, figures
    assert figures["jobs"] == 70  # the 10 refused were not stored
    assert figures["statuses"] == {"succeeded": 70}
    assert figures["health_when_full"] == 503, figures["health_when_full_body"]
    assert "disk full" in figures["health_when_full_body"]["store"]
    assert_zeros(figures, (*STORE_ZEROS, "worker_lost"))
