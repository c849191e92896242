"""One error shape for every route: ``{"error": {"code", "message", "details"?}}``.

Routes of the router use :class:`ErrorRoute`, so the shape holds even when the router is
mounted into someone else's FastAPI app, whose exception handlers we do not own.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from ..accounts import KeyNotFound
from ..exceptions import (
    BatchNotFound,
    BatchTooLarge,
    ConfigError,
    Forbidden,
    IdempotencyConflict,
    InvalidArguments,
    InvalidTransition,
    JobNotFound,
    StoreError,
    TaskNotFound,
    TooManyRequests,
    Unauthenticated,
    UnderwayError,
)
from ..service import Service
from .guard import SERVICE
from .inputs import BadInput, loads

if TYPE_CHECKING:
    from .guard import Guard

STATUS_OF: dict[type[UnderwayError], int] = {
    Unauthenticated: 401,
    Forbidden: 403,
    JobNotFound: 404,
    BatchNotFound: 404,
    KeyNotFound: 404,
    BatchTooLarge: 413,
    TooManyRequests: 429,
    InvalidTransition: 409,
    IdempotencyConflict: 409,
    TaskNotFound: 422,
    InvalidArguments: 422,
    ConfigError: 400,
    StoreError: 503,
}


class BodyTooLarge(UnderwayError):
    code = "body_too_large"


STATUS_OF[BodyTooLarge] = 413

#: Headers of every response of the API (the standalone server adds the ``frame-ancestors``
#: part of the policy to its other pages too).
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
)
#: Routes that answer without a principal.
PUBLIC_ROUTES = frozenset({"health", "create_session", "end_session"})


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


def status_of(exc: UnderwayError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def response_for(exc: Exception) -> JSONResponse:
    if isinstance(exc, UnderwayError):
        response = error_response(status_of(exc), exc.code, exc.message, exc.details)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    if isinstance(exc, RequestValidationError):
        problems = [
            {"loc": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['message']}" for p in problems)
        return error_response(422, "invalid_request", f"invalid request: {summary}", problems)
    if isinstance(exc, HTTPException):
        return http_error_response(exc)
    raise exc


#: The code word of an HTTP error that is not underway's own, by status.
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def http_error_response(exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (no route, wrong method…) in underway's shape, with their headers
    (a 405 says which methods it allows in ``Allow``)."""
    response = error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


class ErrorRoute(APIRoute):
    """The route class of the API: it lets in only requests with a principal (the ``guard``
    finds it; :data:`PUBLIC_ROUTES` need none), caps bodies, answers errors in underway's one
    shape and adds the security headers."""

    body_limit = 1024 * 1024
    guard: Guard | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = self.body_limit
        guard = None if self.name in PUBLIC_ROUTES else self.guard
        takes_body = self.body_field is not None

        async def handle(request: Request) -> Response:
            response = await guarded(request)
            for name, value in SECURITY_HEADERS:
                response.headers.setdefault(name, value)
            return response

        async def guarded(request: Request) -> Response:
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                return _too_large(limit)
            request._receive = _capped(request.receive, limit)
            try:
                if guard is not None:
                    request.scope[SERVICE] = Service(guard.app, await guard.principal(request))
                    guard.check_write(request, request.method)
                check_location(request)
                if takes_body:
                    await read_json(request)
                return await handler(request)
            except (UnderwayError, RequestValidationError, HTTPException) as exc:
                # FastAPI turns an error raised while it reads the body into a 400 "error
                # parsing the body" whose cause is ours: a chunked body over the limit.
                if isinstance(exc, BodyTooLarge) or isinstance(exc.__cause__, BodyTooLarge):
                    return _too_large(limit)
                if isinstance(exc.__cause__, UnicodeDecodeError):  # as FastAPI answers bad JSON
                    return _not_json(exc.__cause__)
                return response_for(exc)

        return handle


def check_location(request: Request) -> None:
    """:class:`~.inputs.BadInput` for a NUL character in the path or the query (as ``%00``):
    no stored text may hold one, and none is an id, a name or a filter."""
    if "\x00" in request.scope["path"] or b"%00" in request.scope.get("query_string", b""):
        raise BadInput("a NUL character (%00): remove it", where="url", kind="unstorable_character")


async def read_json(request: Request) -> None:
    """Parse a JSON body strictly (:func:`~.inputs.loads`) before FastAPI does: FastAPI then
    takes the parsed value (``request.json()`` keeps it)."""
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body and (kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))):
        request._json = loads(body)


def _not_json(exc: UnicodeDecodeError) -> JSONResponse:
    message = f"the body is not JSON: it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    problem = {"loc": ["body"], "message": message, "type": "json_invalid"}
    return error_response(422, "invalid_request", f"invalid request: body: {message}", [problem])


def _too_large(limit: int) -> JSONResponse:
    return error_response(413, BodyTooLarge.code, f"the body is larger than {limit} bytes", {"limit": limit})


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"the body is larger than {limit} bytes")
        return message

    return capped


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "model": None}
    for status, description in (
        (404, "No such job"),
        (409, "The job is not in a state that allows this"),
        (413, "Body too large"),
        (422, "Invalid request or task arguments"),
    )
}
