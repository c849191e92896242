"""Questions: a task asks, the job waits (without holding a slot), an answer resumes it."""

import asyncio

import underway

app = underway.App("sqlite:///questions.db", settings=underway.Settings(concurrency=1))


@app.task(retries=1, retry_delay=0.1)
async def publish(ctx: underway.Context, documents: int) -> dict[str, object]:
    answer = await ctx.ask(f"Publish {documents} documents?", options=["yes", "no"])
    print(f"attempt {ctx.attempt}: the answer is {answer!r}")
    if ctx.attempt == 1:
        raise ConnectionError("lost the connection after asking")  # the re-run asks again…
    reviewer = await ctx.ask("Who reviewed them?", key="reviewer")  # …and gets stored answers
    try:
        notify = await ctx.ask("Notify subscribers?", options=[True, False], timeout=0.3)
    except TimeoutError:
        notify = False  # nobody answered in time: the job is running again
    return {"published": answer == "yes", "reviewer": reviewer, "notify": notify}


@app.task
async def quick(ctx: underway.Context) -> str:
    return "ran while the other job was waiting"


async def answer_questions(job: underway.Job) -> None:
    async for event in app.watch(job.id):
        if event.type is underway.EventType.PROMPT:
            print(f"prompt {event.data}")
            if event.data["key"] == "q1":
                try:
                    await app.answer(job.id, "maybe")
                except underway.InvalidArguments as exc:
                    print("refused:", exc.message)
                await app.answer(job.id, "yes")
            elif event.data["key"] == "reviewer":
                await app.answer(job.id, "Ada")
        elif event.type is underway.EventType.STATUS:
            data = event.data
            print("status", data["status"], data["attempt"], data.get("reason", ""))
        elif event.type is underway.EventType.ANSWER:
            print(f"answer {event.data}")


async def main() -> None:
    job = await publish.submit(documents=12)
    other = await quick.submit()
    worker = underway.Worker(app)  # one slot: quick runs while publish waits
    running = asyncio.create_task(worker.run())
    print("quick:", (await app.wait(other.id, timeout=10)).result)
    await answer_questions(job)
    done = await app.get(job.id)
    print(done.status.value, done.result, done.answers)
    worker.stop()
    await running
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
