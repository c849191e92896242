"""The dashboard: one HTML page whose modules draw every view in the browser, over the API.

``underway server``, ``dev`` and ``demo`` serve it at ``/`` (the API under ``/api``). A host
app mounts it under a prefix of its own, beside the API's::

    api = underway.web.API(app)
    site.include_router(api.router, prefix="/underway/api")
    site.mount("/underway", api.dashboard())  # after the router: the API's routes come first

Every page path below the mount point (``/``, ``/jobs/{id}``, ``/batches``…: :data:`PAGES`)
answers the same HTML page, whose modules draw the view; files are under ``static/``; any other
path is a JSON ``not_found`` error, as the API's. The page holds no script of its own:
it names its API and its own prefix in ``<meta>`` tags and loads ``static/app.js``, under a
Content-Security-Policy that allows scripts, styles and connections from its own origin only.
The files are public (they hold no secret); what the page shows comes from the API, through its
principal.
"""

from __future__ import annotations

import json
from html import escape
from urllib.parse import urlsplit

from starlette.routing import Match, Mount
from starlette.types import Receive, Scope, Send

from .assets import Assets, mounted_path, static_file
from .errors import SECURITY_HEADERS, error_body

#: The folder of the dashboard's files, under ``underway/web/static``.
FOLDER = "dashboard"
#: Files of ``static`` the dashboard serves beside its own (its modules import them).
SHARED = ("underway.js",)
#: The first segment of each page's path (``""``: the jobs page at the mount point itself).
PAGES = frozenset({"", "jobs", "batches", "queues", "overview", "submit"})


def dashboard_url(host: str, port: int) -> str:
    """The URL of a standalone server's dashboard, as a browser on this machine reaches it."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def page_policy(api_url: str) -> str:
    """The page's Content-Security-Policy: nothing inline, nothing evaluated, nothing from
    elsewhere (but the API's origin, when it is on another one)."""
    api_origin = "{0.scheme}://{0.netloc}".format(urlsplit(api_url)) if "://" in api_url else ""
    connect = f"'self' {api_origin}".strip()
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _files() -> dict[str, str]:
    """Every file the dashboard serves under ``static/``, by its name there."""
    found = {name: name for name in SHARED}
    pending = [(static_file(FOLDER), "")]
    while pending:
        folder, prefix = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((entry, f"{prefix}{entry.name}/"))
            elif entry.name != "index.html":
                found[f"{prefix}{entry.name}"] = f"{FOLDER}/{prefix}{entry.name}"
    return found


class Dashboard:
    """The dashboard as an ASGI app (``API.dashboard()`` makes one).

    ``api_url``: where the page finds the API, as the browser sees it; by default ``/api`` under
    the dashboard's own prefix (``/underway/api`` for a dashboard mounted at ``/underway``).
    """

    def __init__(self, api_url: str | None = None) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self.assets = Assets(_files())
        self._template: str | None = None

    def page(self, root: str) -> str:
        """The HTML page for a dashboard mounted at ``root`` (``""`` for the site's root)."""
        if self._template is None:
            self._template = static_file(f"{FOLDER}/index.html").read_text(encoding="utf-8")
        base = root.rstrip("/")
        api = self.api_url or f"{base}/api"
        static = f"{base}/static"
        values = {
            "api": api,
            "base": base,
            "app": self.assets.url("app.js", static),
            "style": self.assets.url("dashboard.css", static),
            "icon": self.assets.url("favicon.svg", static),
        }
        html = self._template
        for name, value in values.items():
            html = html.replace(f"{{{{{name}}}}}", escape(value, quote=True))
        return html

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - mounted for HTTP only
            return
        path = mounted_path(scope)
        root = scope.get("root_path", "")
        if path.startswith("/static/"):
            await self.assets({**scope, "root_path": f"{root}/static"}, receive, send)
            return
        if path.strip("/").split("/", 1)[0] not in PAGES:
            body = json.dumps(error_body("not_found", f"no page or route at {scope['path']}")).encode()
            await _answer(send, 404, body, "application/json", [])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"method not allowed", "text/plain", [(b"allow", b"GET, HEAD")])
            return
        api = self.api_url or f"{root.rstrip('/')}/api"
        body = self.page(root).encode()
        policy = [(b"content-security-policy", page_policy(api).encode()), (b"cache-control", b"no-cache")]
        await _answer(send, 200, body, "text/html; charset=utf-8", policy, head=scope["method"] == "HEAD")


class PageMount(Mount):
    """A ``Mount`` of the dashboard that matches only the dashboard's own paths (its pages and
    ``static/``): routes beside it keep their answers for the rest, so a wrong method on an API
    route is still a 405, where a mount of everything would answer it as a missing page."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL:
            first = mounted_path({**scope, **child}).strip("/").split("/", 1)[0]
            if first not in PAGES and first != "static":
                return Match.NONE, {}
        return match, child


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    kind: str,
    headers: list[tuple[bytes, bytes]],
    *,
    head: bool = False,
) -> None:
    secure = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS if k != "Content-Security-Policy"]
    start = [
        (b"content-type", f"{kind}; charset=utf-8".encode() if "charset" not in kind else kind.encode()),
        *headers,
        *secure,
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else body})
