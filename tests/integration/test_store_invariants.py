"""A state machine over a real SQLite store, checked against a model of the job rules.

Two workers, A and B, each with their own store instance on the same file (as two processes
would have), claim, report, finish, stall and lose jobs, while a client cancels, answers and
retries them. After every step: the store agrees with the model, no job/attempt is held by two
workers, a stale lease never writes, every run ends with exactly one terminal status event,
and every job's events are numbered 1..n.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from postgres_support import fresh_postgres_url

from underway.events import EventType, log_event
from underway.exceptions import InvalidTransition
from underway.jobs import ACTIVE, CRASH_RETRIES, TRANSITIONS, Status, new_job_id
from underway.store import JobFilter, Lease, NewJob, Store, SweepResult, WorkerInfo, WorkerWrite, open_store

T = TypeVar("T")
WORKERS = ("A", "B")
QUEUES = ("a", "b")
LEASE = 60.0


@dataclass
class Model:
    """What the rules say the job must look like."""

    queue: str
    priority: int
    max_attempts: int
    status: Status = Status.QUEUED
    attempt: int = 0
    holder: str | None = None
    cancel_requested: bool = False
    prompt_key: str | None = None
    terminal_events: int = 0
    crashes: int = 0

    def end(self, status: Status) -> None:
        self.status = status
        self.holder = None
        self.prompt_key = None
        if status.terminal:
            self.terminal_events += 1
        if status is Status.QUEUED:
            self.cancel_requested = False


def worker_info(name: str) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(
        id=name, host="test", pid=1, queues=QUEUES, concurrency=4, started_at=now, last_seen=now
    )


class StoreMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    #: The store the machine runs on (a subclass runs it on PostgreSQL).
    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="underway-machine-")
        self.runner = asyncio.Runner()
        self.database = fresh_postgres_url() if self.backend == "postgres" else None
        url = next(self.database) if self.database else f"sqlite:///{self.folder}/underway.db"
        self.stores: dict[str, Store] = {name: open_store(url) for name in WORKERS}
        for store in self.stores.values():
            self.run(store.open())
        self.client = self.stores["A"]
        self.model: dict[str, Model] = {}
        #: Every (job, attempt) ever claimed, and by whom: no pair is ever handed out twice.
        self.granted: dict[tuple[str, int], str] = {}
        self.prompts = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            for store in self.stores.values():
                self.run(store.close())
            self.runner.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.database is not None:
                self.database.close()  # drops the schema

    # -- helpers ---------------------------------------------------------------------------------

    def holder_store(self, job_id: str) -> Store:
        holder = self.model[job_id].holder
        return self.stores[holder or "A"]

    def last_seq(self, job_id: str) -> int:
        job = self.run(self.client.get(job_id))
        assert job is not None
        return job.last_seq

    def leases_of(self, worker: str) -> list[Lease]:
        """The last lease the worker was granted on each job (what a worker believes it holds)."""
        last: dict[str, int] = {}
        for (job_id, attempt), name in self.granted.items():
            if name == worker:
                last[job_id] = max(attempt, last.get(job_id, 0))
        return [Lease(job_id, attempt) for job_id, attempt in last.items()]

    def check_claim(self, worker: str, due: list[str], claimed: list[str]) -> None:
        assert len(claimed) == len(set(claimed))
        assert set(claimed) <= set(due), "claimed a job that was not due"
        for job_id in claimed:
            model = self.model[job_id]
            model.status, model.attempt, model.holder = Status.RUNNING, model.attempt + 1, worker
            assert (job_id, model.attempt) not in self.granted, "a job/attempt was handed out twice"
            self.granted[(job_id, model.attempt)] = worker

    def check_priority(self, due: list[str], claimed: list[str]) -> None:
        """Priority first: nothing left behind outranks what was claimed."""
        if claimed:
            lowest = min(self.model[j].priority for j in claimed)
            assert all(self.model[j].priority <= lowest for j in due if j not in claimed)

    def due(self, queues: tuple[str, ...]) -> list[str]:
        return [j for j, m in self.model.items() if m.status is Status.QUEUED and m.queue in queues]

    # -- client rules ----------------------------------------------------------------------------

    @rule(
        target=jobs,
        queue=st.sampled_from(QUEUES),
        priority=st.integers(min_value=0, max_value=2),
        max_attempts=st.integers(min_value=1, max_value=3),
    )
    def enqueue(self, queue: str, priority: int, max_attempts: int) -> str:
        new = NewJob(
            id=new_job_id(),
            queue=queue,
            task="t",
            args={},
            priority=priority,
            run_at=time.time(),
            max_attempts=max_attempts,
        )
        (job,) = self.run(self.client.enqueue([new]))
        assert job.status is Status.QUEUED
        self.model[job.id] = Model(queue=queue, priority=priority, max_attempts=max_attempts)
        return job.id

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        model = self.model[job_id]
        changed = self.run(self.client.cancel(JobFilter(ids=(job_id,))))
        if model.status is Status.QUEUED:
            assert [j.status for j in changed] == [Status.CANCELLED]
            model.end(Status.CANCELLED)
        elif model.status in ACTIVE and not model.cancel_requested:
            assert [(j.status, j.cancel_requested) for j in changed] == [(model.status, True)]
            model.cancel_requested = True
        else:
            assert changed == []

    @rule(job_id=jobs, right_key=st.booleans())
    def answer(self, job_id: str, right_key: bool) -> None:
        model = self.model[job_id]
        key = model.prompt_key if right_key and model.prompt_key else "wrong"
        if model.status is Status.WAITING and key == model.prompt_key:
            job = self.run(self.client.answer(job_id, key, 42))
            assert job.status is Status.RUNNING
            assert job.answers[key] == 42
            model.status, model.prompt_key = Status.RUNNING, None
        else:
            before = self.last_seq(job_id)
            with pytest.raises(InvalidTransition):
                self.run(self.client.answer(job_id, key, 42))
            assert self.last_seq(job_id) == before

    @rule(job_id=jobs)
    def retry(self, job_id: str) -> None:
        model = self.model[job_id]
        if model.status.terminal:
            job = self.run(self.client.retry(job_id, max_attempts=model.attempt + 1))
            assert (job.status, job.attempt) == (Status.QUEUED, model.attempt)
            model.max_attempts = model.attempt + 1
            model.crashes = 0
            model.end(Status.QUEUED)
        else:
            with pytest.raises(InvalidTransition):
                self.run(self.client.retry(job_id, max_attempts=9))

    # -- worker rules ----------------------------------------------------------------------------

    @rule(
        worker=st.sampled_from(WORKERS),
        queues=st.sampled_from([("a",), ("b",), ("a", "b")]),
        limit=st.integers(min_value=1, max_value=3),
    )
    def claim(self, worker: str, queues: tuple[str, ...], limit: int) -> None:
        due = self.due(queues)
        claimed = self.run(self.stores[worker].claim(worker, list(queues), limit, LEASE))
        assert len(claimed) == min(limit, len(due))
        assert all(j.worker_id == worker and j.status is Status.RUNNING for j in claimed)
        self.check_claim(worker, due, [j.id for j in claimed])
        self.check_priority(due, [j.id for j in claimed])

    @rule(limit_a=st.integers(min_value=1, max_value=3), limit_b=st.integers(min_value=1, max_value=3))
    def claim_race(self, limit_a: int, limit_b: int) -> None:
        """Both workers claim at the same moment from their own store instances."""
        due = self.due(QUEUES)

        async def race() -> tuple[list[Any], list[Any]]:
            a, b = await asyncio.gather(
                self.stores["A"].claim("A", list(QUEUES), limit_a, LEASE),
                self.stores["B"].claim("B", list(QUEUES), limit_b, LEASE),
            )
            return a, b

        a, b = self.run(race())
        ids_a, ids_b = [j.id for j in a], [j.id for j in b]
        assert not set(ids_a) & set(ids_b), "two workers claimed the same job"
        assert len(ids_a) + len(ids_b) == min(limit_a + limit_b, len(due))
        self.check_claim("A", due, ids_a)
        self.check_claim("B", due, ids_b)
        self.check_priority(due, ids_a + ids_b)

    @rule(job_id=jobs, offset=st.sampled_from([0, 0, -1, 1]))
    def report(self, job_id: str, offset: int) -> None:
        """A worker logs and reports progress, with its current lease or a stale one."""
        model = self.model[job_id]
        lease = Lease(job_id, model.attempt + offset)
        write = WorkerWrite(lease=lease, events=(log_event("info", "step"),), progress={"current": 1})
        before = self.last_seq(job_id)
        (accepted,) = self.run(self.holder_store(job_id).record([write]))
        expected = offset == 0 and model.status in ACTIVE
        assert accepted is expected, "a stale lease wrote" if accepted else "a live lease was refused"
        assert self.last_seq(job_id) == before + (2 if accepted else 0)

    @rule(
        job_id=jobs,
        move=st.sampled_from(list(Status)),
        offset=st.sampled_from([0, 0, 0, -1, 1]),
        hand_back=st.booleans(),
    )
    def finish(self, job_id: str, move: Status, offset: int, hand_back: bool) -> None:
        """A worker moves its job on: done, failed, retry later, ask a question, cancelled…"""
        model = self.model[job_id]
        self.prompts += 1
        key = f"k{self.prompts}"
        hand_back = hand_back and move is Status.QUEUED
        write = WorkerWrite(
            lease=Lease(job_id, model.attempt + offset),
            status=move,
            result="ok",
            error=None if move is Status.SUCCEEDED else {"type": "E", "message": "m"},
            run_at=time.time() if move is Status.QUEUED else None,
            prompt={"key": key, "message": "?"} if move is Status.WAITING else None,
            hand_back=hand_back,
        )
        before = self.last_seq(job_id)
        (accepted,) = self.run(self.holder_store(job_id).record([write]))
        expected = offset == 0 and model.status in ACTIVE and move in TRANSITIONS[model.status]
        assert accepted is expected
        if not accepted:
            assert self.last_seq(job_id) == before
            return
        if move is Status.WAITING:
            model.status, model.prompt_key = Status.WAITING, key
        elif move is Status.RUNNING:
            model.status, model.prompt_key = Status.RUNNING, None
        elif move is Status.QUEUED and model.cancel_requested:
            model.end(Status.CANCELLED)  # asked to stop: not run again
        else:
            model.end(move)
            if hand_back:
                model.max_attempts += 1

    @rule(worker=st.sampled_from(WORKERS))
    def heartbeat(self, worker: str) -> None:
        """A worker heartbeats every lease it was ever granted: only the live ones are kept."""
        leases = self.leases_of(worker)
        beat = self.run(self.stores[worker].heartbeat(worker_info(worker), leases, LEASE))
        live = {
            lease.job_id
            for lease in leases
            if self.model[lease.job_id].status in ACTIVE and self.model[lease.job_id].attempt == lease.attempt
        }
        stale = {lease.job_id for lease in leases} - live
        assert beat.lost == stale
        assert beat.cancelling == {j for j in live if self.model[j].cancel_requested}

    @precondition(lambda self: any(m.status in ACTIVE for m in self.model.values()))
    @rule(data=st.data())
    def stall(self, data: st.DataObject) -> None:
        """A worker stops heartbeating: its lease runs out and the sweeper takes the job back."""
        active = sorted(j for j, m in self.model.items() if m.status in ACTIVE)
        job_id = data.draw(st.sampled_from(active))
        model = self.model[job_id]
        assert model.holder is not None
        lease = Lease(job_id, model.attempt)
        beat = self.run(self.stores[model.holder].heartbeat(worker_info(model.holder), [lease], -1.0))
        assert beat.lost == frozenset()
        swept = self.run(self.client.sweep(cancel_grace=3600.0))
        # A lost worker costs the job's crash budget (2 by default), not an attempt.
        model.crashes += 1
        if model.cancel_requested:
            assert swept == SweepResult(cancelled=1)
            model.end(Status.CANCELLED)
        elif model.crashes > CRASH_RETRIES:
            assert swept == SweepResult(failed=1)
            model.end(Status.FAILED)
        else:
            assert swept == SweepResult(requeued=1)
            model.max_attempts += 1
            model.end(Status.QUEUED)

    @rule()
    def enforce_cancel_grace(self) -> None:
        """The cancel grace of every job asked to stop has run out."""
        overdue = [j for j, m in self.model.items() if m.status in ACTIVE and m.cancel_requested]
        swept = self.run(self.client.sweep(cancel_grace=-1.0))
        assert swept == SweepResult(cancelled=len(overdue))
        for job_id in overdue:
            self.model[job_id].end(Status.CANCELLED)

    # -- invariants --------------------------------------------------------------------------------

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        jobs = {j.id: j for j in self.run(self.client.list_jobs(JobFilter(), limit=10_000))}
        assert set(jobs) == set(self.model)
        for job_id, model in self.model.items():
            job = jobs[job_id]
            assert job.status is model.status
            assert job.attempt == model.attempt
            assert job.cancel_requested == model.cancel_requested
            assert job.max_attempts == model.max_attempts
            assert job.crashes == model.crashes
            assert job.worker_id == (model.holder if model.status in ACTIVE else None)
            assert (job.prompt or {}).get("key") == model.prompt_key
            assert (job.lease_until is not None) == (model.status in ACTIVE)
            assert (job.finished_at is not None) == model.status.terminal

    @invariant()
    def events_are_contiguous_and_runs_end_once(self) -> None:
        for job_id, model in self.model.items():
            events = self.run(self.client.events(job_id, limit=1_000_000))
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert self.last_seq(job_id) == len(events)
            statuses = [Status(e.data["status"]) for e in events if e.type is EventType.STATUS]
            assert statuses[0] is Status.QUEUED
            terminal = [s for s in statuses if s.terminal]
            assert len(terminal) == model.terminal_events
            # Within one run (up to a terminal event) there is exactly one terminal event: after
            # one, the next status event can only be the queued of a manual retry.
            for earlier, later in itertools.pairwise(statuses):
                if earlier.terminal:
                    assert later is Status.QUEUED
            if model.status.terminal:
                assert statuses[-1] is model.status
            # A running status event always names the attempt the model granted.
            attempts = [e.data["attempt"] for e in events if e.type is EventType.STATUS]
            assert attempts == sorted(attempts)
            assert attempts[-1] == model.attempt


StoreMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_invariants = StoreMachine.TestCase


class PostgresStoreMachine(StoreMachine):
    backend = "postgres"


# Fewer, shorter runs: every step is a few round trips to the server, not a file read.
PostgresStoreMachine.TestCase.settings = settings(
    max_examples=10,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_invariants_on_postgres = PostgresStoreMachine.TestCase
