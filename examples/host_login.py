"""Your app's own login in front of underway's API: each user sees only their own jobs."""

import asyncio
import hashlib
import hmac
import json
import logging
import secrets

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from httpx_sse import aconnect_sse
from pydantic import BaseModel
from starlette.requests import HTTPConnection

import underway
from underway.auth import Principal
from underway.web import API, Server
from underway.web.server import RedactTokens

app = underway.App("sqlite:///host_login.db")
SESSION_SECRET = secrets.token_bytes(32)  # the host app's own secret, from its settings
USERS = {"ada": "correct horse", "grace": "battery staple"}  # hash passwords in a real app


@app.task(name="report")
async def report(ctx: underway.Context, pages: int) -> int:
    for _ in ctx.track(range(pages), message="Writing"):
        await asyncio.sleep(0.01)
    return pages


def session_for(user: str) -> str:
    """The host's session token: the user name and an HMAC of it."""
    return f"{user}.{hmac.new(SESSION_SECRET, user.encode(), hashlib.sha256).hexdigest()}"


def logged_in_user(conn: HTTPConnection) -> str | None:
    """The user whose session token the request carries (``Authorization: Bearer``), or None."""
    scheme, _, session = conn.headers.get("authorization", "").partition(" ")
    user = session.rpartition(".")[0]
    if scheme.lower() != "bearer" or not user:
        return None
    return user if hmac.compare_digest(session_for(user).encode(), session.encode()) else None


async def authenticate(conn: HTTPConnection) -> Principal | None:
    """underway's hook: a logged-in user owns what they submit; None answers 401."""
    user = logged_in_user(conn)
    return Principal(owner=user, role="user") if user else None


jobs = API(app, authenticate=authenticate)  # auth=auto: on, since there is a hook
site = FastAPI(lifespan=jobs.lifespan)
site.include_router(jobs.router, prefix="/underway")


class Login(BaseModel):
    user: str
    password: str


@site.post("/login")
async def login(body: Login) -> dict[str, str]:
    password = USERS.get(body.user, "")
    if not password or not hmac.compare_digest(password.encode(), body.password.encode()):
        raise HTTPException(401, "wrong user or password")
    return {"session": session_for(body.user)}


@site.get("/watch/{job_id}")
async def watch(job_id: str, request: Request) -> dict[str, str]:
    """What the job's page needs: EventSource cannot send Authorization, so the page gets a
    short-lived token for this one job and passes it as ?token=."""
    user = logged_in_user(request)
    if user is None:
        raise HTTPException(401, "log in first")
    try:
        token = await app.stream_token(user, job=job_id)  # 404 for another user's job
    except underway.JobNotFound:
        raise HTTPException(404, "no such job") from None
    return {"stream": f"/underway/jobs/{job_id}/stream?token={token.token}"}


async def log_in(http: httpx.AsyncClient, user: str) -> dict[str, str]:
    session = (await http.post("/login", json={"user": user, "password": USERS[user]})).json()["session"]
    return {"Authorization": f"Bearer {session}"}


async def statuses_seen(http: httpx.AsyncClient, url: str) -> list[str]:
    """What a browser's EventSource on ``url`` gets: no header, only the token in the URL."""
    seen: list[str] = []
    async with aconnect_sse(http, "GET", url) as stream:
        async for sse in stream.aiter_sse():
            if sse.event == "status":
                seen.append(json.loads(sse.data)["data"]["status"])
    return seen


async def tour(http: httpx.AsyncClient) -> None:
    sessions = {user: await log_in(http, user) for user in ("ada", "grace")}
    own: dict[str, str] = {}
    for user, headers in sessions.items():
        job = await http.post(
            "/underway/jobs", json={"task": "report", "args": {"pages": 20}}, headers=headers
        )
        own[user] = job.json()["id"]
        print(user, "submitted a job:", job.status_code, "owner", job.json()["owner"])
    for user, headers in sessions.items():
        listed = (await http.get("/underway/jobs", headers=headers)).json()["jobs"]
        print(user, "lists the jobs of", [job["owner"] for job in listed])
    other = await http.get(f"/underway/jobs/{own['grace']}", headers=sessions["ada"])
    print("ada reads grace's job:", other.status_code, other.json()["error"]["code"])
    nobody = await http.get("/underway/jobs")
    print("without a login:", nobody.status_code, nobody.json()["error"]["code"])
    page = (await http.get(f"/watch/{own['ada']}", headers=sessions["ada"])).json()
    print("ada's page watches with a token:", " ".join(await statuses_seen(http, page["stream"])))
    refused = await http.get(f"/watch/{own['grace']}", headers=sessions["ada"])
    print("a token for grace's job, asked by ada:", refused.status_code)
    _, key = await app.accounts.create_key("ops", role="admin")  # as `underway keys create` does
    admin = {"Authorization": f"Bearer {key}"}
    everyone = (await http.get("/underway/jobs", headers=admin)).json()["jobs"]
    print("an admin key, beside the login, lists", sorted(job["owner"] for job in everyone))
    one = (await http.get("/underway/jobs", params={"owner": "grace"}, headers=admin)).json()["jobs"]
    print("and with ?owner=grace", [job["owner"] for job in one])


async def main() -> None:
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())  # ?token=uwt.… is logged as ?token=…
    server = Server(uvicorn.Config(site, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    worker = underway.Worker(app)
    working = asyncio.create_task(worker.run())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        await tour(http)
    worker.stop()
    await working
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
