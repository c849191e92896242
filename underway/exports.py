"""A batch's results as JSON, NDJSON or CSV, written item by item (nothing held whole).

The HTTP API's ``/batches/{id}/results`` and ``underway batch export`` write the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from .batches import item_record
from .jobs import Job


async def write_json(jobs: AsyncIterator[Job]) -> AsyncIterator[str]:
    yield "["
    first = True
    async for job in jobs:
        yield ("" if first else ",") + json.dumps(item_record(job), ensure_ascii=False)
        first = False
    yield "]\n"


async def write_ndjson(jobs: AsyncIterator[Job]) -> AsyncIterator[str]:
    async for job in jobs:
        yield json.dumps(item_record(job), ensure_ascii=False) + "\n"


#: The CSV export takes its columns from this many first items.
CSV_SAMPLE = 500


async def write_csv(jobs: AsyncIterator[Job]) -> AsyncIterator[str]:
    """One row per item: ``id, status, attempt``, one ``args.<name>`` column per argument, the
    result (one ``result.<key>`` column per key when results are objects, else ``result``),
    ``error_type`` and ``error_message``. The columns are those of the first 500 items; nested
    values are JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    sample: list[dict[str, Any]] = []
    columns: list[str] | None = None

    def emit(rows: list[dict[str, Any]]) -> str:
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns or ()])
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    async for job in jobs:
        if columns is None:
            sample.append(_flat(job))
            if len(sample) < CSV_SAMPLE:
                continue
            columns = _columns(sample)
            writer.writerow(columns)
            yield emit(sample)
        else:
            yield emit([_flat(job)])
    if columns is None:
        columns = _columns(sample)
        writer.writerow(columns)
        yield emit(sample)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen = dict.fromkeys(["id", "status", "attempt"])
    for prefix in ("args.", "result"):
        for row in rows:
            seen.update(dict.fromkeys(key for key in row if key.startswith(prefix)))
    seen.update(dict.fromkeys(["error_type", "error_message"]))
    return list(seen)


def _flat(job: Job) -> dict[str, Any]:
    row: dict[str, Any] = {"id": job.id, "status": job.status.value, "attempt": job.attempt}
    row.update({f"args.{key}": value for key, value in job.args.items()})
    if isinstance(job.result, dict):
        row.update({f"result.{key}": value for key, value in job.result.items()})
    elif job.result is not None:
        row["result"] = job.result
    error = job.error or {}
    row["error_type"] = error.get("type")
    row["error_message"] = error.get("message")
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


Writer = Callable[[AsyncIterator[Job]], AsyncIterator[str]]
#: The writer of each format.
WRITERS: dict[str, Writer] = {"json": write_json, "ndjson": write_ndjson, "csv": write_csv}
