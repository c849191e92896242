"""HTTP throughput of one server process: job reads and long polls.

Each run, on a fresh SQLite file: one ``underway server`` subprocess. Three measurements:

* ``GET /api/jobs/{id}`` with ``wrk -t2 -c50 -d10s --latency`` (after a 2 s warm-up), on a
  queued job: requests/s and latency;
* ``GET /api/jobs/{id}/events?after=0`` the same way: a long poll that returns at once (the job
  has 4 events: it asked a question and waits for the answer);
* held long polls: ``--polls`` (default 10, 100 and 1,000) connections in 2 client processes (raw asyncio,
  keep-alive), each looping on ``GET /api/jobs/{id}/events?after=<last>&wait=30`` for
  ``--seconds`` (default 10) on a ``progress_clock`` job (bench/apps.py, run by an ``underway
  worker`` subprocess) that writes a progress event every 100 ms with the time of its call:
  completed long polls/s, events delivered/s, and the latency of each delivered event
  (receive time - call time). Ideally each client completes 10 polls/s.

Server CPU (user + system from ``/proc/<pid>/stat``) is measured over each timed window. wrk,
the client processes and the server share the machine's CPUs.

    .venv/bin/python bench/http_load.py [--runs 3] [--polls 10,100,1000] [--seconds 10]

wrk is a Debian package (``apt-get install wrk``); without it the wrk measurements are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import json
import re
import shutil
import subprocess
import time
from typing import Any

import httpx

from bench import common, serving

WRK_ARGS = ("-t2", "-c50", "-d10s", "--latency")
CLIENT_PROCESSES = 2
#: Seconds after the long-poll clients start before their polls count (first polls catch up).
SETTLE = 1.0


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    match = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    figures["rps"] = float(match.group(1)) if match else float("nan")
    match = re.search(r"(\d+) requests in ([0-9.]+\w+)", output)
    figures["requests"] = int(match.group(1)) if match else 0
    for p in ("50", "90", "99"):
        match = re.search(rf"^\s+{p}(?:\.000)?%\s+([0-9.]+\w+)", output, re.MULTILINE)
        figures[f"p{p}_ms"] = _ms(match.group(1)) if match else float("nan")
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    figures["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: (.*)", output)
    figures["socket_errors"] = match.group(1).strip() if match else ""
    return figures


def wrk(url: str, pid: int, duration_args: tuple[str, ...] = WRK_ARGS) -> dict[str, Any]:
    """One timed wrk run against ``url``, with the server's CPU seconds over it."""
    cpu = common.cpu_seconds(pid)
    started = time.monotonic()
    done = subprocess.run(["wrk", *duration_args, url], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    used = common.cpu_seconds(pid) - cpu
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    figures = parse_wrk(done.stdout)
    figures["server_cpu_percent"] = 100 * used / elapsed
    figures["server_cpu_us_per_request"] = used * 1e6 / max(1, figures["requests"])
    return figures


# -- long-poll clients (separate processes) -----------------------------------------------------


class PollStats:
    def __init__(self) -> None:
        self.polls = 0
        self.empty = 0
        self.events = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []


async def poll_loop(
    port: int, job: str, start_after: int, counted_from: float, until: float, stats: PollStats
) -> None:
    """Long polls on one keep-alive connection until ``until``; those answered from
    ``counted_from`` on are counted (``time.time()`` values)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        stats.errors[type(exc).__name__] = stats.errors.get(type(exc).__name__, 0) + 1
        return
    after = start_after
    first = True  # an untimed poll without wait: start from the job's last event
    try:
        while time.time() < until:
            wait = "0" if first else "30"
            request = (
                f"GET /api/jobs/{job}/events?after={after}&wait={wait}&limit=10000 HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n\r\n"
            )
            writer.write(request.encode())
            remaining = until - time.time() + 35
            async with asyncio.timeout(remaining):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
            now = time.time()
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                status = head.split(b"\r\n", 1)[0].decode("latin-1")
                stats.errors[status] = stats.errors.get(status, 0) + 1
                await asyncio.sleep(0.1)
                continue
            answer = json.loads(body)
            if first:
                first = False
                after = answer["next_after"]
                continue
            after = answer["next_after"]
            if now > until:
                break
            if now < counted_from:
                continue
            stats.polls += 1
            if not answer["events"]:
                stats.empty += 1
            for event in answer["events"]:
                stats.events += 1
                if event["type"] == "progress":
                    stats.latencies.append(now - float(event["data"]["message"]))
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        stats.errors[type(exc).__name__] = stats.errors.get(type(exc).__name__, 0) + 1
    finally:
        writer.close()


async def client_main(port: int, job: str, count: int, start_after: int, start: float, until: float) -> None:
    stats = PollStats()
    await asyncio.sleep(max(0.0, start - time.time()))
    counted_from = start + SETTLE
    await asyncio.gather(
        *(poll_loop(port, job, start_after, counted_from, until, stats) for _ in range(count))
    )
    latencies = sorted(stats.latencies)
    print(
        json.dumps(
            {
                "polls": stats.polls,
                "empty": stats.empty,
                "events": stats.events,
                "errors": stats.errors,
                "latencies_ms": [round(v * 1000, 2) for v in latencies],
            }
        ),
        flush=True,
    )


def run_client(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--client", action="store_true")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--after", type=int, required=True)
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--until", type=float, required=True)
    args = p.parse_args(argv)
    serving.raise_nofile()
    import uvloop

    uvloop.run(client_main(args.port, args.job, args.count, args.after, args.start, args.until))


async def held_polls(args: Any, client: httpx.AsyncClient, port: int, pid: int, polls: int) -> dict[str, Any]:
    seconds = args.seconds
    job = await serving.submit(client, "progress_clock", calls=int((seconds + 8) / 0.1), every=0.1, lead=0.5)
    started_job = await serving.wait_status(client, job["id"], "running")
    # Start in 2 s (the client processes need time to import); count after SETTLE more seconds.
    start = time.time() + 2.0
    until = start + SETTLE + seconds
    counts = [polls // CLIENT_PROCESSES + (i < polls % CLIENT_PROCESSES) for i in range(CLIENT_PROCESSES)]
    procs = []
    for count in counts:
        argv = [sys.executable, "-m", "bench.http_load", "--client", "--port", str(port), "--job", job["id"]]
        argv += ["--count", str(count), "--after", str(started_job["last_seq"])]
        argv += ["--start", f"{start:.6f}", "--until", f"{until:.6f}"]
        procs.append(await serving.spawn(argv))
    await asyncio.sleep(max(0.0, start + SETTLE - time.time()))
    cpu = common.cpu_seconds(pid)
    await asyncio.sleep(max(0.0, until - time.time()))
    used = common.cpu_seconds(pid) - cpu
    reports = []
    for proc in procs:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
            await proc.wait()
        if not line:
            raise RuntimeError(f"long-poll client pid {proc.pid} exited with {proc.returncode}")
        reports.append(json.loads(line))
    latencies = [v for r in reports for v in r["latencies_ms"]]
    errors: dict[str, int] = {}
    for r in reports:
        for key, n in r["errors"].items():
            errors[key] = errors.get(key, 0) + n
    completed = sum(r["polls"] for r in reports)
    return {
        "polls": polls,
        "seconds": seconds,
        "polls_per_s": completed / seconds,
        "empty": sum(r["empty"] for r in reports),
        "events_per_s": sum(r["events"] for r in reports) / seconds,
        "ideal_polls_per_s": polls * 10,
        "p50_ms": common.percentile(latencies, 50),
        "p99_ms": common.percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "errors": errors,
        "server_cpu_percent": 100 * used / seconds,
        "server_cpu_us_per_poll": used * 1e6 / max(1, completed),
    }


# -- a run -------------------------------------------------------------------------------------


async def one_run(args: Any, have_wrk: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"load": common.loadavg()}
    with common.workdir("http", args.keep) as tmp:
        url = common.sqlite_url(tmp / "b.db")
        port = serving.free_port()
        logs = [tmp / "server.log", tmp / "worker.log"]
        server = serving.start_server(url, port, logs[0])
        worker = serving.start_worker(url, logs[1])
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
                await serving.wait_ready(client, [server, worker], logs, workers=1)
                if have_wrk:
                    # A job that stays put: it asked a question and waits (4 events).
                    job = await serving.submit(client, "asker", rounds=1, gap=0.0)
                    await serving.wait_status(client, job["id"], "waiting")
                    targets = {
                        "get_job": f"{base}/api/jobs/{job['id']}",
                        "events_now": f"{base}/api/jobs/{job['id']}/events?after=0",
                    }
                    for name, target in targets.items():
                        await asyncio.to_thread(wrk, target, server.pid, ("-t2", "-c50", "-d2s"))
                        result["load_" + name] = common.loadavg()
                        result[name] = await asyncio.to_thread(wrk, target, server.pid)
                        common.check_alive([server, worker], logs)
                for polls in args.polls:
                    result[f"load_long_poll_{polls}"] = common.loadavg()
                    result[f"long_poll_{polls}"] = await held_polls(args, client, port, server.pid, polls)
                    common.check_alive([server, worker], logs)
            result["server_errors"] = serving.server_errors(logs[0])
        finally:
            serving.end_helpers()
            common.stop(worker)
            common.stop(server)
    return result


def main() -> None:
    if "--client" in sys.argv[1:]:
        run_client(sys.argv[1:])
        return
    p = common.parser(__doc__.splitlines()[0], default_runs=3)
    p.add_argument("--polls", default="10,100,1000", help="held long polls, one measurement per count")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of held long polls")
    args = p.parse_args()
    args.polls = [int(n) for n in args.polls.split(",") if n]
    serving.install_cleanup()
    serving.raise_nofile()
    have_wrk = shutil.which("wrk") is not None
    info = common.machine()
    common.print_machine(
        info,
        {
            "benchmark": f"wrk {' '.join(WRK_ARGS)} on GET /api/jobs/{{id}} and /events?after=0;"
            f" {' and '.join(map(str, args.polls))} held long polls for {args.seconds:.0f} s"
            " on a job with an event every 100 ms;"
            f" {args.runs} runs",
            "wrk": "yes" if have_wrk else "NOT INSTALLED: apt-get install wrk (wrk measurements skipped)",
        },
    )
    runs: list[dict[str, Any]] = []
    try:
        for number in range(args.runs):
            result = asyncio.run(one_run(args, have_wrk))
            runs.append(result)
            parts = []
            for name in ("get_job", "events_now"):
                if name in result:
                    r = result[name]
                    parts.append(f"{name} {r['rps']:.0f} req/s (p99 {r['p99_ms']:.1f} ms)")
            for polls in args.polls:
                lp = result[f"long_poll_{polls}"]
                parts.append(
                    f"{polls} long polls: {lp['polls_per_s']:.0f}/s of {lp['ideal_polls_per_s']} ideal,"
                    f" latency p50 {lp['p50_ms']:.0f} p99 {lp['p99_ms']:.0f} ms,"
                    f" server CPU {lp['server_cpu_percent']:.0f}%"
                )
                if lp["errors"]:
                    parts.append(f"long-poll errors: {lp['errors']}")
            print(f"run {number + 1}: " + "; ".join(parts) + f" (load {result['load']})", flush=True)
            if result["server_errors"]:
                print(f"  server log: {result['server_errors']}")
    finally:
        serving.end_helpers()
        common.stop_all()
    if not runs:
        return
    print()
    rows = []
    for number, result in enumerate(runs, 1):
        for name in ("get_job", "events_now"):
            if name in result:
                r = result[name]
                rows.append(
                    [
                        number,
                        name,
                        result["load_" + name],
                        f"{r['rps']:.0f}",
                        f"{r['p50_ms']:.2f}",
                        f"{r['p99_ms']:.2f}",
                        f"{r['server_cpu_percent']:.0f}",
                        f"{r['server_cpu_us_per_request']:.0f}",
                        f"{r['non_2xx']} / {r['socket_errors'] or '-'}",
                    ]
                )
        for polls in args.polls:
            lp = result[f"long_poll_{polls}"]
            rows.append(
                [
                    number,
                    f"long poll x{polls}",
                    result[f"load_long_poll_{polls}"],
                    f"{lp['polls_per_s']:.0f}",
                    f"{lp['p50_ms']:.1f}",
                    f"{lp['p99_ms']:.1f}",
                    f"{lp['server_cpu_percent']:.0f}",
                    f"{lp['server_cpu_us_per_poll']:.0f}",
                    f"{lp['empty']} empty / {lp['errors'] or '-'}",
                ]
            )
    common.table(
        ["run", "what", "load 1/5/15", "req/s", "p50 ms", "p99 ms", "server CPU %", "CPU us/req", "errors"],
        rows,
    )
    print(f"\nmedian of {len(runs)} runs (min-max):")
    summary: dict[str, Any] = {}
    for name in ("get_job", "events_now"):
        if all(name in r for r in runs):
            figures = {
                key: [r[name][key] for r in runs] for key in ("rps", "p50_ms", "p99_ms", "server_cpu_percent")
            }
            summary[name] = figures
            print(
                f"  {name:<10} {common.spread(figures['rps'])} req/s"
                f"  p50 {common.spread(figures['p50_ms'], '{:.2f}')} ms"
                f"  p99 {common.spread(figures['p99_ms'], '{:.2f}')} ms"
                f"  server CPU {common.spread(figures['server_cpu_percent'])} %"
            )
    keys = (
        "polls_per_s",
        "events_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "server_cpu_percent",
        "server_cpu_us_per_poll",
    )
    for polls in args.polls:
        figures = {key: [r[f"long_poll_{polls}"][key] for r in runs] for key in keys}
        summary[f"long_poll_{polls}"] = figures
        print(
            f"  {polls} long polls: {common.spread(figures['polls_per_s'])} completed/s"
            f" (ideal {polls * 10}), {common.spread(figures['events_per_s'])} events delivered/s,"
            f" latency p50 {common.spread(figures['p50_ms'])} ms p99 {common.spread(figures['p99_ms'])} ms,"
            f" server CPU {common.spread(figures['server_cpu_percent'])} %"
            f" ({common.spread(figures['server_cpu_us_per_poll'])} us per poll)"
        )
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
