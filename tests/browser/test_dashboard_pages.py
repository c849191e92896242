"""The dashboard's Batches, Batch, Queues & workers, Overview and Submit pages in Chromium,
against a real server (SQLite; the batch page's live counts on PostgreSQL too).

Jobs are driven with gates (``item`` waits for its ``gate``), never with sleeps. Every test ends
with ``page.assert_clean()``: no console error, uncaught error or CSP violation on the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from browser_support import LiveServer, PageWatch, StartServer, expect, wait_until
from dashboard_support import open_dashboard, postgres_server, screenshot

from underway.auth import Principal

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

XSS = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(params=["sqlite", "postgres"])
def store_server(request: pytest.FixtureRequest, start: StartServer) -> Iterator[LiveServer]:
    """A server on SQLite, then on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield start()
    else:
        yield from postgres_server(start)


def chip(page: Page, status: str) -> Locator:
    """The count of one status on a batch's page."""
    return page.locator(f'.status-filters [data-status="{status}"] .n')


def batch_bar(page: Page) -> Locator:
    return page.locator(".batch-summary").get_by_role("progressbar")


def submit_batch(live: LiveServer, items: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    response = live.client().post("/batches", json={"task": "item", "items": items, **fields})
    assert response.status_code == 201, response.text
    batch: dict[str, Any] = response.json()
    return batch


def batch_items(live: LiveServer, batch_id: str, **query: Any) -> list[dict[str, Any]]:
    response = live.client().get(f"/batches/{batch_id}/items", params={"limit": 500, **query})
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


# -- batches ---------------------------------------------------------------------------------


def test_batch_page_counts_converge_live(store_server: LiveServer, page: PageWatch) -> None:
    live = store_server
    items = [{"text": f"item {i}", "gate": f"b{i}", "fail": i in (1, 4)} for i in range(6)]
    batch_id = submit_batch(live, items, name="nightly")["id"]
    open_dashboard(page, live, f"/batches/{batch_id}")
    p = page.page
    expect(p.locator(".page-head h1")).to_contain_text("nightly")
    expect(batch_bar(p)).to_have_attribute("aria-valuenow", "0")
    expect(p.locator(".page-head .live.on")).to_have_text("live")
    expect(p.locator("table.grid.items tbody tr")).to_have_count(6)

    for i in (0, 1, 2):
        live.gates.open(f"b{i}")
    expect(batch_bar(p)).to_have_attribute("aria-valuenow", "50")
    expect(chip(p, "succeeded")).to_have_text("2")
    expect(chip(p, "failed")).to_have_text("1")
    expect(chip(p, "running")).to_have_text("3")
    expect(p.locator("[data-role=percent]")).to_have_text("50 %")
    expect(p.locator(".counts-bar.large .seg")).to_have_count(3)
    # the rows of items that ended follow the stream, their result or error read again
    failed_row = p.locator("table.grid.items tbody tr", has_text="item 1")
    expect(failed_row.locator(".badge")).to_have_text("failed")
    expect(failed_row.locator(".outcome")).to_contain_text("failed, as asked")

    for i in (3, 4, 5):
        live.gates.open(f"b{i}")
    expect(p.locator(".page-head .badge").first).to_have_text("partial")
    expect(batch_bar(p)).to_have_attribute("aria-valuenow", "100")
    expect(chip(p, "succeeded")).to_have_text("4")
    expect(chip(p, "failed")).to_have_text("2")
    expect(chip(p, "running")).to_have_text("0")
    expect(p.locator("table.grid.items tbody tr[data-status=failed]")).to_have_count(2)
    last_failed = p.locator("table.grid.items tbody tr", has_text="item 4")
    expect(last_failed.locator(".outcome")).to_contain_text("failed, as asked")
    grows = p.locator(".counts-bar.large .seg").evaluate_all("(all) => all.map((s) => s.style.flexGrow)")
    assert grows == ["4", "2"]
    if live.app.settings.url.startswith("sqlite"):
        screenshot(page, "batch")
    page.assert_clean()


def test_retry_failed_reruns_the_failed_items(live: LiveServer, page: PageWatch) -> None:
    items = [{"text": f"r{i}", "fail": i == 1} for i in range(3)]
    batch_id = submit_batch(live, items)["id"]
    open_dashboard(page, live, f"/batches/{batch_id}")
    p = page.page
    expect(p.locator(".page-head .badge").first).to_have_text("partial")
    (failed,) = batch_items(live, batch_id, status="failed")
    first_finish = failed["finished_at"]

    retry = p.get_by_role("button", name="Retry failed (1)")
    retry.click()

    expect(p.locator(".toast.ok")).to_contain_text("1 items queued again")
    wait_until(
        lambda: (job := live.job(failed["id"]))["status"] == "failed" and job["finished_at"] != first_finish,
        what="the failed item to run again",
    )
    # the stream was opened again: the page follows the batch to its new end
    expect(p.locator(".page-head .badge").first).to_have_text("partial")
    expect(chip(p, "failed")).to_have_text("1")
    expect(chip(p, "succeeded")).to_have_text("2")
    page.assert_clean()


def test_pause_resume_and_cancel_a_batch(live: LiveServer, page: PageWatch) -> None:
    batch_id = submit_batch(live, [{"text": f"c{i}", "gate": "never"} for i in range(3)])["id"]
    open_dashboard(page, live, f"/batches/{batch_id}")
    p = page.page
    expect(chip(p, "running")).to_have_text("3")

    def batch() -> dict[str, Any]:
        found: dict[str, Any] = live.client().get(f"/batches/{batch_id}").json()
        return found

    p.get_by_role("button", name="Pause").click()
    expect(p.locator(".page-head .badge.status-paused")).to_have_text("paused")
    assert batch()["paused"] is True
    p.get_by_role("button", name="Resume").click()
    expect(p.locator(".page-head .badge.status-paused")).to_have_count(0)
    assert batch()["paused"] is False

    p.get_by_role("button", name="Cancel batch").click()
    p.get_by_role("group", name="Cancel every unfinished item?").get_by_role("button", name="Yes").click()
    expect(p.locator(".page-head .badge").first).to_have_text("cancelled")
    expect(chip(p, "cancelled")).to_have_text("3")
    assert {job["status"] for job in batch_items(live, batch_id)} == {"cancelled"}
    expect(p.get_by_role("button", name="Cancel batch")).to_be_disabled()
    page.assert_clean()


def test_export_links_answer_csv_json_and_ndjson(live: LiveServer, page: PageWatch) -> None:
    batch_id = submit_batch(live, [{"text": "alpha"}, {"text": "beta, with a comma", "fail": True}])["id"]
    open_dashboard(page, live, f"/batches/{batch_id}")
    p = page.page
    expect(p.locator(".page-head .badge").first).to_have_text("partial")
    links = p.locator(".exports a[download]")
    expect(links).to_have_text(["CSV", "JSON", "NDJSON"])

    csv_url = p.get_by_role("link", name="CSV").evaluate("(a) => a.href")
    assert csv_url == f"{live.base}/api/batches/{batch_id}/results?format=csv"
    answer = p.request.get(csv_url)
    assert answer.ok
    assert answer.headers["content-type"].startswith("text/csv")
    text = answer.text()
    assert "alpha" in text
    assert '"beta, with a comma"' in text
    for name, kind in (("JSON", "application/json"), ("NDJSON", "application/x-ndjson")):
        url = p.get_by_role("link", name=name, exact=True).evaluate("(a) => a.href")
        response = p.request.get(url)
        assert response.ok, url
        assert response.headers["content-type"].startswith(kind), response.headers
    with p.expect_download() as download:
        p.get_by_role("link", name="CSV").click()
    assert download.value.suggested_filename == f"batch-{batch_id}.csv"
    page.assert_clean()


def test_batch_items_are_paged_and_filtered(live: LiveServer, page: PageWatch) -> None:
    items = [{"text": f"n{i}", "fail": i % 20 == 0} for i in range(60)]
    batch_id = submit_batch(live, items)["id"]
    wait_until(lambda: live.client().get(f"/batches/{batch_id}").json()["status"] == "partial")
    open_dashboard(page, live, f"/batches/{batch_id}")
    p = page.page
    rows = p.locator("table.grid.items tbody tr")
    expect(rows).to_have_count(50)
    expect(batch_bar(p)).to_have_attribute("aria-valuenow", "100")
    first_page = rows.first.get_attribute("data-job")

    p.get_by_role("button", name="Older →").click()
    expect(rows).to_have_count(10)
    expect(p.get_by_role("button", name="Older →")).to_be_disabled()
    p.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-job", first_page or "")

    p.locator('.status-filters [data-status="failed"]').click()
    expect(p).to_have_url(re.compile(r"\?status=failed$"))
    expect(rows).to_have_count(3)
    expect(p.locator("table.grid.items tbody tr[data-status=failed]")).to_have_count(3)
    p.go_back()
    expect(rows).to_have_count(50)
    page.assert_clean()


def test_batches_list_shows_a_batch(live: LiveServer, page: PageWatch) -> None:
    done = submit_batch(live, [{"text": f"d{i}", "fail": i == 2} for i in range(5)], name="weekly report")
    wait_until(lambda: live.client().get(f"/batches/{done['id']}").json()["status"] == "partial")
    running = submit_batch(live, [{"text": "w", "gate": "w"}, {"text": "x"}], name=XSS)
    open_dashboard(page, live, "/batches")
    p = page.page
    row = p.locator(f'tr[data-batch="{done["id"]}"]')
    expect(row.get_by_role("link", name="weekly report")).to_be_visible()
    expect(row.locator(".badge")).to_have_text("partial")
    expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(row.locator(".seg")).to_have_count(2)
    # a job-provided name stays text
    other = p.locator(f'tr[data-batch="{running["id"]}"]')
    expect(other.get_by_role("link", name=XSS)).to_be_visible()
    expect(other.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "50")
    assert p.locator("img").count() == 0
    screenshot(page, "batches")

    row.get_by_role("link", name="weekly report").click()
    expect(p).to_have_url(f"{live.base}/batches/{done['id']}")
    expect(chip(p, "failed")).to_have_text("1")
    live.gates.open("w")
    page.assert_clean()


def test_batches_list_is_empty_at_first(live: LiveServer, page: PageWatch) -> None:
    open_dashboard(page, live, "/batches")
    expect(page.page.locator(".empty")).to_contain_text("No batches yet")
    page.assert_clean()


# -- queues and workers ----------------------------------------------------------------------


def queue(live: LiveServer, name: str) -> dict[str, Any]:
    queues = live.client().get("/queues").json()["queues"]
    found: dict[str, Any] = next(q for q in queues if q["name"] == name)
    return found


def test_queues_page_controls_and_workers(live: LiveServer, page: PageWatch) -> None:
    client = live.client()
    assert client.post("/queues/reports/pause").status_code == 200
    for i in range(3):
        live.submit("item", text=f"q{i}", job_options={"queue": "reports"})
    running_id = live.submit("steps", gate="run", count=2)
    live.wait_status(running_id, "running")

    open_dashboard(page, live, "/queues")
    p = page.page
    reports = p.locator('tr[data-queue="reports"]')
    expect(reports.locator("[data-role=depth]")).to_have_text("3")
    expect(reports.locator(".badge.status-paused").last).to_have_text("paused")
    expect(p.locator('tr[data-queue="default"] [data-role=running]')).to_have_text("1")

    # the in-process worker and the job it runs now
    (worker,) = client.get("/workers").json()["workers"]
    row = p.locator(f'tr[data-worker="{worker["id"]}"]')
    expect(row).to_contain_text(str(worker["pid"]))
    link = row.locator(".current-jobs a")
    expect(link).to_have_attribute("href", f"/jobs/{running_id}")
    expect(link).to_contain_text("steps")
    screenshot(page, "queues")

    reports.get_by_role("button", name="Resume queue reports").click()
    wait_until(lambda: queue(live, "reports")["paused"] is False, what="the queue to resume")
    expect(reports.locator("[data-role=depth]")).to_have_text("0")
    reports.get_by_role("button", name="Pause queue reports").click()
    wait_until(lambda: queue(live, "reports")["paused"] is True, what="the queue to pause")
    expect(reports.get_by_role("button", name="Resume queue reports")).to_be_visible()

    limit = reports.get_by_role("spinbutton", name="Concurrency limit of queue reports")
    limit.fill("2")
    reports.get_by_role("button", name="Set").click()
    wait_until(lambda: queue(live, "reports")["concurrency"] == 2, what="the limit to be set")
    expect(limit).to_have_value("2")
    reports.get_by_role("button", name="Clear the concurrency limit of queue reports").click()
    wait_until(lambda: queue(live, "reports")["concurrency"] is None, what="the limit to be cleared")
    expect(limit).to_have_value("")

    for gate in ("run/1", "run/2", "run"):
        live.gates.open(gate)
    expect(row.locator(".current-jobs")).to_have_text("idle")
    page.assert_clean()


@pytest.fixture
def as_user(start: StartServer) -> LiveServer:
    """Authentication on; the hook takes the header X-Test-User: ada for a user."""

    async def authenticate(conn: object) -> Principal | None:
        headers = getattr(conn, "headers", {})
        return Principal(owner="ada", role="user") if headers.get("x-test-user") == "ada" else None

    return start(authenticate=authenticate, headers={"X-Test-User": "ada"})


def test_queues_page_for_a_user_hides_admin_controls(as_user: LiveServer, page: PageWatch) -> None:
    as_user.submit("item", text="mine", gate="u")
    page.page.set_extra_http_headers({"X-Test-User": "ada"})
    open_dashboard(page, as_user, "/queues")
    p = page.page
    expect(p.locator('tr[data-queue="default"]')).to_be_visible()
    expect(p.locator(".note")).to_have_text("Workers are shown to admins only.")
    expect(p.get_by_role("button", name=re.compile("Pause|Resume|Set"))).to_have_count(0)
    expect(p.locator('tr[data-queue="default"] [data-role=limit]')).to_have_text("none")
    as_user.gates.open("u")
    page.assert_clean()


# -- overview --------------------------------------------------------------------------------


def test_overview_draws_charts_and_depth(live: LiveServer, page: PageWatch) -> None:
    client = live.client()
    for i in range(4):
        live.submit("item", text=f"o{i}", fail=i == 3)
    assert client.post("/queues/later/pause").status_code == 200
    live.submit("item", text="later", job_options={"queue": "later"})
    live.submit("item", text="later 2", job_options={"queue": "later"})
    blocked = live.submit("steps", gate="ov", count=1)
    live.wait_status(blocked, "running")
    wait_until(lambda: sum(client.get("/stats").json()["finished"]["failed"]) == 1, what="the failure")

    open_dashboard(page, live, "/overview")
    p = page.page
    depth = client.get("/stats", params={"window": "1h"}).json()["depth"]
    assert depth == {"queued": 2, "running": 1, "waiting": 0}
    for name, value in depth.items():
        expect(p.locator(f'[data-stat="{name}"] [data-role=value]')).to_have_text(str(value))
    expect(p.locator('[data-stat="finished"] [data-role=value]')).to_have_text("4")
    expect(p.locator('[data-stat="failed"] [data-role=value]')).to_have_text("1")
    for chart in ("throughput", "failures", "latency"):
        expect(p.locator(f'[data-chart="{chart}"] canvas')).to_have_count(1)
    expect(p.locator('[data-chart="throughput"] .u-legend')).to_contain_text("succeeded")
    width = p.locator('[data-chart="throughput"] .uplot').evaluate("(e) => e.getBoundingClientRect().width")
    screenshot(page, "overview")

    # live: the depth follows (read every 5 s)
    live.gates.open("ov/1")
    live.gates.open("ov")
    expect(p.locator('[data-stat="running"] [data-role=value]')).to_have_text("0", timeout=15_000)

    # the charts follow the page's width
    p.set_viewport_size({"width": 700, "height": 800})
    wait_until(
        lambda: (
            p.locator('[data-chart="throughput"] .uplot').evaluate("(e) => e.getBoundingClientRect().width")
            < width - 100
        ),
        what="the chart to shrink",
    )

    p.get_by_role("button", name="24h").click()
    expect(p).to_have_url(re.compile(r"/overview\?window=24h$"))
    expect(p.get_by_role("button", name="24h")).to_have_attribute("aria-pressed", "true")
    expect(p.locator('[data-stat="finished"] .stat-label')).to_have_text("Finished, last 24 hours")
    p.get_by_role("link", name="Jobs").click()  # unmounts the charts (uPlot destroyed)
    expect(p.locator(".uplot")).to_have_count(0)
    page.assert_clean()


# -- submit ----------------------------------------------------------------------------------


def test_submit_form_from_the_schema_creates_the_job(live: LiveServer, page: PageWatch) -> None:
    open_dashboard(page, live, "/submit")
    p = page.page
    p.get_by_label("Task").select_option("typed")
    expect(p).to_have_url(re.compile(r"/submit\?task=typed$"))
    form = p.locator("form.submit-form")
    # the schema's kinds, defaults and required fields
    assert p.locator("#arg-color").evaluate("(e) => e.tagName") == "SELECT"
    expect(p.locator("#arg-color option")).to_have_text(["(default)", "red", "green"])
    expect(p.locator("#arg-color")).to_have_value("red")
    expect(p.locator("#arg-urgent")).to_have_attribute("type", "checkbox")
    expect(p.locator("#arg-urgent")).not_to_be_checked()
    expect(p.locator("#arg-count")).to_have_attribute("type", "number")
    expect(p.locator("#arg-count")).to_have_attribute("step", "1")
    expect(p.locator("#arg-count")).to_have_value("2")
    expect(p.locator("#arg-ratio")).to_have_value("0.5")
    assert p.locator("#arg-tags").evaluate("(e) => e.tagName") == "TEXTAREA"
    expect(p.locator("#arg-name")).to_have_attribute("aria-required", "true")
    expect(form.locator('[data-field="name"] .required')).to_have_text("*")
    expect(p.locator("#arg-count")).not_to_have_attribute("aria-required", "true")

    p.get_by_label("Name").fill(XSS)
    p.locator("#arg-count").fill("5")
    p.locator("#arg-ratio").fill("0.25")
    p.get_by_label("Urgent").check()
    p.locator("#arg-color").select_option("green")
    p.locator("#arg-tags").fill("alpha\nbeta")
    form.get_by_role("button", name="Job options").click()
    p.get_by_label("Priority").fill("3")
    p.get_by_label("Labels").fill("team=ops\nrun = nightly")
    screenshot(page, "submit")

    form.get_by_role("button", name="Submit typed").click()

    expect(p).to_have_url(re.compile(r"/jobs/[0-9a-z]+$"))
    job_id = p.url.rsplit("/", 1)[1]
    job = live.wait_status(job_id, "succeeded")
    expected = {
        "name": XSS,
        "count": 5,
        "ratio": 0.25,
        "urgent": True,
        "color": "green",
        "tags": ["alpha", "beta"],
    }
    assert job["args"] == expected
    assert job["result"] == expected
    assert job["priority"] == 3
    assert job["labels"] == {"team": "ops", "run": "nightly"}
    assert p.locator("img").count() == 0
    page.assert_clean()


def test_submit_shows_the_api_validation_errors(live: LiveServer, page: PageWatch) -> None:
    open_dashboard(page, live, "/submit?task=typed")
    p = page.page
    p.get_by_label("Name").fill("x")
    p.locator("#arg-count").fill("1.5")
    p.get_by_role("button", name="Submit typed").click()

    alert = p.locator(".submit-problem")
    expect(alert).to_contain_text("invalid arguments for task 'typed'")
    field = p.locator('[data-field="count"]')
    expect(field.locator(".field-error")).to_have_text("Input should be a valid integer")
    expect(p.locator("#arg-count")).to_have_attribute("aria-invalid", "true")
    assert live.client().get("/jobs").json()["jobs"] == []

    # a job option the API refuses is shown at its field; a bad label line before sending
    p.locator("#arg-count").fill("1")
    p.get_by_role("button", name="Job options").click()
    p.get_by_label("Labels").fill("no equals sign")
    p.get_by_role("button", name="Submit typed").click()
    expect(p.locator('[data-field="count"] .field-error')).to_have_count(0)
    expect(p.locator("#option-labels-help")).to_have_text('"no equals sign" is not key=value.')
    p.get_by_label("Labels").fill("")
    p.get_by_label("Max attempts").fill("0")
    p.get_by_role("button", name="Submit typed").click()
    expect(p.locator("#option-max_attempts-help")).to_contain_text("greater than or equal to 1")
    assert live.client().get("/jobs").json()["jobs"] == []
    # Chromium logs each refused request; those two were the point
    refused = [text for text in page.console_errors if "status of 422" in text and "/api/jobs" in text]
    assert len(refused) == 2, page.console_errors
    page.console_errors = [text for text in page.console_errors if text not in refused]
    page.assert_clean()
