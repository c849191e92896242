"""Fan-out: N idle streams on one server process; memory per connection, one event to all of them.

Each run and each (transport, N), on a fresh SQLite file: one ``underway server`` subprocess
(open-file limit raised with ``prlimit``) and one ``underway worker`` running an ``asker`` job
(bench/apps.py) that asks a question, waits ``gap`` seconds after each answer and asks the next.
Client processes (``--clients``, default 4; each ``bench/fanout.py --client``, uvloop, raw
asyncio protocols that parse HTTP/1.1 chunked SSE or WebSocket frames themselves, to stay
cheap) open N connections between them, all watching that one job:

* ``sse``: ``GET /api/jobs/{id}/stream`` (``Accept: text/event-stream``);
* ``multi``: ``GET /api/stream?jobs={id}`` (the multiplexed stream);
* ``ws``: ``/api/ws`` and ``{"op": "subscribe", "job": id}``.

A connection counts as open once the job's ``prompt`` event (``snapshot`` for ``multi``) has
reached it: its subscription is live. Then:

(a) memory: server VmRSS (``/proc/<pid>/status``) with N open, idle connections minus VmRSS
    before them (after one warm-up connection of the same kind was opened and closed), / N;
(b) fan-out: ``rounds`` times, the job is waiting (its prompt reached every client), this
    process takes ``time.time()`` and POSTs ``/api/jobs/{id}/answer``; every client records
    when the ``answer`` event reaches it (``time.time()`` in ``data_received``). Latency = that
    minus the send time: p50/p99/max over every client and round of the run. Server CPU
    (user + system, ``/proc/<pid>/stat``) is taken for connecting, for ``--idle`` seconds of
    idle, and for each round (the answer request plus the fan-out of its 2 events: ``answer``
    and ``status: running``).

The clients share the machine's CPUs with the server: on a small machine their parsing is
part of the measured latency.

Targets: <= 30 KB per idle connection; p99 <= 250 ms for one event to reach every client.

    .venv/bin/python bench/fanout.py [--runs 3] [--sizes 1000,10000] [--transports sse,multi,ws]
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench import common, serving

TRANSPORTS = ("sse", "multi", "ws")
SCRIPT = str(Path(__file__).resolve())
TARGET_KB = 30.0
TARGET_P99_MS = 250.0
#: Connections each client process opens at once (the rest wait for a slot).
CONNECTING = 64


# -- the client processes ----------------------------------------------------------------------


class Tally:
    """What one client process saw: arrival times of the job's events by seq, and failures."""

    def __init__(self) -> None:
        self.ready = 0
        self.failed: Counter[str] = Counter()
        self.lost = 0
        self.arrivals: dict[int, list[float]] = {}

    def got(self, seq: int, at: float) -> None:
        self.arrivals.setdefault(seq, []).append(at)


class _Conn(asyncio.Protocol):
    def __init__(self, tally: Tally, request: bytes, opened: asyncio.Future[None]) -> None:
        self.tally = tally
        self.request = request
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.head_done = False
        self.buf = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before ready: {exc!r}"))
        else:
            self.tally.lost += 1

    def mark_ready(self) -> None:
        if not self.opened.done():
            self.opened.set_result(None)

    def fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def head(self, expected: bytes) -> bool:
        """Consume the response head; ``False`` while it is incomplete."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        status_line = bytes(self.buf[: self.buf.find(b"\r\n")])
        if expected not in status_line:
            self.fail(status_line.decode("latin-1"))
            return False
        del self.buf[: end + 4]
        self.head_done = True
        return True


class SSEConn(_Conn):
    """An SSE client: HTTP/1.1 chunked body, events split on blank lines."""

    def __init__(self, tally: Tally, request: bytes, opened: asyncio.Future[None], multi: bool) -> None:
        super().__init__(tally, request, opened)
        self.multi = multi
        self.body = bytearray()
        self.chunk_left = -1  # -1: a chunk-size line comes next

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        if not self.head_done and not self.head(b" 200 "):
            return
        # De-chunk into self.body.
        while True:
            if self.chunk_left < 0:
                eol = self.buf.find(b"\r\n")
                if eol < 0:
                    break
                size = int(bytes(self.buf[:eol]).split(b";")[0], 16)
                del self.buf[: eol + 2]
                if size == 0:  # the end of the body
                    if self.transport is not None:
                        self.transport.close()
                    break
                self.chunk_left = size
            if len(self.buf) < self.chunk_left + 2:
                break
            self.body += self.buf[: self.chunk_left]
            del self.buf[: self.chunk_left + 2]
            self.chunk_left = -1
        if b"\n\n" in self.body or b"\r\n\r\n" in self.body:
            text = bytes(self.body).replace(b"\r\n", b"\n")
            *blocks, rest = text.split(b"\n\n")
            self.body = bytearray(rest)
            for block in blocks:
                self.event(block, now)

    def event(self, block: bytes, now: float) -> None:
        kind = seq = data = None
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                kind = line[6:].strip()
            elif line.startswith(b"id:"):
                seq = line[3:].strip()
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        if kind is None or kind == b"end":
            return
        if kind == b"snapshot":
            self.mark_ready()
            return
        if seq is None and data is not None:
            seq = json.loads(data)["seq"]
        if seq is not None:
            self.tally.got(int(seq), now)
        if kind == b"prompt" and not self.multi:
            self.mark_ready()


class WSConn(_Conn):
    """A WebSocket client (RFC 6455 framing, no extensions); answers pings."""

    def __init__(self, tally: Tally, request: bytes, opened: asyncio.Future[None], job: str) -> None:
        super().__init__(tally, request, opened)
        self.job = job

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if self.transport is not None and not self.closed:
            self.transport.write(header + mask + masked)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        if not self.head_done:
            if not self.head(b" 101 "):
                return
            subscribe = {"id": 1, "op": "subscribe", "job": self.job}
            self.send_frame(0x1, json.dumps(subscribe).encode())
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            n, offset = b1 & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    return
                n, offset = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    return
                n, offset = struct.unpack_from("!Q", self.buf, 2)[0], 10
            if len(self.buf) < offset + n:
                return
            payload = bytes(self.buf[offset : offset + n])
            del self.buf[: offset + n]
            self.frame(b0 & 0x0F, payload, now)

    def frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x1:
            message = json.loads(payload)
            event = message.get("event")
            if event is not None:
                self.tally.got(event["seq"], now)
                if event["type"] == "prompt":
                    self.mark_ready()
            elif message.get("reply") == 1 and not message.get("ok"):
                self.fail(f"subscribe refused: {message.get('error')}")
        elif opcode == 0x9:
            self.send_frame(0xA, payload)
        elif opcode == 0x8:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
            self.fail(f"closed by the server ({code})")
            if self.transport is not None:
                self.transport.close()


def request_for(transport: str, port: int, job: str) -> bytes:
    host = f"Host: 127.0.0.1:{port}\r\n"
    if transport == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET /api/ws HTTP/1.1\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    path = f"/api/jobs/{job}/stream" if transport == "sse" else f"/api/stream?jobs={job}"
    return f"GET {path} HTTP/1.1\r\n{host}Accept: text/event-stream\r\n\r\n".encode()


async def client_main(port: int, transport: str, job: str, count: int, max_seconds: float) -> None:
    """One client process: open ``count`` connections, report, then follow commands on stdin."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    conns: list[_Conn] = []
    slots = asyncio.Semaphore(CONNECTING)
    deadline = time.monotonic() + max_seconds

    async def open_one() -> None:
        async with slots:
            opened: asyncio.Future[None] = loop.create_future()
            request = request_for(transport, port, job)
            if transport == "ws":

                def factory() -> _Conn:
                    return WSConn(tally, request, opened, job)
            else:

                def factory() -> _Conn:
                    return SSEConn(tally, request, opened, transport == "multi")

            try:
                async with asyncio.timeout(60):
                    _, conn = await loop.create_connection(factory, "127.0.0.1", port)
                    conns.append(conn)
                    await opened
                tally.ready += 1
            except (OSError, TimeoutError) as exc:
                tally.failed[type(exc).__name__ + ": " + str(exc)[:80]] += 1

    started = time.time()
    await asyncio.gather(*(open_one() for _ in range(count)))
    report = {
        "ready": tally.ready,
        "failed": dict(tally.failed),
        "connect_s": time.time() - started,
    }
    print(json.dumps(report), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                line = (await reader.readline()).strip()
        except TimeoutError:
            break
        if not line or line == b"close":
            break
        command, _, argument = line.partition(b" ")
        if command == b"count":  # how many connections received the event with this seq
            print(json.dumps({"count": len(tally.arrivals.get(int(argument), ()))}), flush=True)
        elif command == b"collect":  # the arrival times of the events with these seqs
            seqs = [int(seq) for seq in argument.split(b",") if seq]
            arrivals = {str(seq): tally.arrivals.get(seq, []) for seq in seqs}
            open_now = sum(1 for c in conns if not c.closed)
            print(json.dumps({"arrivals": arrivals, "lost": tally.lost, "open": open_now}), flush=True)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()


def run_client(argv: list[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--client", action="store_true")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--transport", choices=TRANSPORTS, required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args(argv)
    serving.raise_nofile()
    import uvloop

    uvloop.run(client_main(args.port, args.transport, args.job, args.count, args.max_seconds))


# -- the benchmark -----------------------------------------------------------------------------


class Clients:
    """The client processes of one measurement."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls, processes: int, port: int, transport: str, job: str, n: int) -> Clients:
        counts = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        procs = []
        for count in counts:
            if count:
                argv = [sys.executable, SCRIPT, "--client", "--port", str(port)]
                argv += ["--transport", transport, "--job", job, "--count", str(count)]
                procs.append(await serving.spawn(argv))
        return cls(procs)

    async def read_all(self, timeout: float) -> list[dict[str, Any]]:
        async def one(proc: asyncio.subprocess.Process) -> dict[str, Any]:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"client pid {proc.pid} exited ({await proc.wait()})")
            return dict(json.loads(line))

        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(one(p) for p in self.procs)))

    def cpu_seconds(self) -> float:
        return sum(common.tree_cpu_seconds(p.pid) for p in self.procs)

    async def count(self, seq: int) -> int:
        await self.tell(f"count {seq}")
        return sum(r["count"] for r in await self.read_all(timeout=60))

    async def until_received(self, seq: int, wanted: int, timeout: float) -> tuple[int, float]:
        """Poll every 50 ms until ``wanted`` connections received ``seq``; (count, monotonic time)."""
        deadline = time.monotonic() + timeout
        while True:
            got = await self.count(seq)
            now = time.monotonic()
            if got >= wanted or now > deadline:
                return got, now
            await asyncio.sleep(0.05)

    async def tell(self, command: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command.encode() + b"\n")
            await proc.stdin.drain()

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


async def warm_up(client: httpx.AsyncClient, port: int, transport: str, job: str) -> None:
    """Open and close one connection of the kind measured (imports, first-use paths)."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    opened: asyncio.Future[None] = loop.create_future()
    request = request_for(transport, port, job)
    conn: _Conn = (
        WSConn(tally, request, opened, job)
        if transport == "ws"
        else SSEConn(tally, request, opened, transport == "multi")
    )
    transport_, _ = await loop.create_connection(lambda: conn, "127.0.0.1", port)
    async with asyncio.timeout(10):
        await opened
    transport_.close()
    await client.get(f"/api/jobs/{job}")


async def measure(args: Any, tmp: Path, transport: str, n: int) -> dict[str, Any]:
    slug = f"{transport}-{n}"
    url = common.sqlite_url(tmp / f"{slug}.db")
    port = serving.free_port()
    logs = [tmp / f"{slug}-server.log", tmp / f"{slug}-worker.log"]
    gap = 0.5 + n / 4000  # after each answer, before the next question
    figures: dict[str, Any] = {"transport": transport, "n": n, "load": common.loadavg()}
    server = serving.start_server(url, port, logs[0], uvloop=args.uvloop, gc_log=args.gc_log)
    worker = serving.start_worker(url, logs[1])
    clients: Clients | None = None
    try:
        timeout = httpx.Timeout(30.0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
            await serving.wait_ready(client, [server, worker], logs, workers=1)
            job = await serving.submit(client, "asker", rounds=args.rounds, gap=gap)
            job_id = job["id"]
            await serving.wait_status(client, job_id, "waiting", key="r1")
            await warm_up(client, port, transport, job_id)
            await asyncio.sleep(1.0)
            if args.gc_log:
                figures["objects_before"] = await serving.count_objects(server.pid, logs[0])
            rss_before = serving.rss_kb(server.pid)
            fds_before = serving.open_fds(server.pid)
            cpu = common.cpu_seconds(server.pid)
            started = time.monotonic()
            clients = await Clients.start(args.clients, port, transport, job_id, n)
            reports = await clients.read_all(timeout=240)
            figures["connect_s"] = time.monotonic() - started
            figures["connect_cpu_s"] = common.cpu_seconds(server.pid) - cpu
            figures["ready"] = sum(r["ready"] for r in reports)
            failed: Counter[str] = Counter()
            for r in reports:
                failed.update(r["failed"])
            figures["failed"] = dict(failed)
            await asyncio.sleep(2.0)
            figures["rss_before_kb"] = rss_before
            figures["rss_open_kb"] = serving.rss_kb(server.pid)
            figures["fds"] = serving.open_fds(server.pid) - fds_before
            figures["threads"] = serving.threads(server.pid)
            if args.gc_log:
                figures["objects_open"] = await serving.count_objects(server.pid, logs[0])
            ready = max(1, figures["ready"])
            figures["kb_per_conn"] = (figures["rss_open_kb"] - rss_before) / ready
            cpu = common.cpu_seconds(server.pid)
            await asyncio.sleep(args.idle)
            figures["idle_cpu_percent"] = 100 * (common.cpu_seconds(server.pid) - cpu) / args.idle
            sent: dict[int, float] = {}
            round_cpu: list[float] = []
            round_s: list[float] = []
            round_client_cpu: list[float] = []
            answer_ms: list[float] = []
            for r in range(1, args.rounds + 1):
                if r > 1:  # the next question, once its prompt event reached every client
                    job = await serving.wait_status(client, job_id, "waiting", key=f"r{r}", timeout=60)
                    await clients.until_received(job["last_seq"], figures["ready"], args.round_timeout)
                cpu = common.cpu_seconds(server.pid)
                client_cpu = clients.cpu_seconds()
                t_send = time.time()
                started = time.monotonic()
                response = await client.post(f"/api/jobs/{job_id}/answer", json={"value": r, "key": f"r{r}"})
                answer_ms.append((time.time() - t_send) * 1000)
                response.raise_for_status()
                seq = response.json()["last_seq"] - 1  # the answer event; then status: running
                sent[seq] = t_send
                _, done = await clients.until_received(seq, figures["ready"], args.round_timeout)
                round_cpu.append(common.cpu_seconds(server.pid) - cpu)
                round_client_cpu.append(clients.cpu_seconds() - client_cpu)
                round_s.append(done - started)
            figures["rss_after_kb"] = serving.rss_kb(server.pid)
            await clients.tell("collect " + ",".join(map(str, sent)))
            collected = await clients.read_all(timeout=60)
            figures["lost"] = sum(c["lost"] for c in collected)
            figures["open_at_end"] = sum(c["open"] for c in collected)
            latencies: list[float] = []
            per_round: list[dict[str, Any]] = []
            for seq, t_send in sent.items():
                times = [t for c in collected for t in c["arrivals"].get(str(seq), [])]
                these = [(t - t_send) * 1000 for t in times]
                latencies += these
                per_round.append(
                    {
                        "seq": seq,
                        "received": len(these),
                        "first_ms": min(these, default=float("nan")),
                        "p50_ms": common.percentile(these, 50),
                        "p99_ms": common.percentile(these, 99),
                        "max_ms": max(these, default=float("nan")),
                    }
                )
            figures["rounds"] = per_round
            figures["expected"] = figures["ready"] * len(sent)
            figures["received"] = len(latencies)
            for p in (50, 90, 99):
                figures[f"p{p}_ms"] = common.percentile(latencies, p)
            figures["max_ms"] = max(latencies, default=float("nan"))
            figures["first_ms"] = common.median([r["first_ms"] for r in per_round])
            figures["answer_request_ms"] = common.median(answer_ms)
            figures["round_cpu_ms"] = common.median([c * 1000 for c in round_cpu])
            figures["round_s"] = round_s
            figures["round_client_cpu_ms"] = common.median([c * 1000 for c in round_client_cpu])
            # A round longer than the task's gap also counts the next prompt's fan-out.
            figures["rounds_over_gap"] = sum(1 for t in round_s if t > gap)
            figures["round_cpu_us_per_client"] = figures["round_cpu_ms"] * 1000 / ready
            figures["connect_cpu_us_per_conn"] = figures["connect_cpu_s"] * 1e6 / ready
            await clients.close()
            clients = None
        figures["server_errors"] = serving.server_errors(logs[0])
        if args.gc_log:
            pauses = serving.gc_pauses(logs[0])
            figures["gc_all"] = [len(pauses), sum(ms for _, ms in pauses)]
            figures["gc_rounds"] = [
                [ms for at, ms in pauses if t_send <= at <= t_send + spent]
                for t_send, spent in zip(sent.values(), round_s, strict=True)
            ]
    finally:
        if clients is not None:
            serving.end_helpers()
        common.stop(worker)
        common.stop(server)
    return figures


def summary_line(f: dict[str, Any]) -> str:
    failed = f" failed {f['failed']}" if f["failed"] else ""
    return (
        f"{f['transport']:<5} N={f['n']:>6}: ready {f['ready']} in {f['connect_s']:.1f} s{failed};"
        f" {f['kb_per_conn']:.1f} KB/conn; p50 {f['p50_ms']:.0f} p99 {f['p99_ms']:.0f}"
        f" max {f['max_ms']:.0f} ms ({f['received']}/{f['expected']} received);"
        f" round CPU server {f['round_cpu_ms']:.0f} ms, clients {f['round_client_cpu_ms']:.0f} ms"
        f" (load {f['load']})\n      rounds first/p99/max ms: "
        + ", ".join(f"{r['first_ms']:.0f}/{r['p99_ms']:.0f}/{r['max_ms']:.0f}" for r in f["rounds"])
        + (
            "; full GCs in rounds (ms): "
            + ", ".join(str([round(ms) for ms in g]) for g in f["gc_rounds"])
            + f"; all full GCs: {f['gc_all'][0]}, {f['gc_all'][1]:.0f} ms"
            + f"; tasks/objects {f['objects_before']} -> {f['objects_open']}"
            if "gc_rounds" in f
            else ""
        )
    )


async def one_run(args: Any, number: int) -> list[dict[str, Any]]:
    results = []
    with common.workdir("fanout", args.keep) as tmp:
        for n, runs in args.sizes:
            if number >= runs:
                continue
            for transport in args.transports:
                f = await measure(args, tmp, transport, n)
                results.append(f)
                print("  " + summary_line(f), flush=True)
                if f["server_errors"]:
                    print(f"    server log: {f['server_errors']}")
    return results


def _size(text: str, runs: int) -> tuple[int, int]:
    """``"10000"`` -> (10000, runs); ``"10000x1"`` -> (10000, 1)."""
    n, _, count = text.partition("x")
    return int(n), int(count) if count else runs


def main() -> None:
    if "--client" in sys.argv[1:]:
        run_client(sys.argv[1:])
        return
    p = common.parser(__doc__.splitlines()[0], default_runs=3)
    p.add_argument(
        "--sizes",
        default="1000,10000x1",
        help="connection counts, each with its own number of runs after an x (default 1000,10000x1:"
        " 1,000 for --runs runs, 10,000 once)",
    )
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="sse, multi, ws")
    p.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="events fanned out per measurement")
    p.add_argument(
        "--uvloop",
        action="store_true",
        help="run the server on uvloop (an experiment: underway server does not use it by itself)",
    )
    p.add_argument(
        "--gc-log",
        action="store_true",
        help="diagnostics: log the server's full garbage collections (those inside each round are"
        " listed) and count its asyncio tasks and GC-tracked objects before and with the N connections",
    )
    p.add_argument("--round-timeout", type=float, default=30.0, help="longest wait for one event to arrive")
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measurement")
    args = p.parse_args()
    args.sizes = [_size(s, args.runs) for s in args.sizes.split(",") if s]
    args.transports = [t for t in args.transports.split(",") if t]
    for t in args.transports:
        if t not in TRANSPORTS:
            p.error(f"unknown transport {t!r}: use {', '.join(TRANSPORTS)}")
    serving.install_cleanup()
    serving.raise_nofile()
    info = common.machine()
    common.print_machine(
        info,
        {
            "benchmark": f"N idle streams of one job on one server process, N in {args.sizes},"
            f" {args.clients} client processes, {args.rounds} events fanned out, runs per N:"
            f" {', '.join(f'{n}: {r}' for n, r in args.sizes)}",
            "open files": f"server {serving.nofile_limit()} (prlimit), clients {serving.raise_nofile()}",
        },
    )
    runs: list[list[dict[str, Any]]] = []
    try:
        for number in range(max(r for _, r in args.sizes)):
            print(f"run {number + 1} (load {common.loadavg()}):", flush=True)
            runs.append(asyncio.run(one_run(args, number)))
    finally:
        serving.end_helpers()
        common.stop_all()
    if not runs:
        return
    print()
    rows = []
    for number, results in enumerate(runs, 1):
        for f in results:
            rows.append(
                [
                    number,
                    f["transport"],
                    f["n"],
                    f["load"],
                    f"{f['ready']}/{f['n']}",
                    f"{f['connect_s']:.1f}",
                    f"{f['connect_cpu_us_per_conn']:.0f}",
                    f"{f['rss_before_kb'] / 1024:.0f}->{f['rss_open_kb'] / 1024:.0f}",
                    f"{f['kb_per_conn']:.1f}",
                    f"{f['idle_cpu_percent']:.1f}",
                    f"{f['first_ms']:.1f}",
                    f"{f['p50_ms']:.0f}",
                    f"{f['p99_ms']:.0f}",
                    f"{f['max_ms']:.0f}",
                    f"{f['received']}/{f['expected']}",
                    f"{f['round_cpu_ms']:.0f}",
                    f"{f['lost']}",
                ]
            )
    common.table(
        [
            "run",
            "transport",
            "N",
            "load 1/5/15",
            "ready",
            "connect s",
            "CPU us/conn",
            "RSS MB",
            "KB/conn",
            "idle CPU %",
            "first ms",
            "p50 ms",
            "p99 ms",
            "max ms",
            "received",
            "round CPU ms",
            "lost",
        ],
        rows,
    )
    summary: dict[str, Any] = {}
    print("\nmedian of the runs of each N (min-max):")
    for n, _ in args.sizes:
        for transport in args.transports:
            found = [f for results in runs for f in results if f["n"] == n and f["transport"] == transport]
            keys = ("kb_per_conn", "p50_ms", "p99_ms", "max_ms", "round_cpu_ms", "connect_s")
            figures = {key: [f[key] for f in found] for key in keys}
            summary[f"{transport} {n}"] = figures
            kb_met = "met" if common.median(figures["kb_per_conn"]) <= TARGET_KB else "NOT met"
            p99_met = "met" if common.median(figures["p99_ms"]) <= TARGET_P99_MS else "NOT met"
            print(
                f"  {transport:<5} N={n:>6} {len(found)} runs"
                f"  {common.spread(figures['kb_per_conn'], '{:.1f}')} KB/conn ({kb_met})"
                f"  p50 {common.spread(figures['p50_ms'])} ms  p99 {common.spread(figures['p99_ms'])} ms"
                f" ({p99_met})  max {common.spread(figures['max_ms'])} ms"
                f"  round CPU {common.spread(figures['round_cpu_ms'])} ms"
                f"  connect {common.spread(figures['connect_s'], '{:.1f}')} s"
            )
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
