"""API keys, owners, stream tokens and the errors of authentication, through the Python client,
against a real server with ``auth=on`` (uvicorn in a thread, with a worker), with both twins
(see ``test_client.py``).

Keys are made by an App of the test on the same SQLite file, as ``underway keys create`` would;
each test makes its own owners, so the limits per user of one test do not reach another.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from client_tasks import register
from test_client import SOON, BlockingTwin, LiveServer, app_settings, unique, wait_until

import underway
from underway.auth import StreamToken, key_id_of
from underway.client import JobPage
from underway.exceptions import BatchTooLarge, Forbidden, TooManyRequests, Unauthenticated

pytestmark = pytest.mark.timeout(60)

SUBMISSIONS_PER_MINUTE = 10
MAX_BATCH_ITEMS = 5


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as running:
        yield running


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('auth') / 'auth.db'}"


class Keys:
    """Makes and revokes API keys in the server's store, through an App of the test."""

    def __init__(self, portal: BlockingPortal, url: str) -> None:
        self._portal = portal
        self.app = underway.App(url)
        portal.call(self.app.open)

    def make(self, owner: str, role: str = "user") -> str:
        _, key = self._portal.call(self.app.accounts.create_key, owner, role)
        return key

    def revoke(self, key: str) -> None:
        key_id = key_id_of(key)
        assert key_id is not None
        self._portal.call(self.app.accounts.revoke, key_id)

    def close(self) -> None:
        self._portal.call(self.app.close)


@pytest.fixture(scope="module")
def keys(portal: BlockingPortal, url: str) -> Iterator[Keys]:
    made = Keys(portal, url)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def live(url: str, keys: Keys) -> Iterator[LiveServer]:
    settings = app_settings(url).replace(
        auth="on",
        max_submissions_per_minute=SUBMISSIONS_PER_MINUTE,
        max_batch_items=MAX_BATCH_ITEMS,
        key_check_interval=0.1,
    )
    server = LiveServer(register(underway.App(settings=settings)))
    try:
        with underway.Client(server.api, api_key=keys.make("boot", "admin")) as admin:
            wait_until(admin.workers, what="the in-process worker")
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["Client", "AsyncClient"])
def connect(request: pytest.FixtureRequest, live: LiveServer, portal: BlockingPortal) -> Iterator[Any]:
    """``connect(**options)`` → a Client of the live server, or an AsyncClient behind a BlockingTwin."""
    opened: list[Any] = []

    def connector(**options: Any) -> Any:
        options.setdefault("timeout", 10.0)
        if request.param == "Client":
            client: Any = underway.Client(live.api, **options)
        else:
            client = BlockingTwin(portal, underway.AsyncClient(live.api, **options))
        opened.append(client)
        return client

    try:
        yield connector
    finally:
        for client in opened:
            client.close()


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNDERWAY_API_KEY", raising=False)


def ids(page: JobPage) -> set[str]:
    return {job.id for job in page.jobs}


# -- keys ----------------------------------------------------------------------------------------


def test_an_api_key_goes_with_every_request_and_stream(connect: Any, keys: Keys) -> None:
    owner = unique("alice")
    client = connect(api_key=keys.make(owner))
    job = client.submit("add", {"a": 2, "b": 3})
    assert job.owner == owner
    done = client.wait(job.id, timeout=SOON)
    assert done.result == 5
    assert [e.seq for e in client.watch(job.id)] == list(range(1, done.last_seq + 1))
    assert [j.id for j in client.list().jobs] == [job.id]


def test_the_key_is_read_from_underway_api_key(
    connect: Any, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = unique("env")
    monkeypatch.setenv("UNDERWAY_API_KEY", keys.make(owner))
    assert connect().submit("add", {"a": 1}).owner == owner
    with pytest.raises(Unauthenticated):
        connect(api_key="").list()  # "": no key, whatever the environment says


def test_no_key_a_wrong_key_or_a_revoked_key_is_unauthenticated(connect: Any, keys: Keys) -> None:
    with pytest.raises(Unauthenticated, match="authenticate"):
        connect().list()
    key = keys.make(unique("revoked"))
    with pytest.raises(Unauthenticated, match="not valid"):
        connect(api_key=f"uw_{key_id_of(key)}_{'x' * 43}").list()
    client = connect(api_key=key)
    client.list()
    keys.revoke(key)
    with pytest.raises(Unauthenticated, match="revoked") as caught:
        client.list()
    assert caught.value.code == "unauthenticated"


def test_a_watch_ends_with_unauthenticated_when_its_key_is_revoked(
    connect: Any, keys: Keys, tmp_path: Path
) -> None:
    key = keys.make(unique("watcher"))
    client = connect(api_key=key)
    job = client.submit("hold", {"release": str(tmp_path / "go")})
    seen: list[underway.Event] = []

    def follow() -> None:
        for event in client.watch(job.id):
            seen.append(event)
            if len(seen) == 3:
                keys.revoke(key)

    try:
        with pytest.raises(Unauthenticated, match="revoked"):
            follow()
    finally:
        (tmp_path / "go").touch()
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))


# -- owners --------------------------------------------------------------------------------------


def test_a_user_sees_only_its_own_jobs_and_batches(connect: Any, keys: Keys) -> None:
    alice, bob = unique("alice"), unique("bob")
    as_alice, as_bob = connect(api_key=keys.make(alice)), connect(api_key=keys.make(bob))
    mine = as_alice.submit("add", {"a": 1})
    batch = as_alice.submit_batch("item", [{"n": 1}, {"n": 2}])
    theirs = as_bob.submit("add", {"a": 2})
    assert ids(as_alice.list()) == {mine.id} | ids(as_alice.batch_items(batch.id))
    assert [j.id for j in as_bob.list().jobs] == [theirs.id]
    assert [b.id for b in as_alice.list_batches().batches] == [batch.id]
    assert as_bob.list_batches().batches == []
    with pytest.raises(underway.JobNotFound):
        as_bob.get(mine.id)  # another owner's job is not found, not forbidden
    with pytest.raises(Forbidden, match="admin"):
        as_bob.list(owner=alice)
    with pytest.raises(Forbidden, match="admin"):
        as_bob.list_batches(owner=alice)
    with pytest.raises(Forbidden, match="admin"):
        as_bob.submit("add", {"a": 3}, owner=alice)


def test_an_admin_lists_and_submits_for_an_owner(connect: Any, keys: Keys) -> None:
    alice, carol = unique("alice"), unique("carol")
    admin = connect(api_key=keys.make(unique("root"), "admin"))
    as_alice = connect(api_key=keys.make(alice))
    hers = as_alice.submit("add", {"a": 1})
    for_carol = admin.submit("add", {"a": 2}, owner=carol)
    batch = admin.submit_batch("item", [{"n": 3}], owner=carol)
    assert (for_carol.owner, batch.owner) == (carol, carol)
    assert [j.id for j in admin.list(owner=alice).jobs] == [hers.id]
    assert ids(admin.list(owner=carol)) == {for_carol.id} | ids(admin.batch_items(batch.id))
    assert [b.id for b in admin.list_batches(owner=carol).batches] == [batch.id]
    assert admin.list_batches(owner=alice).batches == []


# -- stream tokens -------------------------------------------------------------------------------


def test_a_stream_token_reads_only_what_it_names(connect: Any, keys: Keys) -> None:
    client = connect(api_key=keys.make(unique("alice")))
    job = client.wait(client.submit("add", {"a": 4}).id, timeout=SOON)
    other = client.submit("add", {"a": 5})
    made = client.stream_token(job=job.id)
    assert isinstance(made, StreamToken)
    assert made.token.startswith("uwt.")
    assert made.expires_at == pytest.approx(time.time() + 900, abs=30)
    assert client.stream_token(ttl=60).expires_at == pytest.approx(time.time() + 60, abs=30)

    holder = connect(api_key=made.token)  # a token goes as Authorization: Bearer too
    assert holder.get(job.id) == job
    assert [e.seq for e in holder.watch(job.id)] == list(range(1, job.last_seq + 1))
    assert [j.id for j in holder.list().jobs] == [job.id]
    with pytest.raises(underway.JobNotFound):
        holder.get(other.id)
    with pytest.raises(Forbidden, match="token"):
        holder.submit("add", {"a": 6})
    with pytest.raises(underway.JobNotFound):
        client.stream_token(job="no-such-job")


def test_an_admin_makes_a_stream_token_for_an_owner(connect: Any, keys: Keys) -> None:
    alice = unique("alice")
    job = connect(api_key=keys.make(alice)).submit("add", {"a": 1})
    admin = connect(api_key=keys.make(unique("root"), "admin"))
    made = admin.stream_token(job=job.id, owner=alice, ttl=120)
    assert connect(api_key=made.token).get(job.id).id == job.id
    with pytest.raises(Forbidden, match="admin"):
        connect(api_key=keys.make(unique("bob"))).stream_token(owner=alice)


# -- limits --------------------------------------------------------------------------------------


def test_too_many_submissions_is_too_many_requests(connect: Any, keys: Keys) -> None:
    client = connect(api_key=keys.make(unique("flood")))
    for n in range(SUBMISSIONS_PER_MINUTE):
        client.submit("add", {"a": n}, delay=3600)
    with pytest.raises(TooManyRequests) as caught:
        client.submit("add", {"a": -1}, delay=3600)
    assert caught.value.code == "too_many_requests"
    assert 1 <= caught.value.retry_after <= 60


def test_a_batch_over_max_batch_items_is_batch_too_large(connect: Any, keys: Keys) -> None:
    client = connect(api_key=keys.make(unique("big")))
    with pytest.raises(BatchTooLarge, match="at most 5 items") as caught:
        client.submit_batch("item", [{"n": n} for n in range(MAX_BATCH_ITEMS + 1)])
    assert caught.value.details == {"limit": MAX_BATCH_ITEMS, "items": MAX_BATCH_ITEMS + 1}
    assert client.list_batches().batches == []
