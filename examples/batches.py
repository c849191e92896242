"""Batches through the Python client: submit 20 items of which some fail, follow the batch to its
end, retry the failed items, and export every item's result as CSV.

It starts ``underway dev`` (the API and a worker) for its own task on a free port, then talks
to it over HTTP only, with ``underway.Client``.
"""

import asyncio
import csv
import socket
import subprocess
import sys
import time

import underway

app = underway.App("sqlite:///batches.db")


@app.task(name="thumbnail")
async def thumbnail(ctx: underway.Context, photo: str, width: int = 320) -> dict[str, object]:
    ctx.progress(0, 1, message=f"resizing {photo}")
    await asyncio.sleep(0.05)  # resize the photo here
    if photo.endswith("0.jpg") and ctx.attempt == 1:
        raise OSError(f"{photo}: the storage did not answer")
    return {"file": f"{photo}.{width}.jpg", "width": width}


def run_batch(api: str) -> None:
    with underway.Client(api) as client:
        photos = [{"photo": f"img{n}.jpg"} for n in range(20)]
        batch = client.submit_batch("thumbnail", photos, name="thumbnails")
        print("submitted", batch.total, "items:", batch.status)
        while not (batch := client.get_batch(batch.id)).terminal:
            time.sleep(0.25)  # batch.percent, batch.rate, batch.eta_s, batch.running…
        print(batch.status, {status: n for status, n in batch.counts.items() if n})

        print("retried", client.retry_failed(batch.id))
        batch = client.wait_batch(batch.id, timeout=30)
        print(batch.status, {status: n for status, n in batch.counts.items() if n})

        with open("thumbnails.csv", "w", newline="", encoding="utf-8") as file:
            for chunk in client.export(batch.id, "csv"):  # streamed as the server writes it
                file.write(chunk)
    with open("thumbnails.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    first = rows[0]
    print(len(rows), "rows;", first["args.photo"], first["status"], first["attempt"], first["result.file"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(port: int) -> subprocess.Popen[bytes]:
    """``underway --app batches:app dev --port PORT``, once it answers."""
    command = [sys.executable, "-m", "underway", "--app", "batches:app", "dev", "--port", str(port)]
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
        run_batch(f"http://127.0.0.1:{port}/api")
    finally:
        server.terminate()
        server.wait(30)
