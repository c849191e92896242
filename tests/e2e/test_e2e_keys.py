"""API keys, run as users run them: ``underway keys …`` on a real SQLite file, then an
``underway server`` subprocess on that file that takes or refuses the keys, and the job and
batch commands through it with ``--api-key``. The server turns authentication on by itself
(``auth=auto``): a key exists when it starts.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from typing import Any

import pytest
from e2e_support import APP, Cli, Processes, cli, load_tasks_module, wait_until

from underway import App, Client, ServerError
from underway.exceptions import Unauthenticated
from underway.timefmt import from_iso

pytestmark = pytest.mark.timeout(90)

#: Where a command through ``--server`` would find a store, if it looked: nowhere.
NO_STORE = "sqlite:////nonexistent/never-used.db"

KEY = re.compile(r"^uw_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
LISTED = {"id", "owner", "role", "created_at", "revoked_at"}


def create(underway_cli: Cli, owner: str, role: str = "user") -> dict[str, str]:
    created: dict[str, str] = json.loads(
        underway_cli.ok("keys", "create", "--owner", owner, "--role", role, "--json", app=False)
    )
    return created


def listed(underway_cli: Cli) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads(underway_cli.ok("keys", "list", "--json", app=False))
    return keys


def digests(url: str) -> list[str]:
    """The keyed hashes the store keeps of its keys."""

    async def read() -> list[str]:
        async with App(url) as app:
            return [key.digest for key in await app.accounts.keys()]

    return asyncio.run(read())


# -- keys on the store -------------------------------------------------------------------------


def test_create_prints_the_key_once_and_list_never_does(underway: Cli) -> None:
    created = create(underway, "alice")
    assert set(created) == {"id", "key", "owner", "role"}
    assert (created["owner"], created["role"]) == ("alice", "user")
    match = KEY.match(created["key"])
    assert match is not None
    assert match.group(1) == created["id"]

    text = underway("keys", "create", "--owner", "root", "--role", "admin", app=False)
    assert text.returncode == 0, text.stderr
    key = text.stdout.strip()  # the key alone on stdout, for $(underway keys create …)
    assert KEY.match(key), text.stdout
    assert "will not be shown again" in text.stderr
    assert f"created key {key[3:15]} for root (admin)" in text.stderr

    keys = listed(underway)
    assert [(k["id"], k["owner"], k["role"]) for k in keys] == [
        (created["id"], "alice", "user"),
        (key[3:15], "root", "admin"),
    ]
    for shown in keys:
        assert set(shown) == LISTED
        assert shown["revoked_at"] is None
        assert from_iso(shown["created_at"]) == pytest.approx(time.time(), abs=60)
    table = underway.ok("keys", "list", app=False)
    assert created["id"] in table
    assert "alice" in table
    assert "admin" in table
    secrets = [created["key"], key, *digests(underway.url)]
    for output in (table, json.dumps(keys), text.stderr):
        assert not any(secret in output for secret in secrets)


def test_revoke_marks_the_key_and_an_unknown_id_is_an_error(underway: Cli) -> None:
    created = create(underway, "alice")
    revoked = underway.ok("keys", "revoke", created["id"], app=False)
    assert revoked.strip() == f"revoked key {created['id']} of alice (user)"
    (shown,) = listed(underway)
    assert from_iso(shown["revoked_at"]) == pytest.approx(time.time(), abs=60)
    again = json.loads(underway.ok("keys", "revoke", created["id"], "--json", app=False))
    assert again == shown  # revoked once: the first time stays
    assert shown["revoked_at"][:10] in underway.ok("keys", "list", app=False)

    unknown = underway("keys", "revoke", "0123456789ab", app=False)
    assert unknown.returncode == 1
    assert "no API key with id '0123456789ab'" in unknown.stderr


def test_create_refuses_a_wrong_role_or_owner(underway: Cli) -> None:
    role = underway("keys", "create", "--owner", "alice", "--role", "root", app=False)
    assert role.returncode == 2
    assert "'root' is not one of 'user', 'admin'" in role.stderr
    owner = underway("keys", "create", "--owner", "", app=False)
    assert owner.returncode == 1
    assert "an owner is 1 to 200 characters" in owner.stderr
    assert listed(underway) == []


# -- keys at a server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def api(underway: Cli, procs: Processes) -> str:
    """An ``underway server`` on the test's store; a key exists, so authentication is on."""
    create(underway, "boot", "admin")
    port = free_port()
    server = procs.start("server", "--app", APP, "server", "--port", str(port))
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            with underway_client(url) as client:
                return bool(client.health()["ok"])
        except ServerError:
            return False

    wait_until(healthy, 30, "the server to answer", alive=[server])
    return url


def underway_client(api: str, key: str = "") -> Client:
    return Client(api, api_key=key, timeout=10)


def cli_through(
    underway_cli: Cli, api: str, *args: str, key: str | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``underway --server API [--api-key KEY] ARGS``, with a store URL that cannot be opened."""
    environment = {**underway_cli.env, "UNDERWAY_URL": NO_STORE, **(env or {})}
    return cli(underway_cli.cwd, environment, "--server", api, *(("--api-key", key) if key else ()), *args)


def test_a_server_takes_a_key_and_refuses_it_once_revoked(underway: Cli, api: str) -> None:
    alice = create(underway, "alice")
    with underway_client(api, alice["key"]) as client:
        job = client.submit("greet", {"name": "ada"})
        assert job.owner == "alice"
        underway.ok("keys", "revoke", alice["id"], app=False)
        with pytest.raises(Unauthenticated, match="revoked"):
            client.get(job.id)
    refused = cli_through(underway, api, "jobs", key=alice["key"])
    assert refused.returncode == 1
    assert "the API key was revoked" in refused.stderr


def test_cli_lists_only_the_jobs_its_key_may_see(underway: Cli, api: str) -> None:
    alice, bob, root = create(underway, "alice"), create(underway, "bob"), create(underway, "root", "admin")
    with underway_client(api, alice["key"]) as as_alice, underway_client(api, bob["key"]) as as_bob:
        hers = {as_alice.submit("greet", {"name": f"a{n}"}, delay=3600).id for n in range(2)}
        batch = as_bob.submit_batch("greet", [{"name": "b1"}, {"name": "b2"}], delay=3600).id
        his = {as_bob.submit("greet", {"name": "b"}, delay=3600).id}
        his |= {job.id for job in as_bob.batch_items(batch).jobs}

    def ids(*args: str, key: str | None, env: dict[str, str] | None = None) -> set[str]:
        done = cli_through(underway, api, "jobs", "--json", *args, key=key, env=env)
        assert done.returncode == 0, done.stderr
        return {job["id"] for job in json.loads(done.stdout)["jobs"]}

    assert ids(key=alice["key"]) == hers
    assert len(his) == 3  # a job, and the batch's two items
    assert ids(key=None, env={"UNDERWAY_API_KEY": bob["key"]}) == his
    assert ids("--owner", "alice", key=root["key"]) == hers
    assert ids(key=root["key"]) == hers | his

    batches = cli_through(underway, api, "batch", "list", "--owner", "bob", "--json", key=root["key"])
    assert [b["id"] for b in json.loads(batches.stdout)["batches"]] == [batch]
    none = cli_through(underway, api, "batch", "list", "--json", key=alice["key"])
    assert json.loads(none.stdout) == {"batches": []}

    other = cli_through(underway, api, "jobs", "--owner", "bob", key=alice["key"])
    assert other.returncode == 1
    assert "only an admin may list the jobs of another owner" in other.stderr
    anonymous = cli_through(underway, api, "jobs", key=None)
    assert anonymous.returncode == 1
    assert "authenticate: send Authorization" in anonymous.stderr


def test_a_stream_token_outlives_a_rotation_of_the_secret(underway: Cli, api: str) -> None:
    alice = create(underway, "alice")
    with underway_client(api, alice["key"]) as client:
        job = client.submit("greet", {"name": "ada"}, delay=3600)
        token = client.stream_token(job=job.id, ttl=300)
    rotated = underway.ok("keys", "rotate-token-secret", app=False)
    assert "tokens made before stay valid until they expire" in rotated
    with underway_client(api, token.token) as holder:
        assert holder.get(job.id).id == job.id


# -- --owner on the store --------------------------------------------------------------------------


def test_jobs_and_batches_of_one_owner_on_the_store(underway: Cli) -> None:
    async def seed() -> tuple[str, str]:
        async with load_tasks_module().register(App(underway.url)) as app:
            await app.submit("greet", {"name": "x"})
            job = await app.submit("greet", {"name": "ada"}, owner="alice")
            batch = await app.submit_batch("greet", [{"name": "b"}], owner="bob")
            return job.id, batch.id

    job_id, batch_id = asyncio.run(seed())
    jobs = json.loads(underway.ok("jobs", "--owner", "alice", "--json", app=False))["jobs"]
    assert [job["id"] for job in jobs] == [job_id]
    batches = json.loads(underway.ok("batch", "list", "--owner", "bob", "--json", app=False))["batches"]
    assert [batch["id"] for batch in batches] == [batch_id]
    assert json.loads(underway.ok("batch", "list", "--owner", "alice", "--json", app=False)) == {
        "batches": []
    }


def test_a_server_beyond_loopback_refuses_to_start_with_auth_off(underway: Cli) -> None:
    done = underway("server", "--host", "0.0.0.0", "--port", "0", "--auth", "off", app=False)
    assert done.returncode == 1
    assert "refusing to serve on 0.0.0.0 with auth=off" in done.stderr
    assert "underway keys create" in done.stderr  # what to do instead
