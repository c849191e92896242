"""The dashboard over HTTP: every page path answers the one HTML page under the strict
Content-Security-Policy (nothing inline, nothing evaluated, scripts from its own origin only),
with its ``<meta>`` API and base; other paths are JSON ``not_found`` errors; its static files are
typed, revalidated by ETag and cached for good under their ``?v=``; its own code imports nothing
by a bare name, sets no HTML from strings and evaluates nothing; its vendored libraries record
their versions and licences; and a host app mounts it under a prefix of its own (beside the API's),
or points it at an API elsewhere, with every value it writes into the page HTML-escaped.

The standalone server is a real one (``shared``); the host apps are called through
``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from web_support import LiveServer, assert_error

import underway
from underway.web import API
from underway.web.dashboard import Dashboard

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "underway" / "web" / "static"
DASHBOARD = STATIC / "dashboard"
VENDOR = DASHBOARD / "vendor"

#: The page's policy, written out: any change to it must change this test too.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_PATHS = ["/", "/jobs", "/jobs/x", "/batches", "/batches/y", "/queues", "/overview", "/submit"]
SECURITY = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}
LONG_CACHE = "public, max-age=31536000, immutable"
JS = "text/javascript; charset=utf-8"
STATIC_FILES = {
    "app.js": JS,
    "lib.js": JS,
    "vendor/preact.js": JS,
    "vendor/hooks.js": JS,
    "vendor/htm.js": JS,
    "underway.js": JS,
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


class PageParts(HTMLParser):
    """What the page holds: its ``<meta name=…>`` values, scripts, links, and inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.scripts: list[dict[str, str | None]] = []
        self.script_text: list[str] = []
        self.links: list[dict[str, str | None]] = []
        self.styled: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if "style" in values:
            self.styled.append(tag)
        if tag == "meta" and values.get("name"):
            self.meta[str(values["name"])] = values.get("content") or ""
        elif tag == "script":
            self.scripts.append(values)
            self._in_script = True
        elif tag == "link":
            self.links.append(values)
        elif tag == "style":
            self.styled.append("<style>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)


def parts(html: str) -> PageParts:
    parser = PageParts()
    parser.feed(html)
    parser.close()
    return parser


def plain(live: LiveServer) -> httpx.Client:
    """A client without credentials or extra headers, as a browser opening the page."""
    client = httpx.Client(base_url=live.base, timeout=10, trust_env=False)
    live.clients.append(client)
    return client


def assert_page(response: httpx.Response, policy: str = POLICY) -> PageParts:
    """The dashboard's HTML page, with its policy and headers; its parts."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == policy
    assert response.headers.get_list("content-security-policy") == [policy]  # not weakened by a second one
    assert response.headers["cache-control"] == "no-cache"
    for name, value in SECURITY.items():
        assert response.headers[name] == value, name
    found = parts(response.text)
    assert [s.get("type") for s in found.scripts] == ["module"]
    assert "".join(found.script_text).strip() == "", "an inline script"
    assert not found.styled, f"inline styles on {found.styled}"
    return found


# -- the standalone server -------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGE_PATHS)
def test_every_page_path_answers_the_page_under_the_strict_policy(shared: LiveServer, path: str) -> None:
    page = assert_page(plain(shared).get(path))
    assert page.meta["underway-api"] == "/api"
    assert page.meta["underway-base"] == ""
    (script,) = page.scripts
    assert re.fullmatch(r"/static/app\.js\?v=[0-9a-f]{16}", str(script["src"])), script
    hrefs = sorted(str(link["href"]) for link in page.links)
    assert [urlsplit(h).path for h in hrefs] == ["/static/dashboard.css", "/static/favicon.svg"], hrefs


def test_the_policy_forbids_what_an_injected_script_needs(shared: LiveServer) -> None:
    """Read directive by directive: no inline or evaluated code anywhere, no other origin."""
    policy = plain(shared).get("/jobs").headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "*" not in policy


def test_head_answers_the_headers_without_a_body(shared: LiveServer) -> None:
    response = plain(shared).head("/jobs/x")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-security-policy"] == POLICY


@pytest.mark.parametrize("path", ["/nothing", "/jobsx", "/static", "/api/nothing", "/api/jobs/x/nothing"])
def test_unknown_paths_are_json_not_found_errors(shared: LiveServer, path: str) -> None:
    response = plain(shared).get(path)
    assert_error(response, 404, "not_found")
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/jobs/x", "/submit"])
def test_a_write_to_a_page_is_refused(shared: LiveServer, path: str) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = plain(shared).request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == "GET, HEAD"
        assert "text/html" not in response.headers["content-type"]


@pytest.mark.parametrize(("name", "kind"), STATIC_FILES.items())
def test_static_files_are_typed_revalidated_and_cached_under_their_version(
    shared: LiveServer, name: str, kind: str
) -> None:
    client = plain(shared)
    first = client.get(f"/static/{name}")
    assert first.status_code == 200
    assert first.headers["content-type"] == kind
    expected = STATIC / name if name == "underway.js" else DASHBOARD / name
    assert first.content == expected.read_bytes()
    assert first.headers["cache-control"] == "no-cache"
    assert first.headers["x-content-type-options"] == "nosniff"
    etag = first.headers["etag"]
    again = client.get(f"/static/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    version = etag.strip('"')
    assert client.get(f"/static/{name}", params={"v": version}).headers["cache-control"] == LONG_CACHE
    assert client.get(f"/static/{name}", params={"v": "0" * 16}).headers["cache-control"] == "no-cache"


def test_the_pages_urls_are_the_versions_cached_for_good(shared: LiveServer) -> None:
    client = plain(shared)
    page = parts(client.get("/").text)
    urls = [str(page.scripts[0]["src"]), *(str(link["href"]) for link in page.links)]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == LONG_CACHE, url


@pytest.mark.parametrize(
    "path", ["/static/index.html", "/static/", "/static/nothing.js", "/static/../pyproject.toml"]
)
def test_the_page_template_and_unknown_files_are_not_served(shared: LiveServer, path: str) -> None:
    response = plain(shared).get(path)
    assert response.status_code == 404
    assert "{{api}}" not in response.text


def test_static_files_refuse_writes(shared: LiveServer) -> None:
    assert plain(shared).post("/static/app.js").status_code == 405


# -- what the dashboard's files may hold ----------------------------------------------------------


def own_files(*suffixes: str) -> list[Path]:
    """The dashboard's own files (not the vendored libraries)."""
    return sorted(
        path for path in DASHBOARD.rglob("*") if path.suffix in suffixes and VENDOR not in path.parents
    )


def module_files() -> list[Path]:
    return sorted(DASHBOARD.rglob("*.js"))


IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*\(?\s*(["'])([^"'\n]+)\1""")
COMMENT = re.compile(r"/\*.*?\*/|(?:^|(?<=\s))//[^\n]*", re.S)


def imports_of(path: Path) -> list[str]:
    return [match.group(2) for match in IMPORT.finditer(path.read_text(encoding="utf-8"))]


def test_every_module_imports_relative_paths_only_and_each_is_served(shared: LiveServer) -> None:
    client = plain(shared)
    seen: dict[str, list[str]] = {}
    for path in module_files():
        name = path.relative_to(DASHBOARD).as_posix()
        found = seen[name] = imports_of(path)
        bare = [spec for spec in found if not spec.startswith(("./", "../"))]
        assert not bare, f"{name} imports by bare name (the browser cannot resolve them): {bare}"
        for spec in found:
            target = urlsplit(urljoin(f"/static/{name}", spec)).path
            assert client.get(target).status_code == 200, f"{name} imports {spec}: {target} is not served"
    # The parser sees the imports (minified or not): it would see a bare one too.
    assert "./preact.js" in seen["vendor/hooks.js"]
    assert "./underway.js" in seen["app.js"]
    assert "./vendor/preact.js" in seen["lib.js"]


def test_the_import_parser_finds_bare_imports() -> None:
    sample = 'import{h}from"preact";import x from "./x.js";export * from \'htm\';const m = import("uplot");'
    specs = [m.group(2) for m in IMPORT.finditer(sample)]
    assert specs == ["preact", "./x.js", "htm", "uplot"]


def vendor_table() -> list[dict[str, str]]:
    lines = (VENDOR / "README.md").read_text(encoding="utf-8").splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    header, _rule, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def test_the_vendored_libraries_record_their_versions_and_licences() -> None:
    table = vendor_table()
    packages = {row["package"]: row for row in table}
    assert set(packages) == {"preact", "htm", "uplot"}
    assert packages["preact"]["version"].startswith("10.29.")
    listed: set[str] = set()
    for row in table:
        assert re.fullmatch(r"\d+\.\d+\.\d+", row["version"]), row
        assert row["licence"], row
        licence = VENDOR / f"LICENSE-{row['package']}.txt"
        assert licence.is_file(), f"no {licence.name}"
        assert len(licence.read_text(encoding="utf-8")) > 500, f"{licence.name} is not a licence's text"
        assert row["npm integrity of the tarball"].strip("`").startswith("sha512-"), row
        files = [name.strip() for name in row["files"].split(",")]
        for name in files:
            assert (VENDOR / name).is_file(), f"{row['package']}: {name} is missing"
        listed.update(files)
    vendored = {p.name for p in VENDOR.iterdir() if p.suffix in (".js", ".css")}
    assert vendored == listed, f"vendored files not in the README: {vendored - listed}"


FORBIDDEN = (
    "innerHTML",
    "outerHTML",
    "insertAdjacentHTML",
    "dangerouslySetInnerHTML",
    "eval(",
    "new Function",
)


def code_of(path: Path) -> str:
    """A file without its comments (which may name what the code must not do)."""
    text = path.read_text(encoding="utf-8")
    return COMMENT.sub("", text) if path.suffix == ".js" else text


@pytest.mark.parametrize("path", own_files(".js", ".html"), ids=lambda p: p.name)
def test_the_dashboards_own_code_sets_no_html_and_evaluates_nothing(path: Path) -> None:
    code = code_of(path)
    found = [word for word in FORBIDDEN if word in code]
    assert not found, f"{path.name} uses {found}"
    assert "document.write" not in code


def test_the_comment_stripper_keeps_code() -> None:
    sample = 'const u = "http://x"; // innerHTML here\n/* eval( */ el.innerHTML = s;'
    assert "innerHTML" in COMMENT.sub("", sample)
    assert "http://x" in COMMENT.sub("", sample)
    assert "eval(" not in COMMENT.sub("", sample)


def test_the_page_template_has_no_inline_script_or_style() -> None:
    template = (DASHBOARD / "index.html").read_text(encoding="utf-8")
    found = parts(template)
    assert found.scripts
    assert all(script.get("src") for script in found.scripts)
    assert "".join(found.script_text).strip() == ""
    assert 'style="' not in template
    assert not found.styled
    assert re.search(r"\son[a-z]+\s*=", template) is None, "an inline event handler"


# -- mounted by a host app ------------------------------------------------------------------------


def host_site(tmp_path: Path, **dashboard: Any) -> tuple[FastAPI, API]:
    """A host app as docs/browser.md and the dashboard's docstring tell: the router under
    ``/underway/api``, the assets under ``/underway/assets``, the dashboard at ``/underway``."""
    api = API(underway.App(f"sqlite:///{tmp_path / 'host.db'}"))
    site = FastAPI()

    @site.get("/")
    async def home() -> dict[str, str]:
        return {"hello": "the host app"}

    site.include_router(api.router, prefix="/underway/api")
    site.mount("/underway/assets", api.assets)
    site.mount("/underway", api.dashboard(**dashboard))  # after the router
    return site, api


def call(
    site: Any, *requests: tuple[str, str], api: API | None = None, **transport: Any
) -> list[httpx.Response]:
    """The responses of ``site`` to ``(method, path)`` requests (in the API's lifespan, if any)."""

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=site, **transport), base_url="http://host"
        ) as client:
            if api is None:
                return [await client.request(method, path) for method, path in requests]
            async with api.lifespan():
                return [await client.request(method, path) for method, path in requests]

    return asyncio.run(go())


def test_a_host_app_serves_the_pages_under_its_prefix_beside_the_api(tmp_path: Path) -> None:
    site, api = host_site(tmp_path)
    home, job, batch, me, unknown, nothing, files, script, asset = call(
        site,
        ("GET", "/underway/"),
        ("GET", "/underway/jobs/x"),
        ("GET", "/underway/batches/y"),
        ("GET", "/underway/api/me"),
        ("GET", "/underway/api/nothing"),
        ("GET", "/underway/nothing"),
        ("GET", "/underway/static/index.html"),
        ("GET", "/underway/static/app.js"),
        ("GET", "/underway/assets/underway.js"),
        api=api,
    )
    for response in (home, job, batch):
        page = assert_page(response)
        assert page.meta["underway-api"] == "/underway/api"
        assert page.meta["underway-base"] == "/underway"
        urls = [str(page.scripts[0]["src"]), *(str(link["href"]) for link in page.links)]
        assert all(url.startswith("/underway/static/") for url in urls), urls
    assert me.status_code == 200  # the router's route wins over the dashboard's mount
    assert me.json()["via"] == "anonymous"
    assert_error(unknown, 404, "not_found")
    assert_error(nothing, 404, "not_found")
    assert files.status_code == 404
    assert script.status_code == 200
    assert script.headers["content-type"] == JS
    assert script.content == (DASHBOARD / "app.js").read_bytes()
    assert asset.status_code == 200
    # The page's versioned URLs are the files the host serves, cached for good.
    page = parts(job.text)
    (versioned,) = call(site, ("GET", str(page.scripts[0]["src"])))
    assert versioned.status_code == 200
    assert versioned.headers["cache-control"] == LONG_CACHE


def test_the_host_apps_own_routes_are_left_alone(tmp_path: Path) -> None:
    site, _api = host_site(tmp_path)
    (home, post) = call(site, ("GET", "/"), ("POST", "/underway/jobs"))
    assert home.json() == {"hello": "the host app"}
    assert post.status_code == 405


@pytest.mark.parametrize(
    ("api_url", "meta", "connect"),
    [
        ("https://api.example/", "https://api.example", "'self' https://api.example"),
        (
            "https://api.example:8443/v1/jobs/",
            "https://api.example:8443/v1/jobs",
            "'self' https://api.example:8443",
        ),
        ("/elsewhere/api", "/elsewhere/api", "'self'"),
    ],
)
def test_an_api_url_given_explicitly_is_named_and_allowed(
    tmp_path: Path, api_url: str, meta: str, connect: str
) -> None:
    site, _api = host_site(tmp_path, api_url=api_url)
    (response,) = call(site, ("GET", "/underway/queues"))
    page = assert_page(response, POLICY.replace("connect-src 'self'", f"connect-src {connect}"))
    assert page.meta["underway-api"] == meta
    assert page.meta["underway-base"] == "/underway"


def test_values_written_into_the_page_are_html_escaped(tmp_path: Path) -> None:
    hostile = "/api\"><script>alert(1)</script><x a='&"
    (response,) = call(Dashboard(api_url=hostile), ("GET", "/jobs/x"))
    assert response.status_code == 200
    assert "<script>alert(1)" not in response.text
    assert "&quot;&gt;&lt;script&gt;" in response.text
    page = parts(response.text)
    assert page.meta["underway-api"] == hostile  # read back as it was given
    assert len(page.scripts) == 1
    # A mount point of the host's own: its prefix lands in the page escaped too.
    root = '/x"<y>'
    (mounted,) = call(Dashboard(), ("GET", '/x"<y>/jobs'), root_path=root)
    assert mounted.status_code == 200, mounted.text
    assert '"<y>' not in mounted.text
    found = parts(mounted.text)
    assert found.meta["underway-base"] == root
    assert found.meta["underway-api"] == f"{root}/api"
    assert len(found.scripts) == 1
