"""Keys and stream tokens through the App, on each store, opened on first use like every other
call of the App."""

from __future__ import annotations

import pytest

import underway
from underway.auth import Grant, token_version

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_a_new_app_makes_keys_and_tokens_without_being_opened_first(store_url: str) -> None:
    app = underway.App(store_url)
    try:
        record, key = await app.accounts.create_key("ada", "user")
        principal = await app.accounts.principal_of_key(key)
        assert (principal.owner, principal.role, principal.key_id) == ("ada", "user", record.id)
        made = await app.stream_token("ada", ttl=60)
        found = await app.accounts.principal_of_token(made.token)
        assert (found.owner, found.grant) == ("ada", Grant())
    finally:
        await app.close()


async def test_tokens_name_a_job_of_their_owner_only(store_url: str) -> None:
    app = underway.App(store_url)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    try:
        job = await noop.options(owner="ada").submit()
        assert (await app.stream_token("ada", job=job.id)).token
        with pytest.raises(underway.JobNotFound):
            await app.stream_token("bob", job=job.id)
        with pytest.raises(underway.InvalidArguments, match="ttl"):
            await app.stream_token("ada", ttl=86_401)
    finally:
        await app.close()


async def test_rotation_signs_new_tokens_with_a_new_secret_and_keeps_the_previous_one(store_url: str) -> None:
    app, other = underway.App(store_url), underway.App(store_url)
    try:
        before = await app.stream_token("ada", ttl=60)
        await other.accounts.rotate()
        await app.accounts.refresh()
        after = await app.stream_token("ada", ttl=60)
        assert token_version(after.token) != token_version(before.token)
        assert (await other.accounts.principal_of_token(before.token)).owner == "ada"
        await other.accounts.rotate()
        await app.accounts.refresh()
        with pytest.raises(underway.Unauthenticated):
            await app.accounts.principal_of_token(before.token)
    finally:
        await app.close()
        await other.close()
