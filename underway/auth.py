"""Who is asking: principals, built-in API keys and signed stream tokens (pure, no I/O).

A :class:`Principal` is an owner and a role. It comes from a built-in API key
(``Authorization: Bearer uw_…``), from the host app's ``authenticate`` hook, or from a short-lived
stream token (``uwt.…``) that a browser passes as ``?token=``: a token's principal carries a
:class:`Grant`, which limits it to reading, cancelling and answering the jobs it names.

Keys are 256 random bits. The store keeps only their keyed hash (HMAC-SHA256 under a secret of
the store), compared in constant time: a slow password hash protects guessable passwords, not
random keys. Tokens are ``uwt.<payload>.<signature>``: the payload is base64url JSON, signed with
HMAC-SHA256 under the store's signing secret, which every server of the store shares and which
can be rotated (tokens signed with the previous secret stay valid until they expire).

``ROLES`` and the rules of :meth:`Principal.may_see` and :meth:`Principal.may` are the one place
that decides who may see and do what; :mod:`underway.service` applies them to every call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .exceptions import Unauthenticated

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")

KEY_PREFIX = "uw_"
TOKEN_PREFIX = "uwt."
#: A dashboard session: the value of the :data:`SESSION_COOKIE` cookie (``uws.<payload>.<sig>``).
SESSION_PREFIX = "uws."
SESSION_COOKIE = "underway_session"
DEFAULT_SESSION_TTL = 12 * 3600.0
#: Hex digits of a key's id, the public part of the key (``uw_<id>_<secret>``).
KEY_ID_LENGTH = 12
DEFAULT_TOKEN_TTL = 900.0
MAX_TOKEN_TTL = 86_400.0

#: What the holder of a stream token may do: read, and the two buttons a progress widget has.
GRANTED_ACTIONS = frozenset({"read", "cancel", "answer"})

_KEY = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{{KEY_ID_LENGTH}}})_([A-Za-z0-9_-]{{43}})$")
_OWNER = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a stream token names: one job, one batch, or (neither) all the owner's jobs."""

    job: str | None = None
    batch: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who makes a request: an owner and a role.

    ``grant`` is set for the principal of a stream token; ``key_id`` names the API key the
    principal came from (its streams end when the key is revoked); ``expires_at`` is when a
    token's principal stops being one (its streams end then).
    """

    owner: str
    role: Role = "user"
    grant: Grant | None = None
    key_id: str | None = None
    expires_at: float | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"a principal's role is 'user' or 'admin', not {self.role!r}")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def stored_owner(self) -> str | None:
        """The owner recorded on what this principal submits (``None`` for :data:`ANONYMOUS`)."""
        return self.owner or None

    def may(self, action: str) -> bool:
        """Whether the principal may ``action`` at all (before looking at whose job it is).

        Actions: ``read``, ``cancel``, ``answer`` (any principal, a token's too); ``write``
        (submit, retry, delete, batch controls: not with a token); ``admin`` (queues, workers,
        metrics, keys: admins, without a token)."""
        if self.grant is not None and action not in GRANTED_ACTIONS:
            return False
        return action != "admin" or self.is_admin

    def may_see(self, owner: str | None, job_id: str | None = None, batch_id: str | None = None) -> bool:
        """Whether a job (``job_id``, in batch ``batch_id``) or batch of ``owner`` is visible.

        An admin sees everything; a user sees what it owns (never a job without an owner); a
        token sees, of that, only the job or batch it names."""
        if not self.is_admin and (owner is None or owner != self.owner):
            return False
        grant = self.grant
        if grant is None:
            return True
        if grant.job is not None:
            return job_id == grant.job
        if grant.batch is not None:
            return batch_id == grant.batch
        return True

    @property
    def owner_filter(self) -> str | None:
        """The owner every list of this principal is limited to (``None``: all, for an admin)."""
        return None if self.is_admin else self.owner


#: The principal of every request when authentication is off, and of trusted Python code:
#: an admin that records no owner on what it submits.
ANONYMOUS = Principal(owner="", role="admin")


def check_owner(owner: str) -> str:
    if not _OWNER.match(owner):
        raise ValueError("an owner is 1 to 200 characters, with no control characters")
    return owner


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise ValueError(f"a role is 'user' or 'admin', not {role!r}")
    return role


# -- API keys --------------------------------------------------------------------------------


def new_api_key() -> tuple[str, str]:
    """A fresh key: ``(id, key)``, where ``key`` is ``uw_<id>_<43 characters of base64url>``."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id of a well-formed key, else ``None``."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def key_digest(pepper: str, key: str) -> str:
    """The keyed hash the store keeps of ``key``."""
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_matches(pepper: str, key: str, digest: str) -> bool:
    return hmac.compare_digest(key_digest(pepper, key), digest)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


# -- stream tokens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamToken:
    token: str
    expires_at: float


def secret_version(secret: str) -> str:
    """A short public name of a signing secret, carried by its tokens (``v``)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


def sign_token(secret: str, principal: Principal, grant: Grant, ttl: float) -> StreamToken:
    """A token for ``principal`` limited to ``grant``, valid for ``ttl`` seconds."""
    expires_at = round(time.time() + ttl, 3)
    payload = {
        "o": principal.owner,
        "r": principal.role,
        "j": grant.job,
        "b": grant.batch,
        "k": principal.key_id,
        "x": expires_at,
        "v": secret_version(secret),
    }
    return StreamToken(_sign(secret, payload, TOKEN_PREFIX), expires_at)


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: the HttpOnly cookie, and the CSRF token that every write it makes
    must carry in ``X-CSRF-Token`` (the page keeps it; the cookie alone is not enough)."""

    cookie: str
    csrf_token: str
    expires_at: float


def sign_session(secret: str, principal: Principal, ttl: float) -> Session:
    """A session of ``principal`` (made from its API key) for ``ttl`` seconds."""
    expires_at = round(time.time() + ttl, 3)
    csrf_token = secrets.token_urlsafe(24)
    payload = {
        "s": 1,
        "o": principal.owner,
        "r": principal.role,
        "k": principal.key_id,
        "x": expires_at,
        "c": csrf_token,
        "v": secret_version(secret),
    }
    return Session(_sign(secret, payload, SESSION_PREFIX), csrf_token, expires_at)


def _sign(secret: str, payload: dict[str, Any], prefix: str) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{prefix}{body}.{_signature(secret, body)}"


class ParsedToken(NamedTuple):
    """A token's parts, read but not checked."""

    body: str
    signature: str
    payload: dict[str, Any]

    @property
    def version(self) -> str | None:
        version = self.payload.get("v")
        return version if isinstance(version, str) else None


def parse_token(token: str) -> ParsedToken:
    """The parts of a stream token or session cookie, unchecked; ``Unauthenticated`` if it is
    neither."""
    prefix = TOKEN_PREFIX if token.startswith(TOKEN_PREFIX) else SESSION_PREFIX
    body, _, signature = token[len(prefix) :].partition(".")
    payload = None
    if token.startswith(prefix):
        try:
            payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (ValueError, binascii.Error):
            payload = None
    if not isinstance(payload, dict):
        raise Unauthenticated("the token is not valid: get a new one from POST /stream-tokens")
    return ParsedToken(body, signature, payload)


def token_version(token: str) -> str | None:
    """The ``v`` (signing secret version) a token claims, read without checking it."""
    try:
        return parse_token(token).version
    except Unauthenticated:
        return None


def verify_token(secret: str, token: str | ParsedToken, now: float | None = None) -> Principal:
    """The principal of a token signed with ``secret``; ``Unauthenticated`` if it is forged,
    malformed or expired."""
    parsed = parse_token(token) if isinstance(token, str) else token
    if not hmac.compare_digest(_signature(secret, parsed.body), parsed.signature):
        raise Unauthenticated("the token is not valid: get a new one from POST /stream-tokens")
    principal = principal_of_payload(parsed.payload)
    assert principal.expires_at is not None
    if principal.expires_at <= (time.time() if now is None else now):
        raise Unauthenticated("the token has expired: get a new one from POST /stream-tokens")
    return principal


def principal_of_payload(payload: dict[str, Any]) -> Principal:
    """The principal a token (limited by its grant) or a session (not limited) stands for."""
    return Principal(
        owner=payload["o"],
        role=check_role(payload["r"]),
        grant=None if payload.get("s") else Grant(job=payload["j"], batch=payload["b"]),
        key_id=payload["k"],
        expires_at=float(payload["x"]),
    )


def _signature(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
