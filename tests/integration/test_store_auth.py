"""The store's API keys, signing secrets and per-owner scoping, on every backend."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from underway.exceptions import IdempotencyConflict, StoreError
from underway.jobs import Job, Status, new_job_id
from underway.store import ApiKey, JobFilter, Lease, NewBatch, NewJob, Store, WorkerWrite, sql

if TYPE_CHECKING:
    from tests.conftest import StoreFactory

pytestmark = pytest.mark.anyio
LEASE = 30.0


def key(key_id: str, *, owner: str = "alice", role: str = "user", created_at: float = 1000.0) -> ApiKey:
    return ApiKey(id=key_id, owner=owner, role=role, digest=f"digest-of-{key_id}", created_at=created_at)


def new(n: int = 0, **fields: Any) -> NewJob:
    return NewJob(
        **{
            "id": new_job_id(),
            "queue": "default",
            "task": "t",
            "args": {"n": n},
            "run_at": time.time(),
            **fields,
        }
    )


async def finish(store: Store, job: Job, status: Status = Status.SUCCEEDED) -> None:
    write = WorkerWrite(lease=Lease(job.id, job.attempt), status=status)
    assert await store.record([write]) == [True]


async def ids_of(store: Store, job_filter: JobFilter) -> set[str]:
    return {job.id for job in await store.list_jobs(job_filter, limit=1000)}


# -- API keys --------------------------------------------------------------------------------------


async def test_an_api_key_is_stored_and_read_back(store: Store) -> None:
    stored = key("k1", role="admin")
    await store.add_api_key(stored)
    assert await store.api_key("k1") == stored
    assert await store.api_key("nope") is None
    assert not stored.revoked


async def test_a_key_id_is_used_once(store: Store) -> None:
    await store.add_api_key(key("k1"))
    with pytest.raises(StoreError):
        await store.add_api_key(key("k1", owner="bob"))
    assert (await store.api_key("k1")) == key("k1")


async def test_a_key_has_a_known_role(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.add_api_key(key("k1", role="root"))
    assert await store.api_keys() == []


async def test_keys_are_listed_oldest_first_with_the_revoked_ones(store: Store) -> None:
    await store.add_api_key(key("late", created_at=3000.0))
    await store.add_api_key(key("early", created_at=1000.0))
    await store.add_api_key(key("middle", created_at=2000.0))
    await store.revoke_api_key("middle", 2500.0)
    listed = await store.api_keys()
    assert [k.id for k in listed] == ["early", "middle", "late"]
    assert [k.revoked for k in listed] == [False, True, False]


async def test_a_revoked_key_keeps_the_time_it_was_first_revoked(store: Store) -> None:
    await store.add_api_key(key("k1"))
    revoked = await store.revoke_api_key("k1", 2000.0)
    assert revoked is not None
    assert (revoked.revoked_at, revoked.owner) == (2000.0, "alice")
    again = await store.revoke_api_key("k1", 3000.0)
    assert again is not None
    assert again.revoked_at == 2000.0
    assert await store.api_key("k1") == again
    assert await store.revoke_api_key("nope", 2000.0) is None


async def test_revoked_api_keys_names_the_revoked_and_the_unknown(store: Store) -> None:
    for key_id in ("live", "gone"):
        await store.add_api_key(key(key_id))
    await store.revoke_api_key("gone", 2000.0)
    assert await store.revoked_api_keys(["live", "gone", "never"]) == {"gone", "never"}
    assert await store.revoked_api_keys(["live"]) == frozenset()
    assert await store.revoked_api_keys([]) == frozenset()


async def test_has_api_keys_counts_only_keys_not_revoked(store: Store) -> None:
    assert not await store.has_api_keys()
    await store.add_api_key(key("k1"))
    assert await store.has_api_keys()
    await store.revoke_api_key("k1", 2000.0)
    assert not await store.has_api_keys()


# -- secrets ---------------------------------------------------------------------------------------


async def test_a_secret_is_made_once_then_kept(store: Store, stores: StoreFactory) -> None:
    made: list[str] = []

    def make() -> str:
        made.append(f"value-{len(made)}")
        return made[-1]

    assert await store.secret("signing", make) == "value-0"
    assert await store.secret("signing", make) == "value-0"
    assert await (await stores.open()).secret("signing", make) == "value-0"
    assert made == ["value-0"]
    assert await store.secret("other", make) == "value-1"


async def test_stores_racing_to_make_a_secret_all_get_the_one_stored(stores: StoreFactory) -> None:
    racers = [await stores.open() for _ in range(3)]
    # Each racer makes its value only once every racer has found none: all of them then store.
    all_looked = threading.Barrier(len(racers))

    def race(store: Store, n: int) -> str:
        def make() -> str:
            all_looked.wait(timeout=10)
            return f"value-{n}"

        return asyncio.run(store.secret("signing", make))  # each on its own loop, as processes would

    got: list[str] = []

    async def run(store: Store, n: int) -> None:
        got.append(await anyio.to_thread.run_sync(race, store, n))

    async with anyio.create_task_group() as tg:
        for n, store in enumerate(racers):
            tg.start_soon(run, store, n)
    assert len(got) == len(racers)
    assert len(set(got)) == 1
    assert await racers[0].secret("signing", lambda: "late") == got[0]


async def test_set_secret_replaces_the_value(store: Store) -> None:
    await store.set_secret("signing", "first")
    assert await store.secret("signing", lambda: "made") == "first"
    await store.set_secret("signing", "second")
    assert await store.secret("signing", lambda: "made") == "second"


# -- scoping by owner ------------------------------------------------------------------------------


async def test_batches_are_listed_by_owner(store: Store) -> None:
    made = []
    for owner in ("alice", "bob", "alice", None, "alice"):
        batch = NewBatch(id=new_job_id(), task="t", queue="default", owner=owner)
        made.append(await store.create_batch(batch, [new(1, batch_id=batch.id, owner=owner)]))
    alices = [b.id for b in made if b.owner == "alice"][::-1]
    first = await store.list_batches(limit=2, owner="alice")
    assert [b.id for b in first] == alices[:2]
    rest = await store.list_batches(limit=2, before=first[-1].id, owner="alice")
    assert [b.id for b in rest] == alices[2:]
    assert len(await store.list_batches()) == 5
    assert await store.list_batches(owner="carol") == []


async def test_queues_of_an_owner_count_only_their_jobs(store: Store) -> None:
    before = time.time()
    await store.enqueue([new(1, queue="mail", owner="alice"), new(2, queue="mail", owner="alice")])
    await store.enqueue([new(3, queue="mail", owner="bob"), new(4, queue="img", owner="bob")])
    await store.enqueue([new(5, queue="mail")])
    await store.claim("w", ["mail"], 1, LEASE)  # alice's first job: the oldest
    await store.set_queue("mail", paused=True, concurrency=5)
    await store.set_queue("idle", concurrency=2)
    (mail,) = await store.queues(owner="alice")
    assert (mail.name, mail.paused, mail.concurrency) == ("mail", True, 5)
    assert mail.counts == {"running": 1, "queued": 1}
    assert mail.oldest_queued_at is not None
    assert mail.oldest_queued_at >= before
    bobs = {q.name: q.counts for q in await store.queues(owner="bob")}
    assert bobs == {"mail": {"queued": 1}, "img": {"queued": 1}}
    assert await store.queues(owner="carol") == []
    everyone = {q.name: q.counts for q in await store.queues()}
    assert everyone == {"mail": {"running": 1, "queued": 3}, "img": {"queued": 1}, "idle": {}}


async def test_finished_since_of_an_owner(store: Store) -> None:
    since = time.time()
    await store.enqueue([new(1, owner="alice"), new(2, owner="bob"), new(3, owner="bob")])
    for job in await store.claim("w", [], 10, LEASE):
        await finish(store, job)
    (alices,) = await store.finished_since(since, owner="alice")
    assert (alices.queue, alices.status, alices.count) == ("default", Status.SUCCEEDED, 1)
    assert [f.count for f in await store.finished_since(since, owner="bob")] == [2]
    assert [f.count for f in await store.finished_since(since)] == [3]
    assert await store.finished_since(since, owner="carol") == []


async def test_jobs_are_listed_cancelled_and_retried_by_owner(store: Store) -> None:
    alices = await store.enqueue([new(n, owner="alice") for n in range(3)])
    bobs = await store.enqueue([new(n, owner="bob") for n in range(2)])
    await store.enqueue([new(9)])
    assert await ids_of(store, JobFilter(owner="alice")) == {j.id for j in alices}
    page = await store.list_jobs(JobFilter(owner="alice"), limit=2)
    assert [j.id for j in page] == sorted((j.id for j in alices), reverse=True)[:2]
    cancelled = await store.cancel(JobFilter(owner="bob"))
    assert {j.id for j in cancelled} == {j.id for j in bobs}
    assert await ids_of(store, JobFilter(statuses=(Status.CANCELLED,))) == {j.id for j in bobs}
    retried = await store.retry_jobs(JobFilter(owner="bob"), 1)
    assert {j.id for j in retried} == {j.id for j in bobs}
    assert await store.retry_jobs(JobFilter(owner="alice"), 1) == []  # none of hers ended
    assert await ids_of(store, JobFilter(owner="carol")) == set()


# -- idempotency keys, per owner -------------------------------------------------------------------


async def test_an_idempotency_key_is_unique_per_owner(store: Store) -> None:
    (alices,) = await store.enqueue([new(1, owner="alice", idempotency_key="order-7")])
    (bobs,) = await store.enqueue([new(2, owner="bob", idempotency_key="order-7")])  # other args: no conflict
    assert bobs.id != alices.id
    (again,) = await store.enqueue([new(1, owner="alice", idempotency_key="order-7")])
    assert again.id == alices.id
    with pytest.raises(IdempotencyConflict, match="order-7"):
        await store.enqueue([new(3, owner="bob", idempotency_key="order-7")])
    assert len(await store.list_jobs(JobFilter())) == 2


async def test_a_key_without_an_owner_is_apart_from_the_owners_keys(store: Store) -> None:
    (anonymous,) = await store.enqueue([new(1, idempotency_key="k")])
    (alices,) = await store.enqueue([new(1, owner="alice", idempotency_key="k")])
    assert alices.id != anonymous.id
    (again,) = await store.enqueue([new(1, idempotency_key="k")])
    assert again.id == anonymous.id
    with pytest.raises(IdempotencyConflict):
        await store.enqueue([new(2, idempotency_key="k")])


async def test_one_key_of_two_owners_in_one_submission(store: Store) -> None:
    alices, bobs = new(1, owner="alice", idempotency_key="k"), new(2, owner="bob", idempotency_key="k")
    first = await store.enqueue([alices, bobs])
    assert len({j.id for j in first}) == 2
    again = await store.enqueue(
        [new(2, owner="bob", idempotency_key="k"), new(1, owner="alice", idempotency_key="k")]
    )
    assert [j.id for j in again] == [first[1].id, first[0].id]


async def test_a_batch_item_of_another_owner_with_the_same_key_is_a_new_job(store: Store) -> None:
    (alices,) = await store.enqueue([new(1, owner="alice", idempotency_key="item-1")])
    batch = NewBatch(id=new_job_id(), task="t", queue="default", owner="bob")
    made = await store.create_batch(batch, [new(1, owner="bob", batch_id=batch.id, idempotency_key="item-1")])
    assert made.total == 1
    (item,) = await store.list_jobs(JobFilter(batch_id=batch.id))
    assert (item.owner, item.idempotency_key) == ("bob", "item-1")
    assert item.id != alices.id


async def test_concurrent_submissions_store_one_job_per_owner(store: Store, stores: StoreFactory) -> None:
    others = [await stores.open() for _ in range(3)]
    got: list[Job] = []

    async def submit(s: Store) -> None:
        jobs = [new(1, owner="alice", idempotency_key="once"), new(1, owner="bob", idempotency_key="once")]
        got.extend(await s.enqueue(jobs))

    async with anyio.create_task_group() as tg:
        for s in [store, *others]:
            tg.start_soon(submit, s)
    assert len(got) == 8
    assert len({j.id for j in got if j.owner == "alice"}) == 1
    assert len({j.id for j in got if j.owner == "bob"}) == 1
    assert len(await store.list_jobs(JobFilter())) == 2


# -- migrating a database of the previous schema ---------------------------------------------------


def _before_auth(dialect: str) -> tuple[sql.Migration, ...]:
    """The migrations before the one that brought API keys."""
    known = sql.migrations(dialect)
    auth = next(n for n, m in enumerate(known) if m.name.endswith("_auth.sql"))
    return known[:auth]


OLD_JOB = (
    "INSERT INTO {jobs} (id, queue, task, args, status, run_at, owner, created_at, updated_at,"
    " last_seq, idempotency_key) VALUES ({p}, 'default', 't', '{{\"n\": 1}}', 'queued', 1.0, {p},"
    " 1.0, 1.0, 1, {p})"
)
OLD_EVENT = (
    "INSERT INTO {events} (job_id, seq, type, at, data)"
    ' VALUES ({p}, 1, \'status\', 1.0, \'{{"status": "queued", "attempt": 0}}\')'
)
#: (id, owner, idempotency key) of the jobs stored before: keys were unique over all owners then.
OLD_JOBS = [("old-anonymous", None, "k"), ("old-alices", "alice", "a")]


def _old_sqlite(url: str) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        conn.execute(
            "CREATE TABLE underway_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        for migration in _before_auth("sqlite"):
            conn.executescript(migration.sql)
            conn.execute(
                "INSERT INTO underway_migrations VALUES (?, ?, 0)", (migration.version, migration.name)
            )
        for job_id, owner, idempotency_key in OLD_JOBS:
            conn.execute(OLD_JOB.format(jobs="jobs", p="?"), (job_id, owner, idempotency_key))
            conn.execute(OLD_EVENT.format(events="events", p="?"), (job_id,))
    finally:
        conn.close()


def _old_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            b"CREATE TABLE underway_migrations"
            b" (version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
        )
        for migration in _before_auth("postgres"):
            conn.execute(migration.sql.encode())
            conn.execute(
                b"INSERT INTO underway_migrations VALUES (%s, %s, 0)", (migration.version, migration.name)
            )
        for job_id, owner, idempotency_key in OLD_JOBS:
            conn.execute(
                OLD_JOB.format(jobs="underway_jobs", p="%s").encode(), (job_id, owner, idempotency_key)
            )
            conn.execute(OLD_EVENT.format(events="underway_events", p="%s").encode(), (job_id,))


async def test_a_database_of_the_previous_schema_keeps_its_jobs(stores: StoreFactory) -> None:
    (_old_sqlite if stores.url.startswith("sqlite") else _old_postgres)(stores.url)
    store = await stores.open()
    for job_id, owner, _ in OLD_JOBS:
        job = await store.get(job_id)
        assert job is not None
        assert (job.owner, job.status, job.args) == (owner, Status.QUEUED, {"n": 1})
        assert [e.seq for e in await store.events(job_id)] == [1]
    (anonymous,) = await store.enqueue([new(1, idempotency_key="k")])
    (alices,) = await store.enqueue([new(1, owner="alice", idempotency_key="a")])
    assert (anonymous.id, alices.id) == ("old-anonymous", "old-alices")
    (alices_k,) = await store.enqueue([new(1, owner="alice", idempotency_key="k")])  # now hers alone
    assert alices_k.id not in {"old-anonymous", "old-alices"}
    await store.add_api_key(key("k1"))
    assert await store.has_api_keys()
    assert await store.secret("signing", lambda: "made") == "made"
