"""Every page of the dashboard and its main action against a server on PostgreSQL, in Chromium.

The other dashboard tests run their flows on SQLite (and the live table, cancel and a batch's
counts on PostgreSQL too); this one walks through the pages once on PostgreSQL: the jobs table
and a search, cancel-all on a filter, a job's page answering a question, a batch's page with
retry-failed, queues with pause and resume, the overview's charts and a submission. Fails,
not skips, without PostgreSQL under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_support import LiveServer, PageWatch, StartServer, expect, wait_until
from dashboard_support import open_dashboard, postgres_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def on_postgres(start: StartServer) -> Iterator[LiveServer]:
    yield from postgres_server(start)


def test_every_page_and_its_main_action_on_postgres(on_postgres: LiveServer, page: PageWatch) -> None:
    live, p = on_postgres, page.page
    held = [live.submit("steps", gate="pg-never", count=1, message=f"held {i}") for i in range(2)]
    other = live.submit("steps", gate="pg-other", count=1, message="other")
    asked = live.submit("ask", question="Ship it?", options=["yes", "no"])
    live.wait_status(asked, "waiting")

    # jobs: a search finds the held jobs; cancel-all on that filter cancels exactly them
    open_dashboard(page, live, "/?q=held")
    rows = p.locator("table#jobs tbody tr[data-job-id]")
    expect(rows).to_have_count(2)
    p.get_by_role("button", name="Cancel all matching").click()
    p.get_by_role("button", name="Yes").click()
    for job_id in held:
        live.wait_status(job_id, "cancelled")
    assert live.job(other)["status"] in ("queued", "running")

    # a job's page: the question's options are buttons; answering resumes the job to its end
    p.goto(f"{live.base}/jobs/{asked}")
    p.get_by_role("button", name="yes", exact=True).click()
    live.wait_status(asked, "succeeded")
    expect(p.locator(".badge").first).to_have_text("succeeded")

    # a batch's page: counts converge; retry-failed runs the failed item again
    items = [{"text": "fine"}, {"text": "bad", "fail": True}]
    batch = live.client().post("/batches", json={"task": "item", "items": items, "name": "pg batch"}).json()
    p.goto(f"{live.base}/batches/{batch['id']}")
    expect(p.locator('.status-filters [data-status="failed"] .n')).to_have_text("1")
    failed_item = live.client().get(f"/batches/{batch['id']}/items", params={"status": "failed"}).json()
    first_end = failed_item["jobs"][0]["finished_at"]
    p.get_by_role("button", name="Retry failed (1)").click()
    wait_until(
        lambda: live.job(failed_item["jobs"][0]["id"])["finished_at"] not in (None, first_end),
        what="the failed item to run again",
    )

    # queues: pause and resume from the page
    p.goto(f"{live.base}/queues")
    default = p.locator('tr[data-queue="default"]')
    default.get_by_role("button", name="Pause queue default").click()
    wait_until(lambda: _queue(live, "default")["paused"] is True, what="the queue to pause")
    default.get_by_role("button", name="Resume queue default").click()
    wait_until(lambda: _queue(live, "default")["paused"] is False, what="the queue to resume")

    # overview: the charts are drawn from the store's stats
    p.goto(f"{live.base}/overview")
    for chart in ("throughput", "failures", "latency"):
        expect(p.locator(f'[data-chart="{chart}"] canvas')).to_have_count(1)
    depth = live.client().get("/stats").json()["depth"]
    expect(p.locator('[data-stat="running"] [data-role=value]')).to_have_text(str(depth["running"]))

    # submit: the form from the task's schema makes a job, and its page opens
    p.goto(f"{live.base}/submit?task=item")
    p.locator("#arg-text").fill("from the form")
    p.locator("form.submit-form").get_by_role("button", name="Submit").click()
    expect(p.locator("h1")).to_contain_text("item")
    submitted = p.url.rstrip("/").rsplit("/", 1)[-1]
    assert live.wait_status(submitted, "succeeded")["args"]["text"] == "from the form"
    live.gates.open("pg-other")
    page.assert_clean()


def _queue(live: LiveServer, name: str) -> dict[str, object]:
    queues = live.client().get("/queues").json()["queues"]
    found: dict[str, object] = next(q for q in queues if q["name"] == name)
    return found
