"""Built-in API keys and stream tokens, kept in the store: create, list, revoke, check.

The two secrets live in the store (``secrets``), made once by whichever process needs them
first, so that every server and command of one store agrees: ``api_key_pepper`` keys the hash
of API keys, ``stream_token`` signs stream tokens (``stream_token_previous`` still verifies the
tokens signed before the last rotation).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from .auth import (
    DEFAULT_SESSION_TTL,
    DEFAULT_TOKEN_TTL,
    MAX_TOKEN_TTL,
    SESSION_PREFIX,
    TOKEN_PREFIX,
    Grant,
    Principal,
    Role,
    Session,
    StreamToken,
    check_owner,
    check_role,
    key_digest,
    key_id_of,
    key_matches,
    new_api_key,
    new_secret,
    parse_token,
    secret_version,
    sign_session,
    sign_token,
    verify_token,
)
from .exceptions import InvalidArguments, Unauthenticated, UnderwayError

if TYPE_CHECKING:
    from .store import ApiKey, Store

T = TypeVar("T")

PEPPER = "api_key_pepper"
SIGNING = "stream_token"
PREVIOUS_SIGNING = "stream_token_previous"
#: An unknown secret version is looked up in the store again at most this often (a rotation by
#: another process), so forged tokens cannot make every request read the store.
RELOAD_INTERVAL = 1.0
#: Secrets older than this are read again before a token is signed (a server's key watch reads
#: them every few seconds anyway, through :meth:`Accounts.refresh`).
SIGNING_MAX_AGE = 10.0


class KeyNotFound(UnderwayError):
    code = "key_not_found"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}", details={"id": key_id})


class Accounts:
    """The keys and tokens of one store (``ready()`` opens and migrates it, once)."""

    def __init__(self, ready: Callable[[], Awaitable[Store]]) -> None:
        self._ready = ready
        self._pepper: str | None = None
        self._signing: dict[str, str] = {}  # version → secret
        self._current: str | None = None
        self._loaded_at = 0.0
        #: Keys whose hash matched, by the key: their digest (a repeated key skips the HMAC; its
        #: row is still read on every request, so a revocation takes effect at once).
        self._matched: OrderedDict[str, str] = OrderedDict()
        #: Tokens and session cookies whose signature was checked: the principal, the secret's
        #: version (dropped with the secret at a rotation) and a session's CSRF token.
        self._verified: OrderedDict[str, tuple[Principal, str, str]] = OrderedDict()

    # -- keys ----------------------------------------------------------------------------------

    async def create_key(self, owner: str, role: str = "user") -> tuple[ApiKey, str]:
        """A new key for ``owner``: its record and the key itself, which is shown only now."""
        from .store import ApiKey

        try:
            owner, role = check_owner(owner), check_role(role)
        except ValueError as exc:
            raise InvalidArguments(str(exc)) from None
        key_id, key = new_api_key()
        record = ApiKey(
            id=key_id,
            owner=owner,
            role=role,
            digest=key_digest(await self._pepper_value(), key),
            created_at=time.time(),
        )
        await (await self._ready()).add_api_key(record)
        return record, key

    async def keys(self) -> list[ApiKey]:
        return await (await self._ready()).api_keys()

    async def revoke(self, key_id: str) -> ApiKey:
        revoked = await (await self._ready()).revoke_api_key(key_id, time.time())
        if revoked is None:
            raise KeyNotFound(key_id)
        return revoked

    async def principal_of_key(self, key: str) -> Principal:
        """The principal of a built-in key; ``Unauthenticated`` if it is unknown or revoked."""
        key_id = key_id_of(key)
        record = None if key_id is None else await (await self._ready()).api_key(key_id)
        if record is None or not await self._matches(key, record.digest):
            raise Unauthenticated("the API key is not valid: check it, or create one (underway keys create)")
        if record.revoked:
            raise Unauthenticated("the API key was revoked: create a new one (underway keys create)")
        return Principal(owner=record.owner, role=check_role(record.role), key_id=record.id)

    async def _matches(self, key: str, digest: str) -> bool:
        if self._matched.get(key) == digest:
            self._matched.move_to_end(key)
            return True
        if not key_matches(await self._pepper_value(), key, digest):
            return False
        _remember(self._matched, key, digest)
        return True

    async def revoked(self, key_ids: list[str]) -> frozenset[str]:
        return await (await self._ready()).revoked_api_keys(key_ids) if key_ids else frozenset()

    async def any_keys(self) -> bool:
        return await (await self._ready()).has_api_keys()

    # -- tokens --------------------------------------------------------------------------------

    async def token(self, principal: Principal, grant: Grant, ttl: float = DEFAULT_TOKEN_TTL) -> StreamToken:
        """A stream token for ``principal`` limited to ``grant``, valid ``ttl`` seconds."""
        if not 0 < ttl <= MAX_TOKEN_TTL:
            raise InvalidArguments(f"ttl is between 1 and {MAX_TOKEN_TTL:g} seconds, not {ttl:g}")
        stale = time.monotonic() - self._loaded_at > SIGNING_MAX_AGE
        await self._load_signing(force=stale)
        assert self._current is not None
        return sign_token(self._signing[self._current], principal, grant, ttl)

    async def session(self, principal: Principal, ttl: float = DEFAULT_SESSION_TTL) -> Session:
        """A browser session of ``principal`` (signed in with its API key)."""
        await self._load_signing(force=time.monotonic() - self._loaded_at > SIGNING_MAX_AGE)
        assert self._current is not None
        return sign_session(self._signing[self._current], principal, ttl)

    async def principal_of_session(self, cookie: str) -> tuple[Principal, str]:
        """The principal of a session cookie and the CSRF token that goes with it;
        ``Unauthenticated`` if forged, expired or its key was revoked."""
        if not cookie.startswith(SESSION_PREFIX):
            raise Unauthenticated("not a session: sign in again (POST /session)")
        principal = await self._principal_of_signed(cookie)
        return principal, self._verified.get(cookie, (principal, "", ""))[2]

    async def principal_of_token(self, token: str) -> Principal:
        """The principal of a stream token; ``Unauthenticated`` if forged, expired or its key
        was revoked."""
        if not token.startswith(TOKEN_PREFIX):
            raise Unauthenticated("not a stream token: get one from POST /stream-tokens")
        return await self._principal_of_signed(token)

    async def _principal_of_signed(self, token: str) -> Principal:
        """The principal of a token or session cookie, checked: signature, expiry, key."""
        principal = await self._checked_token(token)
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise Unauthenticated("the token has expired: get a new one from POST /stream-tokens")
        if principal.key_id is not None:
            record = await (await self._ready()).api_key(principal.key_id)
            if record is None or record.revoked:
                raise Unauthenticated("the API key this token was made with was revoked")
        return principal

    async def _checked_token(self, token: str) -> Principal:
        """The principal of a token whose signature holds (checked once per token)."""
        known = self._verified.get(token)
        if known is not None and known[1] in self._signing:
            self._verified.move_to_end(token)
            return known[0]
        parsed = parse_token(token)
        version = parsed.version or ""
        if version not in self._signing and time.monotonic() - self._loaded_at > RELOAD_INTERVAL:
            await self._load_signing(force=True)
        secret = self._signing.get(version)
        if secret is None:
            raise Unauthenticated("the token is not valid: get a new one from POST /stream-tokens")
        principal = verify_token(secret, parsed)
        _remember(self._verified, token, (principal, version, str(parsed.payload.get("c", ""))))
        return principal

    async def refresh(self) -> None:
        """Read the signing secrets again: a rotation by another process takes effect here
        (new tokens signed with the new secret; tokens of a secret rotated out are refused)."""
        if self._current is not None:
            await self._load_signing(force=True)

    async def rotate(self) -> None:
        """Sign new tokens with a new secret; tokens signed with the current one stay valid
        until they expire (the one before is forgotten)."""
        current = await (await self._ready()).secret(SIGNING, new_secret)
        await (await self._ready()).set_secret(PREVIOUS_SIGNING, current)
        await (await self._ready()).set_secret(SIGNING, new_secret())
        await self._load_signing(force=True)

    # -- secrets -------------------------------------------------------------------------------

    async def _pepper_value(self) -> str:
        if self._pepper is None:
            self._pepper = await (await self._ready()).secret(PEPPER, new_secret)
        return self._pepper

    async def _load_signing(self, *, force: bool = False) -> None:
        if self._current is not None and not force:
            return
        current = await (await self._ready()).secret(SIGNING, new_secret)
        previous = await (await self._ready()).secret(PREVIOUS_SIGNING, lambda: current)
        self._signing = {secret_version(s): s for s in (previous, current)}
        self._current = secret_version(current)
        self._loaded_at = time.monotonic()


#: Most keys and tokens remembered as checked.
REMEMBERED = 10_000


def _remember(cache: OrderedDict[str, T], key: str, value: T) -> None:
    cache[key] = value
    if len(cache) > REMEMBERED:
        cache.popitem(last=False)


__all__ = ["Accounts", "KeyNotFound", "Role"]
