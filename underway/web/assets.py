"""The browser files underway ships, served as they are (no build step), public (no principal
needed): ``underway.js``, ``underway-react.js``, ``underway-elements.js`` at ``/assets``, and the
dashboard's modules, styles and vendored libraries (:mod:`.dashboard`).

Each file is read once. Its ETag is a hash of its bytes: a browser revalidates with
``If-None-Match`` and gets 304. A request whose ``?v=`` is the file's version (:attr:`Assets.url`
adds it) is cached for a year, as ``immutable``: a new release changes the URL, not the file
under it. Files are sent with ``Access-Control-Allow-Origin: *`` (they hold no secret), so that a
page on another origin can import them as modules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.types import Receive, Scope, Send

from .errors import SECURITY_HEADERS

#: The files, by the name they are served under.
FILES = ("underway.js", "underway-react.js", "underway-elements.js")
#: The content type of each kind of file served.
TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "txt": "text/plain; charset=utf-8",
    "md": "text/plain; charset=utf-8",
}
LONG_CACHE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    etag: str

    @property
    def version(self) -> str:
        return self.etag.strip('"')


def static_file(path: str) -> Traversable:
    """A file of ``underway/web/static`` (``path`` relative to it, with ``/``)."""
    return resources.files(__package__).joinpath("static", *path.split("/"))


class Assets:
    """An ASGI app serving some of underway's static files: mount it
    (``server.mount("/assets", api.assets)``).

    ``files`` maps each name served (a path under the mount point) to its file under
    ``underway/web/static``; by default the :data:`FILES`, under their own names.
    """

    def __init__(self, files: Mapping[str, str] | None = None) -> None:
        self.files = dict(files) if files is not None else {name: name for name in FILES}
        self._loaded: dict[str, _File] = {}

    def _file(self, name: str) -> _File | None:
        """The file served as ``name``, read on first use; ``None`` if it is not one of ours."""
        found = self._loaded.get(name)
        if found is None and name in self.files:
            body = static_file(self.files[name]).read_bytes()
            found = self._loaded[name] = _File(body, f'"{hashlib.sha256(body).hexdigest()[:16]}"')
        return found

    def url(self, name: str, prefix: str = "/assets") -> str:
        """The URL of a file under ``prefix`` with its version, to be cached for good."""
        found = self._file(name)
        if found is None:
            raise KeyError(f"no asset named {name!r}: {', '.join(self.files)}")
        return f"{prefix}/{name}?v={found.version}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - mounted for HTTP only
            return
        name = mounted_path(scope).lstrip("/")
        found = self._file(name)
        if scope["method"] not in ("GET", "HEAD"):
            await _send(send, 405, b"method not allowed", [(b"allow", b"GET, HEAD")])
            return
        if found is None:
            await _send(send, 404, f"no asset named {name!r}".encode(), [])
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        pinned = f"v={found.version}" in query.split("&")
        caching = [
            (b"etag", found.etag.encode()),
            (b"cache-control", (LONG_CACHE if pinned else REVALIDATE).encode()),
            (b"access-control-allow-origin", b"*"),
        ]
        if headers.get(b"if-none-match", b"").decode("latin-1") in (found.etag, f"W/{found.etag}"):
            await _send(send, 304, b"", caching, head=True)
            return
        kind = TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")
        await _send(
            send,
            200,
            found.body,
            [(b"content-type", kind.encode()), *caching],
            head=scope["method"] == "HEAD",
        )


def mounted_path(scope: Scope) -> str:
    """The request's path below the point where this app is mounted (``""`` at that point)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, head: bool = False
) -> None:
    secure = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS if k != "Content-Security-Policy"]
    if status >= 400:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), *headers]
    start = [*headers, *secure, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head or status == 304 else body})
