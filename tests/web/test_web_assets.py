"""The browser files at /assets: public, cached by ETag, immutable under their version, and the
same bytes as the npm package in js/."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import HTTPConnection
from web_support import LiveServer, StartServer

import underway
from underway.auth import Principal
from underway.web import API
from underway.web.assets import FILES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_served_with_an_etag_and_revalidates_with_304(live: LiveServer, name: str) -> None:
    plain = httpx.Client(base_url=live.base, timeout=10, trust_env=False)
    live.clients.append(plain)
    first = plain.get(f"/assets/{name}")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/javascript; charset=utf-8"
    assert first.content == (ROOT / "underway" / "web" / "static" / name).read_bytes()
    assert first.headers["cache-control"] == "no-cache"
    assert first.headers["access-control-allow-origin"] == "*"
    assert first.headers["x-content-type-options"] == "nosniff"
    etag = first.headers["etag"]
    again = plain.get(f"/assets/{name}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    version = etag.strip('"')
    pinned = plain.get(f"/assets/{name}", params={"v": version})
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert plain.get(f"/assets/{name}", params={"v": "old"}).headers["cache-control"] == "no-cache"
    assert live.web.state.underway.assets.url(name) == f"/assets/{name}?v={version}"


def test_unknown_files_and_writes_are_refused(live: LiveServer) -> None:
    plain = httpx.Client(base_url=live.base, timeout=10, trust_env=False)
    live.clients.append(plain)
    assert plain.get("/assets/../pyproject.toml").status_code == 404
    assert plain.get("/assets/nothing.js").status_code == 404
    assert plain.post("/assets/underway.js").status_code == 405


async def admin_with_letmein(conn: HTTPConnection) -> Principal | None:
    return (
        Principal(owner="root", role="admin")
        if conn.headers.get("authorization") == "Bearer letmein"
        else None
    )


def test_assets_need_no_principal_when_auth_is_on(start: StartServer) -> None:
    live = start(authenticate=admin_with_letmein, headers={"Authorization": "Bearer letmein"}, auth="on")
    plain = httpx.Client(base_url=live.base, timeout=10, trust_env=False)
    live.clients.append(plain)
    assert plain.get("/api/jobs").status_code == 401
    assert plain.get("/assets/underway.js").status_code == 200


def test_a_host_app_mounts_the_assets_under_its_own_prefix(tmp_path: Path) -> None:
    jobs = API(underway.App(f"sqlite:///{tmp_path / 'host.db'}"))
    site = FastAPI()
    site.mount("/underway/assets", jobs.assets)

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=site)
        async with httpx.AsyncClient(transport=transport, base_url="http://host") as client:
            return await client.get(path)

    assert asyncio.run(get("/underway/assets/underway-elements.js")).status_code == 200
    url = jobs.assets.url("underway.js", "/underway/assets")
    assert url.startswith("/underway/assets/underway.js?v=")


@pytest.mark.parametrize("name", FILES)
def test_the_npm_package_holds_the_same_files(name: str) -> None:
    served = (ROOT / "underway" / "web" / "static" / name).read_bytes()
    packaged = ROOT / "js" / name
    assert packaged.read_bytes() == served, f"js/{name} differs: cp underway/web/static/{name} js/"


def test_the_npm_package_and_underway_js_carry_the_python_version() -> None:
    package = json.loads((ROOT / "js" / "package.json").read_text(encoding="utf-8"))
    assert package["version"] == underway.__version__
    script = (ROOT / "underway" / "web" / "static" / "underway.js").read_text(encoding="utf-8")
    assert f'export const VERSION = "{underway.__version__}";' in script
