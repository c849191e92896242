"""A chat assistant whose messages can start jobs that need the user (issue 13, application 2).

    python examples/apps/chat/app.py            # server and worker; open the URL it prints

"book a meeting tomorrow" finds free slots (progress, logs), asks "Which slot?" and books the
one clicked; "summarise <text>" runs in steps and asks nothing; anything else gets a plain answer.
The jobs belong to the chat session: the app's own HttpOnly cookie, which underway's
``authenticate`` hook reads. The page follows them by polling (``transport: "poll"``).

With ``UNDERWAY_URL`` set (PostgreSQL) and ``--no-worker``, workers run as their own processes,
from the repository's root: ``underway --app examples.apps.chat.app:app worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.requests import HTTPConnection

import underway
from underway.auth import Principal
from underway.web import API, Server

HERE = Path(__file__).resolve().parent
URL = os.environ.get("UNDERWAY_URL") or "sqlite:///chat.db"
COOKIE = "chat_session"
#: The page's policy: nothing inline, nothing from elsewhere.
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none'"
#: How long the fake calendar takes per calendar it reads (the job runs ~2 s before it asks).
CALENDAR_DELAY = 0.25

app = underway.App(URL)


# -- the tasks (the outside world is faked: deterministic and offline) --------------------------


def free_slots(request: str) -> list[str]:
    """Three free slots on the day the request names (a stand-in for a calendar service)."""
    lowered = request.lower()
    day = next(
        (
            d.capitalize()
            for d in ("today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday")
            if d in lowered
        ),
        "Tomorrow",
    )
    return [f"{day} 09:30", f"{day} 14:00", f"{day} 16:30"]


@app.task(name="book_meeting")  # no timeout: the user may answer much later
async def book_meeting(ctx: underway.Context, request: str) -> dict[str, Any]:
    """Find free slots in the team's calendars, ask which one, book it."""
    calendars = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Frances"]
    ctx.step("Finding free slots", steps=2)
    slots = ctx.last_checkpoint  # a re-run (after a restart) asks again without reading again
    if slots is None:
        for i, person in enumerate(calendars, 1):
            await asyncio.sleep(CALENDAR_DELAY)  # read one calendar here
            ctx.log.info("read %s's calendar", person)
            ctx.progress(i, len(calendars), message=f"Reading {person}'s calendar")
        slots = free_slots(request)
        ctx.checkpoint(slots)
        ctx.log.info("found %d free slots", len(slots))
    slot = await ctx.ask("Which slot?", options=slots)
    ctx.step("Booking")
    for i in range(1, 4):
        await asyncio.sleep(0.1)  # send the invitations here
        ctx.progress(i, 3, message=f"Inviting {calendars[i - 1]}")
    ctx.log.info("booked %s", slot)
    return {"slot": slot, "reply": f"Booked the meeting for {slot}. Invitations sent."}


@app.task(name="summarise", timeout=600)
async def summarise(ctx: underway.Context, text: str) -> dict[str, Any]:
    """A deterministic stand-in for a language model: steps, progress, no question."""
    words = text.split()
    ctx.step("Reading", steps=2)
    for i in range(1, 6):
        await asyncio.sleep(0.1)
        ctx.progress(i, 5, message="Reading the text")
    ctx.step("Summarising")
    for i in range(1, 4):
        await asyncio.sleep(0.1)
        ctx.progress(i, 3, message="Writing the summary")
    summary = " ".join(words[:12]) + ("…" if len(words) > 12 else "")
    return {
        "summary": summary,
        "reply": f"Summary ({len(words)} words): {summary or '(nothing to summarise)'}",
    }


# -- the chat session: the host app's own cookie, read by underway's hook -----------------------


def session_of(conn: HTTPConnection) -> str | None:
    """The session's random id from its cookie, or None."""
    value = conn.cookies.get(COOKIE, "")
    return value if re.fullmatch(r"[A-Za-z0-9_-]{43}", value) else None


def owner_of(session: str) -> str:
    """The owner jobs record: derived from the session, not the cookie itself, since job JSON
    (``owner``) is readable by the page and the cookie is HttpOnly."""
    return "chat-" + hashlib.sha256(session.encode()).hexdigest()[:32]


async def authenticate(conn: HTTPConnection) -> Principal | None:
    """underway's hook: a chat session owns the jobs it starts; no session answers 401."""
    session = session_of(conn)
    return Principal(owner=owner_of(session), role="user") if session else None


jobs = API(app, authenticate=authenticate)  # its lifespan runs a worker too: serve() sets it


site = FastAPI(lifespan=jobs.lifespan, docs_url=None, redoc_url=None, openapi_url=None)
site.include_router(jobs.router, prefix="/underway/api")
site.mount("/underway/assets", jobs.assets, name="underway-assets")
site.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


@site.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    """The chat page; a first visit gets its session cookie."""
    page = FileResponse(
        HERE / "static" / "index.html",
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
    if session_of(request) is None:
        page.set_cookie(COOKIE, secrets.token_urlsafe(32), httponly=True, samesite="lax", path="/")
    return page


@site.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    return Response(status_code=204)


class Message(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


BOOK = re.compile(r"\b(book|schedule)\b.*\bmeeting\b", re.IGNORECASE | re.DOTALL)
SUMMARISE = re.compile(r"^\s*summari[sz]e\b[\s:,-]*(.*)$", re.IGNORECASE | re.DOTALL)


@site.post("/chat")
async def chat(message: Message, request: Request) -> dict[str, Any]:
    """Answer a message: start a job (returned at once) or reply plainly."""
    session = session_of(request)
    if session is None:
        raise HTTPException(401, "no chat session: reload the page")
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise HTTPException(403, "send JSON")  # a cross-site form cannot
    owner = owner_of(session)
    if BOOK.search(message.text):
        job = await book_meeting.options(owner=owner).submit(request=message.text)
        return {"reply": "Looking for free slots…", "job": job.to_dict()}
    found = SUMMARISE.match(message.text)
    if found:
        job = await summarise.options(owner=owner).submit(text=found.group(1))
        return {"reply": "Summarising…", "job": job.to_dict()}
    return {"reply": 'I can book a meeting ("book a meeting tomorrow") or summarise a text ("summarise …").'}


# -- one command ----------------------------------------------------------------------------------


async def serve(host: str, port: int, with_worker: bool) -> None:
    jobs.with_worker = with_worker
    server = Server(uvicorn.Config(site, host=host, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()[1]
        store = URL.partition(":")[0]
        worker = "a worker in this process" if with_worker else "no worker (run `underway … worker`)"
        print(f"chat: http://{host}:{bound}/ · store {store} · {worker}", flush=True)
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description="The chat assistant with jobs that need the user.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (default 8000)")
    parser.add_argument("--no-worker", action="store_true", help="run workers as separate processes")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, not args.no_worker))


if __name__ == "__main__":
    main()
