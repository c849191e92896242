"""Prometheus metrics, one registry per API (no global state, so several APIs can coexist)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..jobs import Job, Status

if TYPE_CHECKING:
    from ..service import Service
    from .api import API


class Metrics:
    def __init__(self, api: API) -> None:
        self._api = api
        self.registry = CollectorRegistry(auto_describe=True)
        self._jobs = Gauge(
            "underway_jobs",
            "Jobs in the store by queue and status",
            ["queue", "status"],
            registry=self.registry,
        )
        self._submitted = Counter(
            "underway_jobs_submitted",
            "Jobs submitted through this server",
            ["queue", "task"],
            registry=self.registry,
        )
        self.streams = Gauge(
            "underway_open_streams",
            "Open event streams on this server",
            ["transport"],
            registry=self.registry,
        )
        for transport in ("sse", "websocket", "long_poll"):
            self.streams.labels(transport)
        self._finished = Gauge(
            "underway_jobs_finished_last_minute",
            "Jobs that ended in the last minute, by queue and status (throughput; read from the store,"
            " so every server reports the same figure)",
            ["queue", "status"],
            registry=self.registry,
        )
        self._mean_duration = Gauge(
            "underway_job_duration_seconds_mean_last_minute",
            "Mean running time of the jobs that ended in the last minute",
            ["queue", "status"],
            registry=self.registry,
        )
        self._max_duration = Gauge(
            "underway_job_duration_seconds_max_last_minute",
            "Longest running time of the jobs that ended in the last minute",
            ["queue", "status"],
            registry=self.registry,
        )

    def submitted(self, job: Job) -> None:
        self._submitted.labels(job.queue, job.task).inc()

    async def render(self, service: Service) -> tuple[bytes, str]:
        counts = await service.job_counts()
        self._jobs.clear()
        for queue, by_status in counts.items():
            for status in Status:
                self._jobs.labels(queue, status.value).set(by_status.get(status.value, 0))
        finished = await service.finished_since(time.time() - 60.0)
        for gauge in (self._finished, self._mean_duration, self._max_duration):
            gauge.clear()
        for window in finished:
            labels = (window.queue, window.status.value)
            self._finished.labels(*labels).set(window.count)
            self._mean_duration.labels(*labels).set(window.total_seconds / max(1, window.ran))
            self._max_duration.labels(*labels).set(window.longest_seconds)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
