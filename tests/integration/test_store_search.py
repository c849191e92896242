"""Search (``JobFilter.q``) on every backend: a job is found by the start of its id or by text of
its arguments' JSON, ignoring the case of ASCII letters; LIKE wildcards, quotes, backslashes and
other scripts are plain text. ``JobFilter.matches`` (what live streams use) agrees with each store."""

from __future__ import annotations

import time
from typing import Any

import pytest

from underway.jobs import Job, Status, new_job_id
from underway.store import JobFilter, Lease, NewJob, Store, WorkerWrite

pytestmark = pytest.mark.anyio
LEASE = 30.0

ARGS: dict[str, dict[str, Any]] = {
    "report": {"name": "Quarterly Report", "year": 2024},
    "percent": {"text": "100% done"},
    "hundred": {"text": "100 done"},
    "underscore": {"file": "a_b.txt"},
    "no-underscore": {"file": "axb.txt"},
    "quotes": {"text": 'say "hi"', "note": "it's"},
    "backslash": {"path": "C:\\temp\\x"},
    "newline": {"text": "one\ntwo"},
    "accents": {"name": "Zoë Ærø", "city": "東京"},
}


def new(name: str, **fields: Any) -> NewJob:
    return NewJob(
        id=new_job_id(),
        queue="default",
        task="t",
        args=ARGS[name],
        run_at=time.time(),
        labels={"name": name},
        **fields,
    )


async def corpus(store: Store, **fields: Any) -> dict[str, Job]:
    """One job per entry of ``ARGS``: ``{name: job}``."""
    jobs = await store.enqueue([new(name, **fields) for name in ARGS])
    return {job.labels["name"]: job for job in jobs}


async def found(store: Store, job_filter: JobFilter) -> set[str]:
    """The names of the jobs the store finds, checked against ``JobFilter.matches``."""
    listed = await store.list_jobs(job_filter, limit=1000)
    everything = await store.list_jobs(JobFilter(), limit=1000)
    assert [job.id for job in listed] == [job.id for job in everything if job_filter.matches(job)]
    return {job.labels["name"] for job in listed}


async def searched(store: Store, q: str) -> set[str]:
    return await found(store, JobFilter(q=q))


async def end(store: Store, job: Job, status: Status) -> Job:
    """Claim ``job`` (the only one due) and end it with ``status``."""
    (claimed,) = await store.claim("w", [], 1, LEASE)
    assert claimed.id == job.id
    write = WorkerWrite(lease=Lease(job.id, claimed.attempt), status=status, error={"message": "no"})
    assert await store.record([write]) == [True]
    ended = await store.get(job.id)
    assert ended is not None
    return ended


async def test_a_job_is_found_by_the_start_of_its_id_in_any_case(store: Store) -> None:
    jobs = await corpus(store)
    report = jobs["report"]
    assert await searched(store, report.id) == {"report"}
    assert await searched(store, report.id.upper()) == {"report"}
    assert "report" in await searched(store, report.id[:-1])
    assert await searched(store, report.id[3:]) == set()  # the middle of an id is not its start


async def test_a_job_is_found_by_text_of_its_arguments_in_any_case(store: Store) -> None:
    await corpus(store)
    assert await searched(store, "quarterly") == {"report"}
    assert await searched(store, "QUARTERLY REP") == {"report"}
    assert await searched(store, "2024") == {"report"}
    assert await searched(store, '"year":2024') == {"report"}  # the JSON text, keys too
    assert await searched(store, "done") == {"percent", "hundred"}
    assert await searched(store, "nowhere") == set()
    assert await searched(store, "") == set(ARGS)  # no search: every job


async def test_like_wildcards_are_plain_characters(store: Store) -> None:
    await corpus(store)
    assert await searched(store, "100%") == {"percent"}
    assert await searched(store, "%") == {"percent"}
    assert await searched(store, "a_b") == {"underscore"}
    assert await searched(store, "_") == {"underscore"}
    assert await searched(store, "a%b") == set()


async def test_quotes_backslashes_and_newlines_are_found_as_written_or_as_json(store: Store) -> None:
    await corpus(store)
    assert await searched(store, 'say "hi"') == {"quotes"}  # as typed…
    assert await searched(store, 'say \\"hi\\"') == {"quotes"}  # …and as JSON writes it
    assert await searched(store, "it's") == {"quotes"}
    assert await searched(store, "C:\\temp") == {"backslash"}
    assert await searched(store, "\\") == {"quotes", "backslash", "newline"}  # JSON escapes
    assert await searched(store, "one\ntwo") == {"newline"}
    assert await searched(store, "\x00") == set()  # nothing holds a NUL, and no store fails on one


async def test_other_scripts_are_found_as_written(store: Store) -> None:
    await corpus(store)
    assert await searched(store, "東京") == {"accents"}
    assert await searched(store, "zoë") == {"accents"}  # ASCII letters ignore case…
    assert await searched(store, "ærø") == set()  # …other letters do not, in every store
    assert await searched(store, "Ærø") == {"accents"}


async def test_a_search_narrows_the_other_filters(store: Store) -> None:
    alices = await corpus(store, owner="alice")
    await corpus(store, owner="bob")
    assert await found(store, JobFilter(q="done")) == {"percent", "hundred"}
    assert len(await store.list_jobs(JobFilter(q="done"), limit=10)) == 4
    both = await store.list_jobs(JobFilter(q="done", owner="alice"), limit=10)
    assert {job.id for job in both} == {alices["percent"].id, alices["hundred"].id}
    queued = JobFilter(q="done", owner="alice", statuses=(Status.QUEUED,))
    assert len(await store.list_jobs(queued, limit=10)) == 2
    assert await store.list_jobs(JobFilter(q="done", statuses=(Status.FAILED,)), limit=10) == []
    ids = JobFilter(q="done", ids=(alices["percent"].id, alices["report"].id))
    assert [job.id for job in await store.list_jobs(ids, limit=10)] == [alices["percent"].id]


async def test_cancel_and_retry_change_only_the_jobs_found(store: Store) -> None:
    jobs = await corpus(store)
    cancelled = await store.cancel(JobFilter(q="DONE"))
    assert {job.id for job in cancelled} == {jobs["percent"].id, jobs["hundred"].id}
    assert all(job.status is Status.CANCELLED for job in cancelled)
    retried = await store.retry_jobs(JobFilter(q="100%", statuses=(Status.CANCELLED,)), 1)
    assert [job.id for job in retried] == [jobs["percent"].id]
    hundred = await store.get(jobs["hundred"].id)
    assert hundred is not None
    assert hundred.status is Status.CANCELLED


async def test_a_failed_job_is_found_by_its_arguments_not_its_error(store: Store) -> None:
    job = (await store.enqueue([new("report")]))[0]
    await end(store, job, Status.FAILED)
    assert await found(store, JobFilter(q="quarterly", statuses=(Status.FAILED,))) == {"report"}
    assert await found(store, JobFilter(q="no", statuses=(Status.FAILED,))) == set()


async def test_a_nul_in_any_filter_value_matches_nothing_and_fails_no_store(store: Store) -> None:
    jobs = await corpus(store)
    report = jobs["report"].id
    nul = "\x00"
    for job_filter in (
        JobFilter(queue=nul),
        JobFilter(task=f"t{nul}"),
        JobFilter(owner=nul),
        JobFilter(batch_id=nul),
        JobFilter(label=(f"name{nul}", "report")),
        JobFilter(label=("name", f"report{nul}")),
        JobFilter(ids=(nul,)),
        JobFilter(q=nul),
    ):
        assert await found(store, job_filter) == set()
        assert await store.cancel(job_filter) == []
        assert await store.retry_jobs(job_filter, 1) == []
    assert await found(store, JobFilter(ids=(nul, report))) == {"report"}
