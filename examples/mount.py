"""underway's API mounted into your own FastAPI app, then watched over Server-Sent Events."""

import asyncio
import json

import httpx
import uvicorn
from fastapi import FastAPI
from httpx_sse import aconnect_sse

import underway
from underway.web import API, Server

app = underway.App("sqlite:///mount.db")


@app.task(name="resize")
async def resize(ctx: underway.Context, photos: int) -> int:
    for _ in ctx.track(range(photos), message="Resizing"):
        await asyncio.sleep(0.01)
    return photos


jobs = API(app)  # the router, and a lifespan that opens (and closes) the store
site = FastAPI(lifespan=jobs.lifespan)
site.include_router(jobs.router, prefix="/underway")


@site.get("/")
async def home() -> dict[str, str]:
    return {"hello": "this is the host app"}


async def main() -> None:
    server = Server(uvicorn.Config(site, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    worker = underway.Worker(app)
    working = asyncio.create_task(worker.run())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/underway") as http:
        job = (await http.post("/jobs", json={"task": "resize", "args": {"photos": 30}})).json()
        print("submitted", job["status"])
        async with aconnect_sse(http, "GET", f"/jobs/{job['id']}/stream") as stream:
            async for sse in stream.aiter_sse():  # id: <seq>, event: <type>, data: <event JSON>
                if sse.event == "status":
                    print("seq", sse.id, "status", json.loads(sse.data)["data"]["status"])
                elif sse.event == "end":  # the job ended: the server closes the stream
                    print("end", json.loads(sse.data)["status"])
        print("error shape:", (await http.get("/jobs/nope")).json())
    worker.stop()
    await working
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
