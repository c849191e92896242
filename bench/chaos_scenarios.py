"""The chaos scenarios of bench/chaos.py (its command line and figures are there; these are the
runs themselves, which tests/e2e/test_e2e_chaos.py also runs at a small size): workers killed,
the API server killed under streams, a private PostgreSQL restarted, the disk full."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import chaos_apps, common, serving
from bench.chaos_clients import digest, event_line
from bench.chaos_support import (
    TERMINAL,
    audit,
    fill,
    kill,
    private_postgres,
    rows,
    small_tmpfs,
    start_server,
    start_worker,
    stored_events,
    truncate_wal,
)
from underway.tasks import SubmitOptions

#: bench/chaos.py, whose ``--client`` mode runs the stream clients.
SCRIPT = str(Path(__file__).resolve().with_name("chaos.py"))
SCENARIOS = ("workers", "server", "postgres", "disk")
ENDED = "SELECT count(*) FROM {jobs} WHERE status IN ('succeeded', 'failed', 'cancelled')"
#: Worker flags of every scenario: a lease that runs out in 5 s (default 30 s) so that a run
#: does not wait half a minute for each crashed job, and a sweeper that looks twice a second.
WORKER_FLAGS = ("--lease-timeout", "5s", "--sweep-interval", "0.5s")


# -- helpers -----------------------------------------------------------------------------------


async def enqueue(url: str, jobs: int, seconds: float) -> list[str]:
    """``jobs`` chaos_short jobs stored in chunks of 1,000; their ids."""
    app = chaos_apps.make_app(url)
    await app.open()
    try:
        ids: list[str] = []
        options = SubmitOptions()
        for first in range(0, jobs, 1000):
            chunk = range(first, min(first + 1000, jobs))
            new = [app.new_job("chaos_short", {"n": n, "seconds": seconds}, options) for n in chunk]
            ids += [job.id for job in await app.store.enqueue(new)]
        return ids
    finally:
        await app.close()


async def wait_for(what: str, predicate: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(interval)


async def ended(url: str, backlog: bool = False) -> int:
    """Jobs that ended (``backlog``: of priority 0 only, leaving out the recovery probes)."""
    return int((await asyncio.to_thread(rows, url, ENDED + (" AND priority = 0" if backlog else "")))[0][0])


async def healthy(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/api/healthz", timeout=2)).status_code == 200
    except httpx.TransportError:
        return False


async def submit(
    client: httpx.AsyncClient, task: str, args: dict[str, Any], priority: int = 0
) -> tuple[int, str | None]:
    """POST /api/jobs: (status code or 0 for no answer, the job's id if stored)."""
    try:
        response = await client.post("/api/jobs", json={"task": task, "args": args, "priority": priority})
    except httpx.TransportError:
        return 0, None
    return response.status_code, response.json()["id"] if response.status_code == 201 else None


async def job_status(client: httpx.AsyncClient, job_id: str) -> str | None:
    try:
        response = await client.get(f"/api/jobs/{job_id}")
    except httpx.TransportError:
        return None
    return str(response.json()["status"]) if response.status_code == 200 else None


async def recovery(client: httpx.AsyncClient, since: float, codes: Counter[int]) -> tuple[float, str]:
    """Submit a probe job through the API until it is stored, then wait until it ended: the
    seconds from ``since`` (monotonic) to its end, and its id. Answers other than 201 go in
    ``codes``. The probe has a higher priority than the backlog, which it must not wait behind."""
    while True:
        code, job_id = await submit(client, "chaos_short", {"n": -1, "seconds": 0.0}, priority=10)
        if job_id is not None:
            break
        codes[code] += 1
        await asyncio.sleep(0.1)

    async def done() -> bool:
        return await job_status(client, job_id) in TERMINAL

    await wait_for("the probe job to end", done, 120)
    return time.monotonic() - since, job_id


@contextmanager
def store(kind: str, tmp: Path, postgres_url: str | None, keep: bool) -> Any:
    """A fresh store: a SQLite file, a schema in ``postgres_url``, or a private cluster."""
    if kind == "sqlite":
        yield common.sqlite_url(tmp / "chaos.db")
    elif postgres_url:
        with common.postgres_schema(postgres_url, keep) as url:
            yield url
    else:
        with private_postgres(keep) as cluster:
            yield cluster.url


# -- stream clients ----------------------------------------------------------------------------


class Followers:
    """Client processes (bench/chaos_clients.py) following jobs over SSE and the WebSocket."""

    def __init__(self, procs: list[asyncio.subprocess.Process], total: int) -> None:
        self.procs = procs
        self.total = total

    @classmethod
    async def start(cls, port: int, sse: list[str], ws: list[str], processes: int) -> Followers:
        procs = []
        for k in range(processes):
            config = {"port": port, "sse": sse[k::processes], "ws": ws[k::processes]}
            proc = await serving.spawn([sys.executable, SCRIPT, "--client"])
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(config).encode() + b"\n")
            procs.append(proc)
        return cls(procs, len(sse) + len(ws))

    async def ask(self, command: str, timeout: float = 60) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command.encode() + b"\n")
            await proc.stdin.drain()

        async def answer(proc: asyncio.subprocess.Process) -> dict[str, Any]:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"client pid {proc.pid} exited ({await proc.wait()})")
            return dict(json.loads(line))

        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(answer(p) for p in self.procs)))

    async def status(self, since: float) -> dict[str, Any]:
        answers = await self.ask(f"status {since}")
        return {
            "opened": sum(a["opened"] for a in answers),
            "resumed": sum(a["resumed"] for a in answers),
            "resume_s": [s for a in answers for s in a["resume_s"]],
            "events": sum(a["events"] for a in answers),
        }

    async def all_open(self, timeout: float) -> None:
        async def opened() -> bool:
            return (await self.status(time.time()))["opened"] >= self.total

        await wait_for(f"{self.total} streams to open", opened, timeout, 0.2)

    async def resumed(self, since: float, timeout: float) -> list[float]:
        """Wait until every follower opened again after ``since`` (unix time); the delays."""

        async def everyone() -> list[float] | None:
            found = await self.status(since)
            return found["resume_s"] if found["resumed"] >= self.total else None

        return list(await wait_for("every stream to resume", everyone, timeout, 0.2))

    async def final(self, timeout: float) -> list[dict[str, Any]]:
        answers = await self.ask(f"final {timeout}", timeout + 30)
        return [f for a in answers for f in a["followers"]]

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None and proc.stdin is not None:
                try:
                    proc.stdin.write(b"close\n")
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
        for proc in self.procs:
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def compare(followers: list[dict[str, Any]], stored: dict[str, list[tuple[int, str, Any]]]) -> dict[str, Any]:
    """Each follower's events against its job's stored sequence."""
    lost = duplicated = disordered = mismatched = unfinished = faulty = 0
    for f in followers:
        expected = stored.get(f["job"], [])
        seqs = f["seqs"]
        gone = len({e[0] for e in expected} - set(seqs))
        twice = len(seqs) - len(set(seqs))
        lost += gone
        duplicated += twice
        disordered += seqs != sorted(seqs)
        unfinished += not f["done"]
        if not gone and not twice and f["digest"] != digest(event_line(*e) for e in expected):
            mismatched += 1
        faulty += bool(gone or twice or seqs != sorted(seqs) or not f["done"])
    return {
        "clients": len(followers),
        "client_events": sum(len(f["seqs"]) for f in followers),
        "client_events_lost": lost,
        "client_events_duplicated": duplicated,
        "clients_out_of_order": disordered,
        "clients_data_mismatch": mismatched,
        "clients_not_ended": unfinished,
        "clients_with_faults": faulty,
        "client_drops": sum(f["drops"] for f in followers),
    }


@asynccontextmanager
async def api(port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client


async def tickers(client: httpx.AsyncClient, count: int, every: float, stop: Path) -> list[str]:
    ids = []
    for _ in range(count):
        code, job_id = await submit(client, "chaos_ticker", {"every": every, "stop": str(stop)})
        if job_id is None:
            raise RuntimeError(f"submitting a ticker answered {code}")
        ids.append(job_id)
    return ids


async def all_running(client: httpx.AsyncClient, ids: Sequence[str], timeout: float) -> None:
    async def running() -> bool:
        return all([await job_status(client, j) == "running" for j in ids])

    await wait_for("the ticker jobs to run", running, timeout, 0.1)


# -- the scenarios -----------------------------------------------------------------------------


async def workers_killed(
    url: str,
    tmp: Path,
    *,
    jobs: int = 10_000,
    workers: int = 3,
    concurrency: int = 10,
    kill_interval: float = 1.0,
    job_seconds: float = 0.05,
    timeout: float = 600.0,
    seed: int | None = None,
) -> dict[str, Any]:
    """Scenario 1: a random worker SIGKILLed (and replaced) every ``kill_interval`` until all ended."""
    ids = await enqueue(url, jobs, job_seconds)
    rng = random.Random(seed)
    spawned = 0

    def worker() -> Any:
        nonlocal spawned
        spawned += 1
        return start_worker(url, tmp / f"worker-{spawned}.log", concurrency, WORKER_FLAGS)

    procs = [worker() for _ in range(workers)]
    kills = exits = 0
    started = time.monotonic()
    next_kill = started + kill_interval
    try:
        while await ended(url) < jobs and time.monotonic() - started < timeout:
            for k, proc in enumerate(procs):
                if proc.poll() is not None:  # died by itself: counted and replaced
                    exits += 1
                    common.stop(proc)
                    procs[k] = worker()
            if time.monotonic() >= next_kill:
                victim = rng.randrange(len(procs))
                kill(procs[victim])
                kills += 1
                procs[victim] = worker()
                next_kill += kill_interval
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
    finally:
        for proc in procs:
            common.stop(proc)
    figures = await asyncio.to_thread(audit, url, ids)
    return {"kills": kills, "worker_exits": exits, "seconds": seconds, "submitted": jobs} | figures


async def server_killed(
    url: str,
    tmp: Path,
    *,
    streams: int = 1000,
    subscribers: int = 200,
    jobs: int = 20,
    every: float = 0.25,
    server_kills: int = 2,
    processes: int = 4,
    settle: float = 2.0,
) -> dict[str, Any]:
    """Scenario 2: the server SIGKILLed and restarted on its port under open streams."""
    port = serving.free_port()
    logs = [tmp / "server.log", tmp / "worker.log"]
    server = start_server(url, port, logs[0])
    worker = start_worker(url, logs[1], jobs + 2, WORKER_FLAGS)
    stop = tmp / "stop"
    followers: Followers | None = None
    figures: dict[str, Any] = {"server_back_s": [], "resume_p50_s": [], "resume_max_s": []}
    try:
        async with api(port) as client:
            await serving.wait_ready(client, [server, worker], logs, workers=1)
            ids = await tickers(client, jobs, every, stop)
            await all_running(client, ids, 60)
            sse = [ids[n % jobs] for n in range(streams)]
            ws = [ids[n % jobs] for n in range(subscribers)]
            followers = await Followers.start(port, sse, ws, processes)
            await followers.all_open(180)
            for _ in range(server_kills):
                await asyncio.sleep(settle)  # events flow to every client before the kill
                killed_at, killed = time.time(), time.monotonic()
                kill(server)
                server = start_server(url, port, logs[0])
                await wait_for("the server to answer again", lambda: healthy(client), 60, 0.02)
                figures["server_back_s"].append(time.monotonic() - killed)
                delays = await followers.resumed(killed_at, 180)
                figures["resume_p50_s"].append(common.percentile(delays, 50))
                figures["resume_max_s"].append(max(delays))
            await asyncio.sleep(settle)
            stop.touch()
            found = await followers.final(120)
            await followers.close()
            followers = None
    finally:
        if followers is not None:
            serving.end_helpers()
        common.stop(worker)
        common.stop(server)
    stored = await asyncio.to_thread(stored_events, url, ids)
    figures |= compare(found, stored)
    figures["server_errors"] = serving.server_errors(logs[0])
    return figures | await asyncio.to_thread(audit, url, ids)


async def postgres_restarted(
    tmp: Path,
    *,
    jobs: int = 4000,
    workers: int = 3,
    concurrency: int = 10,
    job_seconds: float = 0.05,
    tickers_count: int = 5,
    streams: int = 20,
    subscribers: int = 5,
    keep: bool = False,
) -> dict[str, Any]:
    """Scenario 3: a private cluster; its underway sessions terminated once, then restarted once."""
    with private_postgres(keep) as cluster:
        return await _postgres_run(
            cluster, tmp, jobs, workers, concurrency, job_seconds, tickers_count, streams, subscribers
        )


async def _postgres_run(
    cluster: Any,
    tmp: Path,
    jobs: int,
    workers: int,
    concurrency: int,
    job_seconds: float,
    tickers_count: int,
    streams: int,
    subscribers: int,
) -> dict[str, Any]:
    url = cluster.url
    ids = await enqueue(url, jobs, job_seconds)
    port = serving.free_port()
    logs = [tmp / "server.log", *(tmp / f"worker-{k}.log" for k in range(workers))]
    server = start_server(url, port, logs[0])
    procs = [start_worker(url, log, concurrency, WORKER_FLAGS) for log in logs[1:]]
    stop = tmp / "stop"
    followers: Followers | None = None
    figures: dict[str, Any] = {"recovery_s": [], "workers_resume_s": [], "answers_during_recovery": Counter()}
    try:
        async with api(port) as client:
            await serving.wait_ready(client, [server, *procs], logs, workers=workers)
            ticker_ids = await tickers(client, tickers_count, 0.25, stop)
            ids += ticker_ids
            followers = await Followers.start(
                port,
                [ticker_ids[n % tickers_count] for n in range(streams)],
                [ticker_ids[n % tickers_count] for n in range(subscribers)],
                1,
            )
            await followers.all_open(60)
            for fault, share in (("terminate", 0.2), ("restart", 0.5)):
                await wait_for(
                    f"{share:.0%} of the jobs to end", lambda s=share: _share_ended(url, jobs, s), 300
                )
                since, before = time.monotonic(), await ended(url, backlog=True)
                if fault == "terminate":
                    figures["sessions_terminated"] = await asyncio.to_thread(cluster.terminate_underway)
                else:
                    await asyncio.to_thread(cluster.restart)
                    figures["restart_s"] = time.monotonic() - since
                seconds, probe = await recovery(client, since, figures["answers_during_recovery"])
                figures["recovery_s"].append(seconds)
                ids.append(probe)
                # The workers: until 20 more jobs of the backlog ended than had when the fault
                # came (fewer if fewer were left; none left: not measured).
                target = min(before + 20, jobs)
                if target > before:
                    await wait_for("the workers to go on", lambda t=target: _backlog_ended(url, t), 120, 0.02)
                    figures["workers_resume_s"].append(time.monotonic() - since)
            stop.touch()
            await wait_for("every job to end", lambda: _share_ended(url, len(ids), 1.0), 300)
            found = await followers.final(60)
            await followers.close()
            followers = None
        figures["process_exits"] = sum(p.poll() is not None for p in [server, *procs])
    finally:
        if followers is not None:
            serving.end_helpers()
        for proc in [server, *procs]:
            common.stop(proc)
    figures["answers_during_recovery"] = dict(figures["answers_during_recovery"])
    stored = await asyncio.to_thread(stored_events, url, ticker_ids)
    figures |= compare(found, stored)
    return figures | await asyncio.to_thread(audit, url, ids)


async def _backlog_ended(url: str, count: int) -> bool:
    return await ended(url, backlog=True) >= count


async def _share_ended(url: str, jobs: int, share: float) -> bool:
    return await ended(url) >= share * jobs


async def disk_full(
    tmp: Path,
    *,
    jobs: int = 200,
    refused: int = 20,
    after: int = 20,
    size_kib: int = 16384,
    hold: float = 2.0,
) -> dict[str, Any]:
    """Scenario 4: SQLite on a small tmpfs filled by a ballast file during a run, then freed."""
    with small_tmpfs(size_kib) as disk:
        return await _disk_run(tmp, disk, jobs, refused, after, hold)


async def _disk_run(
    tmp: Path, disk: Path, jobs: int, refused: int, after: int, hold: float
) -> dict[str, Any]:
    url = common.sqlite_url(disk / "chaos.db")
    port = serving.free_port()
    logs = [tmp / "server.log", tmp / "worker.log"]
    procs = [start_server(url, port, logs[0]), start_worker(url, logs[1], 4, WORKER_FLAGS)]
    figures: dict[str, Any] = {}
    accepted: list[str] = []
    try:
        async with api(port) as client:
            await serving.wait_ready(client, procs, logs, workers=1)
            before = Counter()
            for n in range(jobs):
                code, job_id = await submit(client, "chaos_short", {"n": n, "seconds": 0.1})
                before[code] += 1
                accepted += [job_id] if job_id else []
            figures["before_codes"] = dict(before)
            await wait_for("a tenth of the jobs to end", lambda: _share_ended(url, jobs, 0.1), 60)
            # An empty WAL first: pages it already holds would take writes on a full disk.
            figures["wal_truncated"] = await asyncio.to_thread(truncate_wal, url)
            figures["ballast_bytes"] = await asyncio.to_thread(fill, disk)
            figures["ended_when_full"] = await ended(url)
            health = await client.get("/api/healthz")
            figures["health_when_full"] = health.status_code
            figures["health_when_full_body"] = health.json()
            during = Counter()
            for n in range(refused):
                code, job_id = await submit(client, "chaos_short", {"n": jobs + n, "seconds": 0.0})
                during[code] += 1
                accepted += [job_id] if job_id else []
            figures["full_codes"] = dict(during)
            await asyncio.sleep(hold)  # the worker runs on against the full disk
            figures["exits_when_full"] = [p.args[-1] if p.poll() is not None else None for p in procs]
            (disk / "ballast").unlink()
            freed = time.monotonic()
            restarted = _restart_dead(procs, url, port, logs)
            figures["restarted_after_free"] = restarted
            if restarted:
                await serving.wait_ready(client, procs, logs, workers=1)
            later = Counter()
            for n in range(after):
                code, job_id = await submit(client, "chaos_short", {"n": jobs + refused + n, "seconds": 0.0})
                later[code] += 1
                if job_id and "first_accepted_s" not in figures:
                    figures["first_accepted_s"] = time.monotonic() - freed
                accepted += [job_id] if job_id else []
            figures["after_codes"] = dict(later)
            await wait_for("every accepted job to end", lambda: _ids_ended(url, accepted), 120)
            figures["recovery_s"] = time.monotonic() - freed
            health = await client.get("/api/healthz")
            figures["health_after"] = health.status_code
            figures["health_after_body"] = health.json()
    finally:
        for proc in procs:
            common.stop(proc)
    figures["server_errors"] = serving.server_errors(logs[0])
    return figures | await asyncio.to_thread(audit, url, accepted)


def _restart_dead(procs: list[Any], url: str, port: int, logs: list[Path]) -> list[str]:
    """Start again a server or worker that exited while the disk was full (as a supervisor would)."""
    names = []
    for k, proc in enumerate(procs):
        if proc.poll() is not None:
            common.stop(proc)
            names.append("server" if k == 0 else "worker")
            procs[k] = (
                start_server(url, port, logs[0]) if k == 0 else start_worker(url, logs[1], 4, WORKER_FLAGS)
            )
    return names


async def _ids_ended(url: str, ids: Sequence[str]) -> bool:
    found = await asyncio.to_thread(rows, url, "SELECT id, status FROM {jobs}")
    status = dict(found)
    return all(status.get(i) in TERMINAL for i in ids)


# -- the command line --------------------------------------------------------------------------
