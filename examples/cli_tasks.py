"""The tasks of the command line walkthrough in docs/cli.md (``underway --app cli_tasks:app …``)."""

import asyncio

import underway

app = underway.App("sqlite:///cli_tasks.db")


@app.task(name="greet", retries=1)
async def greet(ctx: underway.Context, name: str, times: int = 3) -> str:
    """Greet someone, slowly."""
    for _ in ctx.track(range(times), message=f"Greeting {name}"):
        await asyncio.sleep(0.1)
    ctx.log.info("greeted %s %d times", name, times)
    return f"hello, {name}"


@app.task(name="deploy")
async def deploy(ctx: underway.Context, version: str) -> dict[str, object]:
    """Ask before deploying."""
    go = await ctx.ask(f"Deploy {version} to production?", options=["yes", "no"])
    return {"version": version, "deployed": go == "yes"}
