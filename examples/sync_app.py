"""A sync program (a Flask or Django view, a script): the blocking ``*_sync`` twins."""

import asyncio
import threading
import time

import underway

app = underway.App("sqlite:///sync_app.db")


@app.task(name="thumbnails")  # a name that does not depend on how the module was loaded
def thumbnails(ctx: underway.Context, photos: int) -> dict[str, object]:  # sync: runs in a thread
    for _ in ctx.track(range(photos), message="Making thumbnails"):
        time.sleep(0.01)
    upload = ctx.ask_sync("Upload the thumbnails?", options=["yes", "no"])  # blocks this thread
    return {"photos": photos, "uploaded": upload == "yes"}


def run_worker() -> None:
    """In production this is another process: ``underway --app sync_app:app worker``."""
    asyncio.run(underway.Worker(app, burst=True).run())


def main() -> None:
    job = thumbnails.submit_sync(photos=20)
    print("submitted", job.task, job.status.value)
    worker = threading.Thread(target=run_worker)
    worker.start()

    while (job := app.get_sync(job.id)).status is not underway.Status.WAITING:
        time.sleep(0.05)
    print("asks:", job.prompt)
    app.answer_sync(job.id, "yes")

    job = app.wait_sync(job.id, timeout=10)
    print(job.status.value, job.result, job.progress)
    print([j.status.value for j in app.list_jobs_sync(status=["succeeded"], limit=1)])
    worker.join()
    app.close_sync()


if __name__ == "__main__":
    main()
