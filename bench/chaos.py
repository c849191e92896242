"""Chaos: workers SIGKILLed, the API server SIGKILLed under 1,200 streams, PostgreSQL restarted
and its sessions terminated, the disk full; nothing may be lost, finished twice or skipped.

Four scenarios (``--scenario``, default all), each ``--runs`` times (default 3), the first two
on each store of ``--stores`` (default sqlite,postgres):

* ``workers``: ``--jobs`` (10,000) ``chaos_short`` jobs (bench/chaos_apps.py: 50 ms asleep;
  the default task settings: no retries, crash_retries 2) drained by ``--workers`` (3)
  ``underway worker --concurrency 10 --lease-timeout 5s`` processes while every
  ``--kill-interval`` (1 s) one of them, chosen at random, gets SIGKILL and a new one is
  started in its place, until every job ended.
* ``server``: ``--streams`` (1,000) SSE clients and ``--subscribers`` (200) WebSocket
  subscribers (4 client processes, bench/chaos_clients.py) follow 20 ``chaos_ticker`` jobs
  (a numbered log line every 250 ms); the server gets SIGKILL ``--server-kills`` (2) times and
  is started again on the same port; the clients reconnect by themselves and resume
  (``Last-Event-ID``; ``subscribe`` with ``after``). At the end every client must hold exactly
  its job's stored events, once each, in order.
* ``postgres``: a private cluster (``initdb`` in a temporary folder, a free port; never the
  shared server); ``--pg-jobs`` (4,000) ``chaos_short`` jobs, 3 workers, a server and 25
  followers of 5 ticker jobs; once ``pg_terminate_backend`` of every underway session, once
  ``pg_ctl restart -m fast``; after each, the time until a job submitted through the API has
  succeeded.
* ``disk``: SQLite on a new 16 MiB tmpfs (needs root to mount); a server and a worker; jobs
  submitted and running, then a ballast file fills the disk: submissions must get 503;
  the ballast is deleted: later submissions get 201 and every accepted job ends.

Figures, from the store after each run (bench/chaos_support.py ``audit``): jobs lost (not
ended, or failed for a reason other than ``WorkerLost``), ``WorkerLost`` failures (the crash
budget spent: counted apart), jobs finished twice (more than one terminal status event),
events missing or duplicated (per job, seq must be exactly 1..last_seq).

    .venv/bin/python bench/chaos.py [--scenario workers|server|postgres|disk] [--runs 3] [--json F]

The whole suite takes about 8 minutes on 2 CPUs (3 runs). Results: RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, serving
from bench.chaos_scenarios import (
    SCENARIOS,
    disk_full,
    postgres_restarted,
    server_killed,
    store,
    workers_killed,
)
from bench.chaos_support import Unavailable

#: The figures each scenario's summary shows (median (min-max) of the runs).
SUMMARY = {
    "workers": (
        "lost",
        "worker_lost",
        "finished_twice",
        "events_missing",
        "events_duplicated",
        "kills",
        "crashes",
        "jobs_rerun",
        "most_crashes",
        "seconds",
    ),
    "server": (
        "client_events_lost",
        "client_events_duplicated",
        "clients_with_faults",
        "clients_data_mismatch",
        "lost",
        "finished_twice",
        "events_missing",
        "events_duplicated",
        "client_events",
        "server_back_s",
        "resume_p50_s",
        "resume_max_s",
    ),
    "postgres": (
        "lost",
        "worker_lost",
        "finished_twice",
        "events_missing",
        "events_duplicated",
        "client_events_lost",
        "client_events_duplicated",
        "sessions_terminated",
        "restart_s",
        "recovery_s",
        "workers_resume_s",
        "process_exits",
    ),
    "disk": (
        "lost",
        "finished_twice",
        "events_missing",
        "events_duplicated",
        "first_accepted_s",
        "recovery_s",
    ),
}


async def run_one(args: Any, scenario: str, kind: str, tmp: Path) -> dict[str, Any]:
    if scenario == "postgres":
        return await postgres_restarted(tmp, jobs=args.pg_jobs, keep=args.keep)
    if scenario == "disk":
        return await disk_full(tmp)
    with store(kind, tmp, args.postgres_url, args.keep) as url:
        if scenario == "workers":
            return await workers_killed(url, tmp, jobs=args.jobs, workers=args.workers)
        return await server_killed(
            url, tmp, streams=args.streams, subscribers=args.subscribers, server_kills=args.server_kills
        )


def flat(value: Any) -> float | None:
    """A figure as one number: lists (one entry per fault) by their largest."""
    if isinstance(value, list):
        return max(value) if value else None
    return float(value) if isinstance(value, int | float) else None


def show(scenario: str, kind: str, figures: dict[str, Any]) -> str:
    parts = []
    for key in SUMMARY[scenario]:
        value = figures.get(key)
        if isinstance(value, float):
            value = f"{value:.2f}"
        elif isinstance(value, list):
            value = "/".join(f"{v:.2f}" for v in value)
        parts.append(f"{key}={value}")
    extra = {
        k: figures.get(k)
        for k in ("full_codes", "after_codes", "health_when_full", "answers_during_recovery")
    }
    extra = {k: v for k, v in extra.items() if v is not None} if scenario in ("disk", "postgres") else {}
    return f"  {scenario}/{kind}: " + " ".join(parts) + (f" {extra}" if extra else "")


def main() -> None:
    if "--client" in sys.argv[1:]:
        from bench.chaos_clients import run_client

        run_client()
        return
    p = common.parser(__doc__.splitlines()[0], default_runs=3)
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    p.add_argument("--stores", default="sqlite,postgres", help="stores of the workers and server scenarios")
    p.add_argument(
        "--postgres-url",
        default=None,
        help="run the workers/server scenarios in a new schema of this database; default: a private cluster",
    )
    p.add_argument("--jobs", type=int, default=10_000, help="jobs of the workers scenario")
    p.add_argument("--workers", type=int, default=3, help="worker processes of the workers scenario")
    p.add_argument("--streams", type=int, default=1000, help="SSE clients of the server scenario")
    p.add_argument(
        "--subscribers", type=int, default=200, help="WebSocket subscribers of the server scenario"
    )
    p.add_argument("--server-kills", type=int, default=2, help="server SIGKILLs in the server scenario")
    p.add_argument("--pg-jobs", type=int, default=4000, help="jobs of the postgres scenario")
    args = p.parse_args()
    serving.install_cleanup()
    serving.raise_nofile()
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    stores = [s for s in args.stores.split(",") if s]
    plan = [
        (scenario, kind)
        for scenario in scenarios
        for kind in (
            stores
            if scenario in ("workers", "server")
            else ["postgres" if scenario == "postgres" else "sqlite"]
        )
    ]
    info = common.machine()
    common.print_machine(
        info, {"benchmark": f"chaos: {plan}, {args.runs} runs", "argv": " ".join(sys.argv[1:])}
    )
    results: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, str] = {}
    try:
        for number in range(args.runs):
            print(f"run {number + 1} (load {common.loadavg()}):", flush=True)
            for scenario, kind in plan:
                name = f"{scenario}/{kind}"
                if name in skipped:
                    continue
                with common.workdir(f"chaos-{scenario}", args.keep) as tmp:
                    try:
                        figures = asyncio.run(run_one(args, scenario, kind, tmp))
                    except Unavailable as exc:
                        skipped[name] = str(exc)
                        print(f"  {name}: skipped: {exc}", flush=True)
                        continue
                figures["load"] = common.loadavg()
                results.setdefault(name, []).append(figures)
                print(show(scenario, kind, figures), flush=True)
    finally:
        serving.end_helpers()
        common.stop_all()
    print("\nmedian of the runs (min-max):")
    summary: dict[str, dict[str, Any]] = {}
    for name, runs in results.items():
        scenario = name.split("/")[0]
        summary[name] = {}
        cells = []
        for key in SUMMARY[scenario]:
            values = [v for v in (flat(f.get(key)) for f in runs) if v is not None]
            summary[name][key] = values
            fmt = "{:.2f}" if key.endswith("_s") or key == "seconds" else "{:.0f}"
            cells.append(f"{key} {common.spread(values, fmt)}")
        print(f"  {name} ({len(runs)} runs): " + ", ".join(cells))
    for name, reason in skipped.items():
        print(f"  {name}: skipped: {reason}")
    common.write_json(
        args.json,
        {"machine": info, "args": vars(args), "runs": results, "summary": summary, "skipped": skipped},
    )


if __name__ == "__main__":
    main()
