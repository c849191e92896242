"""The cost of authentication and ownership: the same build with auth off and with auth on.

Every measurement starts on a fresh SQLite file that holds the same two API keys (a user's and
an admin's, made with ``App.accounts.create_key`` before the server starts), one ``underway
server --auth off|on`` subprocess (``max_streams_per_user`` and ``max_submissions_per_minute``
raised to 100,000 in both modes, so the user's limits never bind) and one ``underway worker``;
an ``asker`` job (bench/apps.py), submitted with the user's key (its owner when auth is on),
waits for an answer. Two measurements:

* job reads: ``wrk -t2 -c50 -d10s --latency`` (after a 2 s warm-up, bench/http_load.py's runner)
  on ``GET /api/jobs/{id}``. ``off``: no credentials; ``key``: ``Authorization: Bearer <user
  key>`` (a read of the key's row, its HMAC, the ownership check); ``token``: ``?token=<stream
  token for the job>`` (its signature, a read of whether its key was revoked). Requests/s,
  p50/p99 latency, server CPU per request. ``--cache-experiment`` adds ``key+cache`` and
  ``token+cache``: the same on a third server whose launcher patches in a 1 s cache of verified
  credentials (an experiment: what the per-request checks would cost with one).
* fan-out: N (``--streams``, default 1,000) SSE streams of the job (``/api/jobs/{id}/stream``)
  opened by bench/fanout.py's client processes (``--client`` mode of this file adds the
  credential to their requests). ``off``: none; ``token``: one stream token for the job shared
  by every client as ``?token=`` (a page's token); ``key``: the user's key in the header. Then
  ``--rounds`` answers: the latency of the ``answer`` event at every client (p50/p99/max, as in
  fanout.py), the time and server CPU to connect, and server CPU per round.

The order of the variants alternates between runs (auth off first in odd runs, last in even
ones) so that a drifting load on a shared machine favours neither. Ratios are auth on / auth off
of the medians, and in brackets the range of the same ratio taken within each run: the target is
auth on within 10 % of auth off (requests/s ratio >= 0.9, latency ratios <= 1.1).

    .venv/bin/python bench/auth.py [--runs 6] [--streams 1000] [--stream-credentials token,key]
    .venv/bin/python bench/auth.py --streams 0 --cache-experiment    # reads only, and with a cache

(6 runs by default, ~6 min on 2 CPUs: as many with auth off measured first as last.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

import underway
from bench import common, fanout, http_load, serving

SCRIPT = str(Path(__file__).resolve())
OWNER = "bench-user"
#: Both modes get them; with auth off they do nothing.
LIMITS = {"UNDERWAY_MAX_STREAMS_PER_USER": "100000", "UNDERWAY_MAX_SUBMISSIONS_PER_MINUTE": "100000"}
TARGET = 0.10

#: ``--cache-experiment``: a server whose ``Accounts`` keep each verified key's and token's
#: principal for 1 s (patched in by its launcher, the server's code unchanged), to see what the
#: per-request checks cost against what a cache (refreshed like ``KeyWatch``) would leave.
CACHE_PATCH = """import time
from underway import accounts as _accounts
def _cached(check):
    found = {}
    async def cached(self, credential):
        now = time.monotonic()
        hit = found.get(credential)
        if hit is not None and now - hit[1] < 1.0:
            return hit[0]
        principal = await check(self, credential)
        found[credential] = (principal, now)
        return principal
    return cached
_accounts.Accounts.principal_of_key = _cached(_accounts.Accounts.principal_of_key)
_accounts.Accounts.principal_of_token = _cached(_accounts.Accounts.principal_of_token)
"""


# -- credentials -------------------------------------------------------------------------------


def with_credential(request: bytes, credential: str) -> bytes:
    """A raw HTTP request with ``credential`` added: ``token:<t>`` as ``?token=``, ``key:<k>``
    as an ``Authorization`` header, ``""`` unchanged."""
    kind, _, value = credential.partition(":")
    line, rest = request.split(b"\r\n", 1)
    method, target, version = line.split(b" ")
    if kind == "token":
        target += (b"&" if b"?" in target else b"?") + b"token=" + value.encode()
    elif kind == "key":
        rest = b"Authorization: Bearer " + value.encode() + b"\r\n" + rest
    return b" ".join((method, target, version)) + b"\r\n" + rest


def credential_parts(credential: str) -> tuple[dict[str, str], dict[str, str]]:
    """(query parameters, headers) of ``credential`` for httpx."""
    kind, _, value = credential.partition(":")
    if kind == "token":
        return {"token": value}, {}
    if kind == "key":
        return {}, {"Authorization": f"Bearer {value}"}
    return {}, {}


def run_client(argv: list[str]) -> None:
    """bench/fanout.py's client process, its requests carrying ``--credential``."""
    at = argv.index("--credential")
    credential = argv[at + 1]
    plain = fanout.request_for

    def request_for(transport: str, port: int, job: str) -> bytes:
        return with_credential(plain(transport, port, job), credential)

    fanout.request_for = request_for
    fanout.run_client(argv[:at] + argv[at + 2 :])


# -- one server ----------------------------------------------------------------------------------


@dataclass
class Served:
    """A server and worker on a fresh store with a user key and an admin key."""

    auth: bool
    port: int
    server: subprocess.Popen[bytes]
    user_key: str
    admin_key: str
    errors: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if self.auth else {}

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        """A client with the user's key (``key``: another), or none when auth is off."""
        headers = self.headers(key or self.user_key)
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=httpx.Timeout(30.0))


async def make_keys(url: str) -> tuple[str, str]:
    async with underway.App(url) as app:
        _, user_key = await app.accounts.create_key(OWNER, "user")
        _, admin_key = await app.accounts.create_key("bench-admin", "admin")
    return user_key, admin_key


@asynccontextmanager
async def serve(tmp: Path, slug: str, auth: bool, patch: str = "") -> AsyncIterator[Served]:
    """A server (with ``patch`` run before it, if given) and a worker on a fresh store."""
    url = common.sqlite_url(tmp / f"{slug}.db")
    user_key, admin_key = await make_keys(url)
    port = serving.free_port()
    logs = [tmp / f"{slug}-server.log", tmp / f"{slug}-worker.log"]
    flags = ("--auth", "on" if auth else "off")
    if patch:
        launcher = [sys.executable, "-c", patch + "from underway.cli import main; main()"]
        argv = [*launcher, "--url", url, "--app", "bench.apps:app", "server", "--host", "127.0.0.1"]
        server = common.start(
            [*argv, "--port", str(port), *flags], logs[0], env={"UNDERWAY_URL": url, **LIMITS}
        )
    else:
        server = serving.start_server(url, port, logs[0], env=LIMITS, flags=flags)
    worker = serving.start_worker(url, logs[1])
    served = Served(auth, port, server, user_key, admin_key)
    try:
        async with served.client(admin_key) as admin:  # /api/workers is for admins
            await serving.wait_ready(admin, [server, worker], logs, workers=1)
        async with httpx.AsyncClient(base_url=served.base) as bare:
            status = (await bare.get("/api/jobs")).status_code
        if status != (401 if auth else 200):
            raise RuntimeError(
                f"auth={'on' if auth else 'off'}, but a request without credentials got {status}"
            )
        yield served
        common.check_alive([server, worker], logs)
        served.errors = serving.server_errors(logs[0])
    finally:
        serving.end_helpers()
        common.stop(worker)
        common.stop(server)


async def waiting_job(client: httpx.AsyncClient, rounds: int, gap: float) -> dict[str, Any]:
    job = await serving.submit(client, "asker", rounds=rounds, gap=gap)
    return await serving.wait_status(client, job["id"], "waiting", key="r1")


async def stream_token(client: httpx.AsyncClient, job_id: str) -> str:
    response = await client.post("/api/stream-tokens", json={"job": job_id, "ttl": 3600})
    response.raise_for_status()
    return str(response.json()["token"])


# -- job reads -----------------------------------------------------------------------------------


async def job_reads(tmp: Path, mode: str, number: int) -> dict[str, Any]:
    """wrk on ``GET /api/jobs/{id}``: ``off``, or ``key`` and ``token`` (same server); ``mode``
    ``cached``: ``key+cache`` and ``token+cache`` on a server with :data:`CACHE_PATCH`."""
    results: dict[str, Any] = {}
    auth, suffix = mode != "off", "+cache" if mode == "cached" else ""
    patch = CACHE_PATCH if mode == "cached" else ""
    async with serve(tmp, f"reads-{number}-{mode}", auth, patch) as served:
        async with served.client() as client:
            job = await waiting_job(client, rounds=1, gap=0.0)
            target = f"{served.base}/api/jobs/{job['id']}"
            variants = {"off": (target, ())}
            if auth:
                token_target = f"{target}?token={await stream_token(client, job['id'])}"
                header = ("-H", f"Authorization: Bearer {served.user_key}")
                variants = {"key" + suffix: (target, header), "token" + suffix: (token_target, ())}
        for name, (url, extra) in variants.items():
            await asyncio.to_thread(http_load.wrk, url, served.server.pid, ("-t2", "-c50", "-d2s", *extra))
            load = common.loadavg()
            figures = await asyncio.to_thread(
                http_load.wrk, url, served.server.pid, (*http_load.WRK_ARGS, *extra)
            )
            if figures["non_2xx"] or figures["socket_errors"]:
                raise RuntimeError(
                    f"{name}: {figures['non_2xx']} non-2xx answers, {figures['socket_errors']}"
                )
            results[name] = {**figures, "load": load}
    for figures in results.values():
        figures["server_errors"] = served.errors
    return results


# -- fan-out -------------------------------------------------------------------------------------


class Clients(fanout.Clients):
    """bench/fanout.py's client processes, started through this file to carry a credential."""

    @classmethod
    async def launch(cls, processes: int, port: int, job: str, n: int, credential: str) -> Clients:
        counts = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
        procs = []
        for count in filter(None, counts):
            argv = [sys.executable, SCRIPT, "--client", "--credential", credential, "--port", str(port)]
            argv += ["--transport", "sse", "--job", job, "--count", str(count)]
            procs.append(await serving.spawn(argv))
        return cls(procs)


async def warm_up(client: httpx.AsyncClient, job_id: str, credential: str) -> None:
    """One stream of the kind measured, read until the job's prompt, then closed."""
    params, headers = credential_parts(credential)
    headers = {**headers, "Accept": "text/event-stream"}
    async with (
        asyncio.timeout(10),
        client.stream("GET", f"/api/jobs/{job_id}/stream", params=params, headers=headers) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.strip() == "event: prompt":
                break


async def answer_rounds(
    args: Any, client: httpx.AsyncClient, clients: Clients, job_id: str, ready: int, pid: int
) -> dict[str, Any]:
    """``args.rounds`` answers, as bench/fanout.py gives them: each once the question before it
    reached every client; the latency of each ``answer`` event at every client."""
    sent: dict[int, float] = {}
    round_cpu: list[float] = []
    for r in range(1, args.rounds + 1):
        if r > 1:
            job = await serving.wait_status(client, job_id, "waiting", key=f"r{r}", timeout=60)
            await clients.until_received(job["last_seq"], ready, args.round_timeout)
        cpu = common.cpu_seconds(pid)
        t_send = time.time()
        response = await client.post(f"/api/jobs/{job_id}/answer", json={"value": r, "key": f"r{r}"})
        response.raise_for_status()
        seq = response.json()["last_seq"] - 1  # the answer event; then status: running
        sent[seq] = t_send
        await clients.until_received(seq, ready, args.round_timeout)
        round_cpu.append(common.cpu_seconds(pid) - cpu)
    await clients.tell("collect " + ",".join(map(str, sent)))
    collected = await clients.read_all(timeout=60)
    latencies = [
        (t - t_send) * 1000
        for seq, t_send in sent.items()
        for c in collected
        for t in c["arrivals"].get(str(seq), [])
    ]
    figures: dict[str, Any] = {f"p{p}_ms": common.percentile(latencies, p) for p in (50, 90, 99)}
    figures["max_ms"] = max(latencies, default=float("nan"))
    figures["received"] = len(latencies)
    figures["expected"] = ready * len(sent)
    figures["lost"] = sum(c["lost"] for c in collected)
    figures["round_cpu_ms"] = sum(round_cpu) * 1000 / len(round_cpu)  # the mean: /proc counts 10 ms ticks
    return figures


async def fan_out(args: Any, tmp: Path, variant: str, number: int) -> dict[str, Any]:
    """N SSE streams of one job with the ``variant``'s credential; ``args.rounds`` events to all."""
    auth = variant != "off"
    n = args.streams
    figures: dict[str, Any] = {"variant": variant, "n": n, "load": common.loadavg()}
    async with serve(tmp, f"fanout-{number}-{variant}", auth) as served, served.client() as client:
        job_id = (await waiting_job(client, rounds=args.rounds, gap=0.5 + n / 4000))["id"]
        credential = {"off": "", "key": f"key:{served.user_key}"}.get(variant, "")
        if variant == "token":
            credential = f"token:{await stream_token(client, job_id)}"
        await warm_up(client, job_id, credential)
        await asyncio.sleep(1.0)
        pid = served.server.pid
        rss_before, cpu, started = serving.rss_kb(pid), common.cpu_seconds(pid), time.monotonic()
        clients = await Clients.launch(args.clients, served.port, job_id, n, credential)
        reports = await clients.read_all(timeout=240)
        figures["connect_s"] = time.monotonic() - started
        ready = sum(r["ready"] for r in reports)
        figures["connect_cpu_us_per_conn"] = (common.cpu_seconds(pid) - cpu) * 1e6 / max(1, ready)
        figures["ready"] = ready
        failed: Counter[str] = Counter()
        for r in reports:
            failed.update(r["failed"])
        figures["failed"] = dict(failed)
        await asyncio.sleep(1.0)
        figures["kb_per_conn"] = (serving.rss_kb(pid) - rss_before) / max(1, ready)
        figures.update(await answer_rounds(args, client, clients, job_id, ready, pid))
        await clients.close()
    figures["server_errors"] = served.errors
    return figures


# -- runs and the summary ------------------------------------------------------------------------


async def one_run(args: Any, number: int) -> dict[str, Any]:
    """Every measurement once; auth off first in odd runs, last in even ones."""
    result: dict[str, Any] = {"load": common.loadavg(), "reads": {}, "fanout": {}}
    modes = ["off", "on", "cached"] if args.cache_experiment else ["off", "on"]
    if number % 2:
        modes.reverse()
    streams = ["off", *args.stream_credentials]
    if number % 2:
        streams.reverse()
    with common.workdir("auth", args.keep) as tmp:
        if args.reads:
            for mode in modes:
                result["reads"].update(await job_reads(tmp, mode, number))
        for variant in streams if args.streams else ():
            result["fanout"][variant] = await fan_out(args, tmp, variant, number)
    return result


def print_run(number: int, result: dict[str, Any]) -> None:
    parts = [
        f"GET job {name} {r['rps']:.0f} req/s p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms"
        f" {r['server_cpu_us_per_request']:.0f} us/req"
        for name, r in result["reads"].items()
    ]
    parts += [
        f"fan-out {name} {f['ready']}/{f['n']} p50 {f['p50_ms']:.0f} p99 {f['p99_ms']:.0f} ms"
        f" ({f['received']}/{f['expected']}) connect {f['connect_s']:.1f} s"
        f" {f['connect_cpu_us_per_conn']:.0f} us/conn" + (f" failed {f['failed']}" if f["failed"] else "")
        for name, f in result["fanout"].items()
    ]
    print(f"run {number + 1} (load {result['load']}):\n  " + "\n  ".join(parts), flush=True)
    errors = {e for r in (*result["reads"].values(), *result["fanout"].values()) for e in r["server_errors"]}
    if errors:
        print(f"  server log: {sorted(errors)}")


def ratio(runs: list[dict[str, Any]], kind: str, name: str, key: str) -> tuple[float, list[float]]:
    """auth-on / auth-off of the medians of ``key``, and the same ratio within each run."""
    on = [r[kind][name][key] for r in runs]
    off = [r[kind]["off"][key] for r in runs]
    return common.median(on) / common.median(off), [a / b for a, b in zip(on, off, strict=True)]


def summarize(
    runs: list[dict[str, Any]], kind: str, metrics: dict[str, tuple[str, str, bool]]
) -> dict[str, Any]:
    """Print one table (median (min-max) of each metric, then ratios); return its figures.

    ``metrics``: key -> (column title, format, whether higher is better)."""
    names = sorted(runs[0][kind], key=lambda n: n != "off")
    summary: dict[str, Any] = {}
    rows = []
    for name in names:
        figures = {key: [r[kind][name][key] for r in runs] for key in metrics}
        row = [name, *(common.spread(figures[key], fmt) for key, (_, fmt, _) in metrics.items())]
        if name != "off":
            ratios = {key: ratio(runs, kind, name, key) for key in metrics}
            figures["ratios"] = {key: [whole, *each] for key, (whole, each) in ratios.items()}
            row += [
                f"{whole:.3f} ({min(each):.2f}-{max(each):.2f})"
                for key, (whole, each) in ratios.items()
                if metrics[key][2] is not None
            ]
        summary[name] = figures
        rows.append(row)
    ratio_titles = [f"ratio {title}" for title, _, better in metrics.values() if better is not None]
    width = 1 + len(metrics) + len(ratio_titles)
    common.table(
        ["variant", *(t for t, _, _ in metrics.values()), *ratio_titles],
        [r + [""] * (width - len(r)) for r in rows],
    )
    return summary


def verdicts(summary: dict[str, Any], key: str, higher_is_better: bool) -> list[str]:
    found = []
    for name, figures in summary.items():
        if name == "off":
            continue
        whole = figures["ratios"][key][0]
        met = whole >= 1 - TARGET if higher_is_better else whole <= 1 + TARGET
        found.append(f"{name} {key} ratio {whole:.3f}: target {'met' if met else 'NOT met'}")
    return found


READ_METRICS: dict[str, tuple[str, str, Any]] = {
    "rps": ("req/s", "{:.0f}", True),
    "p50_ms": ("p50 ms", "{:.2f}", False),
    "p99_ms": ("p99 ms", "{:.2f}", False),
    "server_cpu_us_per_request": ("CPU us/req", "{:.0f}", False),
}
FANOUT_METRICS: dict[str, tuple[str, str, Any]] = {
    "p50_ms": ("p50 ms", "{:.0f}", False),
    "p99_ms": ("p99 ms", "{:.0f}", False),
    "max_ms": ("max ms", "{:.0f}", None),
    "connect_s": ("connect s", "{:.2f}", None),
    "connect_cpu_us_per_conn": ("CPU us/conn", "{:.0f}", False),
    "round_cpu_ms": ("round CPU ms", "{:.0f}", False),
    "kb_per_conn": ("KB/conn", "{:.1f}", None),
}


def main() -> None:
    if "--client" in sys.argv[1:]:
        run_client(sys.argv[1:])
        return
    p = common.parser(__doc__.splitlines()[0], default_runs=6)
    p.add_argument("--streams", type=int, default=1000, help="SSE clients of the fan-out (0: no fan-out)")
    p.add_argument(
        "--stream-credentials",
        default="token,key",
        help="fan-out variants with auth on: token (?token=, one for all), key (user key header)",
    )
    p.add_argument("--clients", type=int, default=4, help="client processes of the fan-out (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="events fanned out per measurement")
    p.add_argument("--round-timeout", type=float, default=30.0, help="longest wait for one event to arrive")
    p.add_argument("--no-reads", dest="reads", action="store_false", help="skip the wrk job reads")
    p.add_argument(
        "--cache-experiment",
        action="store_true",
        help="also read with key and token on a server that caches verified credentials for 1 s"
        " (patched in by its launcher)",
    )
    args = p.parse_args()
    args.stream_credentials = [c for c in args.stream_credentials.split(",") if c]
    for c in args.stream_credentials:
        if c not in ("token", "key"):
            p.error(f"unknown stream credential {c!r}: use token, key")
    if args.reads and shutil.which("wrk") is None:
        p.error("wrk is not installed: apt-get install wrk (or --no-reads)")
    serving.install_cleanup()
    serving.raise_nofile()
    reads = "off, key, token" + (", key+cache, token+cache" if args.cache_experiment else "")
    parts = [f"wrk {' '.join(http_load.WRK_ARGS)} on GET /api/jobs/{{id}} ({reads})"] if args.reads else []
    if args.streams:
        parts.append(
            f"{args.streams} SSE streams of one job from {args.clients} client processes,"
            f" {args.rounds} events fanned out (off, {', '.join(args.stream_credentials)})"
        )
    info = common.machine()
    common.print_machine(
        info,
        {
            "benchmark": f"auth off vs on, {args.runs} runs: " + "; ".join(parts),
        },
    )
    runs: list[dict[str, Any]] = []
    try:
        for number in range(args.runs):
            result = asyncio.run(one_run(args, number))
            runs.append(result)
            print_run(number, result)
    finally:
        serving.end_helpers()
        common.stop_all()
    if not runs:
        return
    summary: dict[str, Any] = {}
    lines: list[str] = []
    if args.reads:
        print(
            f"\nGET /api/jobs/{{id}}, median of {len(runs)} runs (min-max);"
            " ratio on/off of the medians (range of the per-run ratios)"
        )
        summary["reads"] = summarize(runs, "reads", READ_METRICS)
        lines += verdicts(summary["reads"], "rps", True)
        lines += verdicts(summary["reads"], "server_cpu_us_per_request", False)
    if args.streams:
        print(
            f"\nfan-out to {args.streams} SSE clients, median of {len(runs)} runs (min-max); ratio as above"
        )
        summary["fanout"] = summarize(runs, "fanout", FANOUT_METRICS)
        lines += verdicts(summary["fanout"], "p50_ms", False) + verdicts(summary["fanout"], "p99_ms", False)
    print(f"\ntarget: auth on within {TARGET:.0%} of auth off\n  " + "\n  ".join(lines))
    common.write_json(args.json, {"machine": info, "args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
