"""The Python client: submit, watch, answer, list and wait through a server's HTTP API.

It starts ``underway dev`` (the API and a worker) for its own tasks on a free port, then talks
to it over HTTP only, with ``underway.Client`` and ``underway.AsyncClient``.
"""

import asyncio
import socket
import subprocess
import sys
import time

import underway

app = underway.App("sqlite:///client.db")


@app.task(name="report")
async def report(ctx: underway.Context, pages: int) -> dict[str, object]:
    for page in range(1, pages + 1):
        ctx.log.info(f"rendered page {page}")
        await asyncio.sleep(0.05)
    emailed = await ctx.ask("Email the report?", options=["yes", "no"]) == "yes"
    return {"pages": pages, "emailed": emailed}


def follow(api: str) -> None:
    with underway.Client(api) as client:
        job = client.submit("report", {"pages": 3})
        print("submitted", job.status.value)
        for event in client.watch(job.id):  # reconnects and resumes by itself
            print(event.seq, event.type.value, event.data)
            if event.type is underway.EventType.PROMPT:
                client.answer(job.id, "yes")
        print("result", client.get(job.id).result)
        try:
            client.get("no-such-job")
        except underway.JobNotFound as exc:
            print("refused:", exc)


async def submit_many(api: str) -> None:
    async with underway.AsyncClient(api) as client:
        jobs = [await client.submit("report", {"pages": n}, queue="reports") for n in (1, 2)]
        page = await client.list(queue="reports")
        print("listed", [job.id for job in page.jobs] == [job.id for job in reversed(jobs)])
        print("cancelled", await client.cancel_all(queue="reports"))
        for job in jobs:
            done = await client.wait(job.id, timeout=20)
            print("ended", done.status.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(port: int) -> subprocess.Popen[bytes]:
    """``underway --app client:app dev --port PORT``, once it answers."""
    command = [sys.executable, "-m", "underway", "--app", "client:app", "dev", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    with underway.Client(f"http://127.0.0.1:{port}/api") as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.health()
                return server
            except underway.ServerError:
                if time.monotonic() > deadline or server.poll() is not None:
                    server.kill()
                    raise
                time.sleep(0.05)


if __name__ == "__main__":
    port = free_port()
    server = serve(port)
    try:
        follow(f"http://127.0.0.1:{port}/api")
        asyncio.run(submit_many(f"http://127.0.0.1:{port}/api"))
    finally:
        server.terminate()
        server.wait(30)
