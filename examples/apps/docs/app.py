"""Document upload with AI extraction, followed live over underway's WebSocket.

    python examples/apps/docs/app.py            # then open http://127.0.0.1:8000/

A FastAPI app of its own (pages, ``POST /documents``, a per-browser identity cookie) that mounts
underway's API under ``/underway/api`` and its browser files under ``/underway/assets``. The "AI"
is a deterministic local stand-in. With ``--no-worker``, workers run apart:
``underway --app examples.apps.docs.app:app worker`` (from the same folder, for ``docs.db`` and
``docs-uploads/``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.requests import HTTPConnection

import underway
from underway.auth import Principal
from underway.web import API, Server

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
UPLOADS = Path(os.environ.get("DOCS_UPLOADS", "docs-uploads"))  # shared by the server and workers
PACE = float(os.environ.get("DOCS_PACE", "0.15"))  # seconds per unit of the stand-in model's work
MODULE = "examples.apps.docs.app"  # for `underway --app examples.apps.docs.app:app worker`
MAX_UPLOAD = 5 * 1024 * 1024
COOKIE = "docs_user"
PAGE_CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
DOCUMENT_ID = re.compile(r"[0-9a-f]{32}")

app = underway.App(os.environ.get("UNDERWAY_URL", "sqlite:///docs.db"))


# -- the user: a random identity per browser -----------------------------------------------------


def owner_of(conn: HTTPConnection) -> str | None:
    """The owner the browser's cookie names (a digest of it, so the owner shown is no secret)."""
    cookie = conn.cookies.get(COOKIE, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie):
        return None
    return "user-" + hashlib.sha256(cookie.encode()).hexdigest()[:24]


async def authenticate(conn: HTTPConnection) -> Principal | None:
    """underway's hook: the browser's cookie is its user; no cookie answers 401."""
    owner = owner_of(conn)
    return Principal(owner=owner, role="user") if owner else None


def folder_of(owner: str) -> Path:
    return UPLOADS / owner


# -- the task: a deterministic stand-in for an AI model -------------------------------------------


class ExtractionError(Exception):
    """The document cannot be extracted: the job fails with this message."""


def pdf_text(data: bytes) -> tuple[str, int]:
    """A crude reading of a PDF: the strings shown with ``Tj``/``TJ``, and its page count."""
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
    strings = re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*T[jJ]", data)
    text = "\n".join(s.replace(rb"\(", b"(").replace(rb"\)", b")").decode("latin-1") for s in strings)
    return text, pages


def read_document(path: Path) -> tuple[str, int | None]:
    data = path.read_bytes()
    if path.suffix == ".pdf":
        return pdf_text(data)
    return data.decode("utf-8", errors="replace"), None


def fields_of(text: str) -> dict[str, Any]:
    """Title, word count, first sentence and entities (capitalised words) of ``text``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    words = re.findall(r"[\w'-]+", text)
    sentence = re.search(r"[^.!?]*[.!?]", " ".join(lines[1:] or lines))
    names = re.findall(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]{2,}\b", " ".join(lines[1:]))
    entities = [name for name, _ in collections.Counter(names).most_common(5)]
    return {
        "title": lines[0][:120],
        "words": len(words),
        "first_sentence": (sentence.group(0).strip() if sentence else "")[:300],
        "entities": entities,
    }


@app.task(name="extract")
async def extract(ctx: underway.Context, document: str, name: str) -> dict[str, Any]:
    """Read the uploaded ``document`` of the job's owner, extract its fields, check them."""
    if not DOCUMENT_ID.fullmatch(document) or ctx.job.owner is None:
        raise ExtractionError("no such document")
    matches = list(folder_of(ctx.job.owner).glob(f"{document}.*"))
    if not matches:
        raise ExtractionError("the uploaded file is gone")

    ctx.step("Reading", steps=3)
    text, pages = read_document(matches[0])
    for unit in range(1, 6):
        await asyncio.sleep(PACE)
        ctx.progress(unit, 5, message="Reading")
    ctx.log.info("read %s: %d characters", name, len(text))
    if not text.strip():
        raise ExtractionError(f"{name} is empty: there is no text to extract")

    ctx.step("Extracting")
    for unit in range(1, 11):
        await asyncio.sleep(PACE)
        ctx.progress(unit, 10, message="Extracting")
    fields = fields_of(text)
    ctx.log.info("found %d words and %d entities", fields["words"], len(fields["entities"]))

    ctx.step("Checking")
    refused = [number for number, line in enumerate(text.splitlines(), 1) if "FAIL" in line]
    for unit in range(1, 6):
        await asyncio.sleep(PACE)
        if refused and unit == 3:
            ctx.log.warning("line %d says FAIL", refused[0])
            raise ExtractionError(f"the model refused {name}: line {refused[0]} says FAIL")
        ctx.progress(unit, 5, message="Checking")
    if pages is not None:
        fields["pages"] = pages
    return fields


# -- the web app -------------------------------------------------------------------------------


# With a hook, authentication is on; the API's lifespan also runs a worker (main(): --no-worker).
jobs = API(app, authenticate=authenticate, with_worker=True)


site = FastAPI(lifespan=jobs.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
site.include_router(jobs.router, prefix="/underway/api")
site.mount("/underway/assets", jobs.assets, name="underway-assets")
site.mount("/static", StaticFiles(directory=STATIC), name="static")


def page(name: str, request: Request) -> Response:
    """An HTML page under a strict CSP; a browser without an identity gets one."""
    response = FileResponse(STATIC / name, media_type="text/html")
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Cache-Control"] = "no-store"
    if owner_of(request) is None:
        secure = request.url.scheme == "https"
        value = secrets.token_urlsafe(32)
        response.set_cookie(COOKIE, value, max_age=365 * 86400, httponly=True, samesite="lax", secure=secure)
    return response


@site.get("/", include_in_schema=False)
async def upload_page(request: Request) -> Response:
    return page("index.html", request)


@site.get("/extractions", include_in_schema=False)
async def extractions_page(request: Request) -> Response:
    return page("extractions.html", request)


@site.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(status_code=204)


@site.post("/documents", status_code=201)
async def upload(request: Request, name: str) -> JSONResponse:
    """The file is the raw body (``python-multipart`` is not a dependency), its name in ``?name=``:
    stored under the user's folder, then an ``extract`` job, whose id comes back at once."""
    owner = owner_of(request)
    if owner is None:
        raise HTTPException(401, "open the app's page first: it gives this browser an identity")
    if "x-requested-with" not in request.headers:  # a cross-site form cannot send it
        raise HTTPException(403, "the X-Requested-With header is missing")
    name = Path(name.replace("\\", "/")).name[:200]
    suffix = Path(name).suffix.lower()
    if suffix not in (".txt", ".pdf"):
        raise HTTPException(422, "upload a .txt or a .pdf file")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD:
            raise HTTPException(413, f"the file is larger than {MAX_UPLOAD // (1024 * 1024)} MiB")
    document = secrets.token_hex(16)
    folder = folder_of(owner)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{document}{suffix}").write_bytes(bytes(body))
    job = await extract.options(owner=owner).submit(document=document, name=name)
    return JSONResponse({"job": job.id, "document": document, "name": name}, status_code=201)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-worker", action="store_true", help="run workers apart (underway ... worker)")
    options = parser.parse_args()
    jobs.with_worker = not options.no_worker
    worker = f"no worker: run `underway --app {MODULE}:app worker`" if options.no_worker else "a worker"
    print(f"Documents: http://{options.host}:{options.port}/ ({worker})", flush=True)
    Server(uvicorn.Config(site, host=options.host, port=options.port, log_level="warning")).run()


if __name__ == "__main__":
    main()
