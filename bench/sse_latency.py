"""Progress -> SSE client latency, the worker and the server in separate processes.

Each run, on a fresh SQLite file: ``underway server`` and ``underway worker`` subprocesses. For
each variant, one ``progress_clock`` job (bench/apps.py) calls ``ctx.progress(i, n,
message=f"{time.time():.6f}")`` every ``every`` seconds; this process streams
``/api/jobs/{id}/stream`` with httpx + httpx-sse and, for every ``progress`` event it receives,
takes ``receive time - message time``. Progress is coalesced (at most one write per job per
``progress_interval``, 50 ms by default), so the latency is measured from the call whose value
was written. It is split with the event's ``at`` (the time of the worker's write transaction,
millisecond precision, truncated): ``call -> write`` (waiting for the throttle, and the
worker's flusher) and ``write -> client`` (commit, the server noticing it, the bus, SSE).

Variants:

* ``every 20 ms``: calls every 20 ms, so ~2 of 3 calls are coalesced away and the written one
  waited 0-20 ms for its write slot;
* ``every 60 ms``: calls slower than ``progress_interval``, so each call is written at once
  (the throttle's leading edge): the whole pipeline and nothing else.

Target: p99 <= 10 ms on an idle machine.

With ``--url [postgresql://...]`` the server and the worker share a PostgreSQL database instead
(a new schema per run): the worker's commit reaches the server by ``NOTIFY`` on its ``LISTEN``
connection. Target there: p99 <= 20 ms.

    .venv/bin/python bench/sse_latency.py [--runs 5] [--samples 200] [--url]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from httpx_sse import aconnect_sse

from bench import common, serving
from underway.timefmt import from_iso

#: name -> (seconds between calls, calls per written event, roughly)
VARIANTS: dict[str, tuple[float, float]] = {
    "every 20 ms": (0.020, 2.7),
    "every 60 ms": (0.060, 1.0),
}
TARGET_P99_MS = 10.0
TARGET_P99_MS_POSTGRES = 20.0


async def measure(client: httpx.AsyncClient, every: float, per_write: float, samples: int) -> dict[str, Any]:
    calls = int(samples * per_write) + 2
    job = await serving.submit(client, "progress_clock", calls=calls, every=every, lead=0.5)
    total: list[float] = []
    to_write: list[float] = []
    to_client: list[float] = []
    status = None
    async with (
        asyncio.timeout(calls * every * 4 + 30),
        aconnect_sse(client, "GET", f"/api/jobs/{job['id']}/stream") as source,
    ):
        async for sse in source.aiter_sse():
            now = time.time()
            if sse.event == "progress":
                event = json.loads(sse.data)
                called = float(event["data"]["message"])
                at = from_iso(event["at"])
                total.append(now - called)
                to_write.append(at - called)
                to_client.append(now - at)
            elif sse.event == "status":
                status = json.loads(sse.data)["data"]["status"]
            elif sse.event == "end":
                break
    figures: dict[str, Any] = {"calls": calls, "written": len(total), "status": status}
    for label, values in (("total", total), ("write", to_write), ("client", to_client)):
        for p in (50, 90, 99):
            figures[f"{label}_p{p}_ms"] = common.percentile(values, p) * 1000
        figures[f"{label}_max_ms"] = max(values) * 1000 if values else float("nan")
    figures["over_10ms"] = sum(1 for v in total if v > 0.010)
    figures["samples_ms"] = [round(v * 1000, 3) for v in total]
    figures["client_samples_ms"] = [round(v * 1000, 3) for v in to_client]
    return figures


async def one_run(args: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"load": common.loadavg()}
    with common.workdir("sse-latency", args.keep) as tmp, ExitStack() as schema:
        if args.url:
            url = schema.enter_context(common.postgres_schema(args.url, args.keep))
        else:
            url = common.sqlite_url(tmp / "b.db")
        port = serving.free_port()
        logs = [tmp / "server.log", tmp / "worker.log"]
        server = serving.start_server(url, port, logs[0])
        worker = serving.start_worker(url, logs[1])
        try:
            timeout = httpx.Timeout(10.0, read=120.0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
                await serving.wait_ready(client, [server, worker], logs, workers=1)
                for name, (every, per_write) in VARIANTS.items():
                    result[name] = await measure(client, every, per_write, args.samples)
                    common.check_alive([server, worker], logs)
            result["server_errors"] = serving.server_errors(logs[0])
        finally:
            common.stop(worker)
            common.stop(server)
    return result


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=200, help="written progress events per variant and run")
    common.add_url_option(p)
    args = p.parse_args()
    if args.url is not None and not common.is_postgres(args.url):
        p.error("--url takes a postgresql:// URL (SQLite is the default)")
    target = TARGET_P99_MS_POSTGRES if args.url else TARGET_P99_MS
    common.install_cleanup()
    info = common.machine()
    extra = {
        "benchmark": f"ctx.progress() in a worker subprocess -> client of /api/jobs/{{id}}/stream in this"
        f" process (httpx-sse), ~{args.samples} written events per variant, {args.runs} runs;"
        " latency from the call whose value was written",
    }
    if args.url:
        extra["postgres"] = str(common.postgres_facts(args.url))
    common.print_machine(info, extra)
    runs: list[dict[str, Any]] = []
    try:
        for number in range(args.runs):
            result = asyncio.run(one_run(args))
            runs.append(result)
            line = ", ".join(
                f"{name} p50 {result[name]['total_p50_ms']:.2f} p99 {result[name]['total_p99_ms']:.2f} ms"
                for name in VARIANTS
            )
            print(f"run {number + 1}: {line} (load {result['load']})", flush=True)
            if result["server_errors"]:
                print(f"  server log: {result['server_errors']}")
    finally:
        common.stop_all()
    if not runs:
        return
    print()
    rows = []
    for number, result in enumerate(runs, 1):
        for name in VARIANTS:
            r = result[name]
            rows.append(
                [
                    number,
                    name,
                    result["load"],
                    r["written"],
                    f"{r['total_p50_ms']:.2f}",
                    f"{r['total_p90_ms']:.2f}",
                    f"{r['total_p99_ms']:.2f}",
                    f"{r['total_max_ms']:.1f}",
                    f"{r['write_p50_ms']:.2f}/{r['write_p99_ms']:.1f}",
                    f"{r['client_p50_ms']:.2f}/{r['client_p99_ms']:.1f}/{r['client_max_ms']:.1f}",
                    r["over_10ms"],
                ]
            )
    common.table(
        [
            "run",
            "variant",
            "load 1/5/15",
            "events",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "call->write p50/p99",
            "write->client p50/p99/max",
            ">10ms",
        ],
        rows,
    )
    summary: dict[str, Any] = {}
    print(f"\nmedian of {len(runs)} runs (min-max); pooled = every sample of every run:")
    for name in VARIANTS:
        keys = ("total_p50_ms", "total_p99_ms", "total_max_ms", "client_p50_ms", "client_p99_ms")
        figures: dict[str, Any] = {key: [r[name][key] for r in runs] for key in keys}
        pooled = [v for r in runs for v in r[name]["samples_ms"]]
        pooled_client = [v for r in runs for v in r[name]["client_samples_ms"]]
        figures["pooled"] = {
            "n": len(pooled),
            "p50_ms": common.percentile(pooled, 50),
            "p99_ms": common.percentile(pooled, 99),
            "write_to_client_p99_ms": common.percentile(pooled_client, 99),
        }
        summary[name] = figures
        met = "met" if common.median(figures["total_p99_ms"]) <= target else "NOT met"
        print(
            f"  {name:<12} p50 {common.spread(figures['total_p50_ms'], '{:.2f}')} ms"
            f"  p99 {common.spread(figures['total_p99_ms'], '{:.2f}')} ms"
            f"  max {common.spread(figures['total_max_ms'], '{:.1f}')} ms"
            f"  | write->client p50 {common.spread(figures['client_p50_ms'], '{:.2f}')}"
            f" p99 {common.spread(figures['client_p99_ms'], '{:.2f}')} ms"
            f"  | pooled n={len(pooled)} p50 {figures['pooled']['p50_ms']:.2f}"
            f" p99 {figures['pooled']['p99_ms']:.2f}"
            f"  (target p99 <= {target:.0f} ms: {met})"
        )
    for result in runs:
        for name in VARIANTS:
            del result[name]["samples_ms"], result[name]["client_samples_ms"]
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
