"""The door of the API: who makes each request, and whether it may come in at all.

Every HTTP route of the router (through :class:`~.errors.ErrorRoute`), every stream and the
WebSocket ask :meth:`Guard.principal`; what the principal may then see and do is decided by
:class:`~underway.service.Service`. Credentials, in the order they are looked for:

1. ``Authorization: Bearer uw_…`` (a built-in API key) or ``Bearer uwt.…`` (a stream token);
2. ``?token=uwt.…`` (a stream token: browsers' ``EventSource`` and WebSocket send no headers);
3. the ``underway_session`` cookie of a browser signed in with ``POST /session`` (its writes
   carry the session's CSRF token in ``X-CSRF-Token``);
4. the host app's ``authenticate`` hook, which returns a :class:`~underway.auth.Principal`;
5. with authentication off, the anonymous admin.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends
from starlette.requests import HTTPConnection, Request

from ..auth import ANONYMOUS, KEY_PREFIX, SESSION_COOKIE, TOKEN_PREFIX, Principal
from ..exceptions import ConfigError, Forbidden, Unauthenticated
from ..service import Service
from .periodic import Periodic

if TYPE_CHECKING:
    from ..app import App
    from ..config import Settings

logger = logging.getLogger("underway.web")

Authenticate = Callable[[HTTPConnection], Awaitable[Principal | None]]

#: Methods that change something: without an ``Authorization`` header or a token, they need a
#: JSON body or a custom header, which a cross-site form cannot send.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADERS = ("x-requested-with", "x-csrf-token")


#: Where the route class puts the :class:`Service` of a request's principal.
SERVICE = "underway.service"
#: Where the guard keeps the CSRF token of a request signed in by a session cookie.
CSRF = "underway.csrf"


async def current_service(request: Request) -> Service:
    """The dependency every route takes: the :class:`Service` of the request's principal, which
    the route class found before the route runs."""
    service: Service = request.scope[SERVICE]
    return service


#: A route's parameter ``service: Svc``.
Svc = Annotated[Service, Depends(current_service)]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_serving(settings: Settings) -> None:
    """Refuse to serve without authentication beyond this machine."""
    if settings.auth == "off" and not is_loopback(settings.host):
        raise ConfigError(
            f"refusing to serve on {settings.host} with auth=off: anyone who reaches it could read and"
            " cancel every job. Create a key (underway keys create --owner NAME --role admin) and leave"
            " auth=auto, or listen on 127.0.0.1 behind a proxy with auth=on"
        )


class Guard:
    """Authentication of one API: the mode (on or off) and the principal of each request."""

    def __init__(
        self, app: App, settings: Settings, authenticate: Authenticate | None, *, standalone: bool
    ) -> None:
        self.app = app
        self.settings = settings
        self.authenticate = authenticate
        mode = settings.auth
        self._auto = mode == "auto"
        #: Authentication is on: fixed by ``auth=on|off``; with ``auto``, on when the router has
        #: a hook, the standalone server listens beyond loopback, or an API key exists.
        self.on = mode == "on" or (
            self._auto and (authenticate is not None or (standalone and not is_loopback(settings.host)))
        )

    async def start(self) -> None:
        """Settle ``auto``: on if an API key exists (checked again by :class:`KeyWatch`)."""
        if self._auto and not self.on:
            self.on = await self.app.accounts.any_keys()

    async def recheck(self) -> None:
        if self._auto and not self.on and await self.app.accounts.any_keys():
            logger.warning("an API key exists now: authentication is on")
            self.on = True

    async def principal(self, conn: HTTPConnection) -> Principal:
        """The principal of a request or WebSocket; ``Unauthenticated`` if it has none."""
        kind, credential = credentials(conn)
        accounts = self.app.accounts
        if kind == "key":
            return await accounts.principal_of_key(credential)
        if kind == "token":
            return await accounts.principal_of_token(credential)
        if kind == "session":
            principal, conn.scope[CSRF] = await accounts.principal_of_session(credential)
            return principal
        if self.authenticate is not None:
            found = await self.authenticate(conn)
            if found is not None:
                if not isinstance(found, Principal):
                    raise TypeError(
                        f"the authenticate hook returned {found!r}: return an underway.auth.Principal"
                        " (owner, role) or None"
                    )
                return found
        if not self.on:
            return ANONYMOUS
        if self.authenticate is not None:
            raise Unauthenticated(
                "not signed in: this app's own login found no user for the request (or send an"
                " underway API key as Authorization: Bearer, or ?token= with a stream token)"
            )
        raise Unauthenticated(
            "authenticate: send Authorization: Bearer <API key> (underway keys create), or ?token= with"
            " a stream token (POST /stream-tokens)"
        )

    def check_write(self, conn: HTTPConnection, method: str) -> None:
        """Refuse a change that a cross-site page could have sent. Credentials the browser
        sends by itself need proof that the page is ours: a session cookie, its CSRF token in
        ``X-CSRF-Token``; no credentials of underway's (auth off, or the host's own cookie
        through the hook), a JSON body or one of :data:`CSRF_HEADERS`. ``Authorization`` and
        tokens need nothing more (a browser never adds them by itself)."""
        if method not in UNSAFE_METHODS:
            return
        kind = credentials(conn)[0]
        if kind == "session":
            expected = conn.scope.get(CSRF, "")
            sent = conn.headers.get("x-csrf-token", "")
            if expected and hmac.compare_digest(sent.encode(), expected.encode()):
                return
            raise Forbidden(
                "a change made with the session cookie must carry its CSRF token in X-CSRF-Token"
                " (POST /session and GET /me give it)",
                details={"reason": "csrf"},
            )
        if kind is not None:
            return
        headers = conn.headers
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json" or any(h in headers for h in CSRF_HEADERS):
            return
        raise Forbidden(
            "a change sent without Authorization must carry a JSON body (Content-Type:"
            " application/json) or an X-Requested-With header, which cross-site forms cannot send",
            details={"reason": "csrf"},
        )

    def origin_allowed(self, conn: HTTPConnection) -> bool:
        """Whether a browser's WebSocket from this ``Origin`` may connect: one of
        ``allowed_origins``, or the page's own origin. No ``Origin`` (not a browser): yes."""
        origin = conn.headers.get("origin")
        if origin is None or origin in self.settings.allowed_origins:
            return True
        return urlsplit(origin).netloc.lower() == conn.headers.get("host", "").lower()


def credentials(conn: HTTPConnection) -> tuple[str | None, str]:
    """``("key", …)``, ``("token", …)``, ``("session", …)`` or ``(None, "")``: the underway
    credentials sent, in the order they count."""
    authorization = conn.headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            if value.startswith(KEY_PREFIX):
                return "key", value
            if value.startswith(TOKEN_PREFIX):
                return "token", value
    token = conn.query_params.get("token")
    if token is not None:
        return "token", token
    session = conn.cookies.get(SESSION_COOKIE)
    if session is not None:
        return "session", session
    return None, ""


class KeyWatch(Periodic):
    """Ends the streams whose credentials stopped being valid: every ``interval`` seconds it
    asks the store which of the keys in use were revoked, and ends their streams (a token made
    with a revoked key ends too); with ``auth=auto`` it also turns authentication on once a key
    exists."""

    name = "underway-key-watch"

    def __init__(
        self,
        guard: Guard,
        interval: float,
        open_streams: Callable[[], Iterable[tuple[Principal, Callable[[], Any]]]],
    ) -> None:
        super().__init__(interval)
        self._guard = guard
        self._open_streams = open_streams

    async def tick(self) -> bool:
        try:
            await self.check()
        except Exception:
            logger.exception("checking API keys for revocation failed; trying again")
        return True

    async def check(self) -> None:
        await self._guard.recheck()
        await self._guard.app.accounts.refresh()
        streams = [(p, end) for p, end in self._open_streams() if p.key_id is not None]
        if not streams:
            return
        revoked = await self._guard.app.accounts.revoked(sorted({p.key_id for p, _ in streams if p.key_id}))
        for principal, end in streams:
            if principal.key_id in revoked:
                end()
