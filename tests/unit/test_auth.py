"""The pure rules of who may see and do what: principals, grants, keys and stream tokens."""

from __future__ import annotations

import time

import pytest

from underway.auth import (
    ANONYMOUS,
    Grant,
    Principal,
    key_digest,
    key_id_of,
    key_matches,
    new_api_key,
    sign_token,
    verify_token,
)
from underway.context import printable
from underway.exceptions import Unauthenticated
from underway.quotas import Quotas
from underway.service import json_depth


def test_users_see_their_own_jobs_admins_all_and_nobody_sees_ownerless_jobs_but_admins() -> None:
    ada = Principal(owner="ada")
    assert ada.may_see("ada", "j1")
    assert not ada.may_see("bob", "j1")
    assert not ada.may_see(None, "j1")
    admin = Principal(owner="root", role="admin")
    assert admin.may_see("bob", "j1")
    assert admin.may_see(None, "j1")
    assert ANONYMOUS.may_see(None, "j1")


def test_a_grant_narrows_what_a_token_sees_and_does() -> None:
    one_job = Principal(owner="ada", grant=Grant(job="j1"))
    assert one_job.may_see("ada", "j1")
    assert not one_job.may_see("ada", "j2")
    assert not one_job.may_see("bob", "j1")
    one_batch = Principal(owner="ada", grant=Grant(batch="b1"))
    assert one_batch.may_see("ada", "j9", "b1")
    assert not one_batch.may_see("ada", "j9", "b2")
    assert not one_batch.may_see("ada", "j9", None)
    assert [one_job.may(a) for a in ("read", "cancel", "answer", "write", "admin")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    admin_token = Principal(owner="root", role="admin", grant=Grant())
    assert not admin_token.may("admin")


def test_roles_are_user_or_admin() -> None:
    with pytest.raises(ValueError, match="role"):
        Principal(owner="ada", role="root")  # type: ignore[arg-type]


def test_keys_are_random_and_only_their_keyed_hash_matches() -> None:
    key_id, key = new_api_key()
    other_id, other = new_api_key()
    assert key_id != other_id
    assert key_id_of(key) == key_id
    assert key_id_of(key + "x") is None
    assert key_id_of("uw_nothex!!!!!!_" + "a" * 43) is None
    digest = key_digest("pepper", key)
    assert key not in digest
    assert key_matches("pepper", key, digest)
    assert not key_matches("pepper", other, digest)
    assert not key_matches("other pepper", key, digest)


def test_tokens_verify_with_their_secret_until_they_expire() -> None:
    ada = Principal(owner="ada", key_id="k1")
    made = sign_token("s3cret", ada, Grant(job="j1"), ttl=60)
    found = verify_token("s3cret", made.token)
    assert (found.owner, found.role, found.grant, found.key_id) == ("ada", "user", Grant(job="j1"), "k1")
    assert found.expires_at == made.expires_at
    with pytest.raises(Unauthenticated, match="not valid"):
        verify_token("another", made.token)
    with pytest.raises(Unauthenticated, match="expired"):
        verify_token("s3cret", made.token, now=time.time() + 61)
    body, _, signature = made.token.removeprefix("uwt.").partition(".")
    changed = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(Unauthenticated):
        verify_token("s3cret", f"uwt.{changed}.{signature}")


def test_printable_escapes_control_characters_of_log_lines() -> None:
    text = "done\n2026-01-01 INFO forged line\r\x1b[31mred\x1b[0m\ttab\u2028"
    shown = printable(text)
    assert "\n" not in shown
    assert "\r" not in shown
    assert "\x1b" not in shown
    assert "\u2028" not in shown
    assert shown == "done\\n2026-01-01 INFO forged line\\r\\x1b[31mred\\x1b[0m\\ttab\\u2028"
    assert printable("plain café ✓") == "plain café ✓"


def test_json_depth() -> None:
    assert [json_depth(v) for v in (1, "x", [], {"a": 1}, [[1]], {"a": [{"b": []}]})] == [0, 0, 1, 1, 2, 4]
    deep: list[object] = []
    for _ in range(10_000):
        deep = [deep]
    assert json_depth(deep) == 10_001


def test_stream_quota_counts_users_not_admins() -> None:
    quotas = Quotas(max_streams=2, per_minute=60)
    ada = Principal(owner="ada")
    first, second = quotas.open_stream(ada), quotas.open_stream(ada)
    with pytest.raises(Exception, match="2 streams open"):
        quotas.open_stream(ada)
    quotas.open_stream(Principal(owner="bob"))
    for _ in range(5):
        quotas.open_stream(Principal(owner="root", role="admin"))
    first()
    first()  # a second release changes nothing
    third = quotas.open_stream(ada)
    assert quotas.streams_of("ada") == 2
    second()
    third()
    assert quotas.streams_of("ada") == 0


def test_submission_quota_refills_at_an_even_rate() -> None:
    quotas = Quotas(max_streams=1, per_minute=60)
    ada = Principal(owner="ada")
    for _ in range(60):
        quotas.submission(ada, now=100.0)
    with pytest.raises(Exception, match="more than 60") as refused:
        quotas.submission(ada, now=100.0)
    assert refused.value.retry_after == 1  # type: ignore[attr-defined]
    quotas.submission(ada, now=101.0)  # one more a second
    quotas.submission(Principal(owner="bob"), now=100.0)


def test_stream_tokens_are_kept_out_of_the_access_log() -> None:
    import logging

    from underway.web.server import RedactTokens

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', None, None
    )
    record.args = ("127.0.0.1:5", "GET", "/api/jobs/x/stream?after=3&token=uwt.abc.def&x=1", "1.1", 200)
    assert RedactTokens().filter(record)
    assert "uwt." not in record.getMessage()
    assert "/api/jobs/x/stream?after=3&token=…&x=1" in record.getMessage()
