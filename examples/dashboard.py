"""underway's dashboard and API mounted into your own FastAPI app, behind your own login.

``python dashboard.py`` checks the pages and the API, then stops; ``python dashboard.py --serve``
serves http://127.0.0.1:8000/underway/ until Ctrl-C.
"""

import asyncio
import sys

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.requests import HTTPConnection

import underway
from underway.auth import Principal
from underway.web import API, Server

app = underway.App("sqlite:///dashboard.db")


@app.task(name="resize")
async def resize(ctx: underway.Context, photos: int) -> int:
    for _ in ctx.track(range(photos), message="Resizing"):
        await asyncio.sleep(0.05)
    return photos


async def signed_in(conn: HTTPConnection) -> Principal | None:
    """Your app's own login: here, a cookie naming the user (use your real session instead)."""
    user = conn.cookies.get("user")
    return Principal(owner=user, role="admin" if user == "root" else "user") if user else None


jobs = API(app, authenticate=signed_in)
site = FastAPI(lifespan=jobs.lifespan)
site.include_router(jobs.router, prefix="/underway/api")
site.mount("/underway", jobs.dashboard())  # after the router: /underway/api stays the API's


async def main(serve: bool) -> None:
    port = 8000 if serve else 0
    server = Server(uvicorn.Config(site, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    worker = underway.Worker(app)
    working = asyncio.create_task(worker.run())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    if serve:
        print(f"open http://127.0.0.1:{port}/underway/ with a cookie user=<name> (Ctrl-C to stop)")
        await serving
        return
    base = f"http://127.0.0.1:{port}/underway"
    async with httpx.AsyncClient(base_url=base, cookies={"user": "ada"}) as http:
        job = (await http.post("/api/jobs", json={"task": "resize", "args": {"photos": 3}})).json()
        print("ada submitted a job owned by", job["owner"])
        page = await http.get(f"/jobs/{job['id']}")
        print("the job's page:", page.status_code, page.headers["content-type"])
        print("its policy allows scripts from:", policy_part(page.headers, "script-src"))
        print("it finds the API at:", '<meta name="underway-api" content="/underway/api">' in page.text)
    worker.stop()
    await working
    server.should_exit = True
    await serving


def policy_part(headers: httpx.Headers, name: str) -> str:
    parts = (part.strip() for part in headers["content-security-policy"].split(";"))
    return next(part for part in parts if part.startswith(name)).removeprefix(name).strip()


if __name__ == "__main__":
    asyncio.run(main(serve="--serve" in sys.argv))
