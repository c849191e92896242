"""The dashboard's jobs list (``/``) and job page (``/jobs/{id}``) in Chromium, against a real
server: live rows fed by one stream, filters in the URL, search, paging, freeze, actions on one
job, on the selection and on everything matching; the job's progress, logs, question, result,
error and events.

Every test ends with ``page.assert_clean()``: no console error, uncaught error or CSP violation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote_plus, urlsplit

import pytest
from browser_support import LiveServer, PageWatch, StartServer, expect, wait_until
from dashboard_support import open_dashboard, postgres_server, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page, Request


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, start: StartServer) -> Iterator[LiveServer]:
    """A server on SQLite, then on a fresh PostgreSQL schema (skips without PostgreSQL)."""
    if request.param == "sqlite":
        yield start()
    else:
        yield from postgres_server(start)


def table_rows(page: PageWatch) -> Locator:
    return page.page.locator("table#jobs tbody tr[data-job-id]")


def row(page: PageWatch, job_id: str) -> Locator:
    return page.page.locator(f'table#jobs tr[data-job-id="{job_id}"]')


def shown_ids(page: PageWatch) -> list[str]:
    ids: list[str] = table_rows(page).evaluate_all("(rows) => rows.map((r) => r.dataset.jobId)")
    return ids


def expect_ids(page: PageWatch, ids: list[str]) -> None:
    """Wait until the table shows exactly these jobs, in this order."""
    wait_until(lambda: shown_ids(page) == ids, what=f"the rows {ids}")


def set_url_field(page: PageWatch, label: str, value: str) -> None:
    """Type into one of the filters and wait until the URL holds it (typing is debounced)."""
    page.page.get_by_label(label, exact=True).fill(value)
    name = "q" if label == "Search" else label.lower()
    wanted = f"{name}={quote_plus(value)}"
    wait_until(lambda: wanted in location(page), what=f"{wanted} in the URL")


def location(page: PageWatch) -> str:
    """The page's URL now (``page.url`` misses ``history.replaceState``)."""
    href: str = page.page.evaluate("location.href")
    return href


def toast(page: PageWatch, text: str) -> None:
    expect(page.page.locator(".toast", has_text=text)).to_be_visible()


def requests_to(page: Page, path: str) -> list[str]:
    """The URLs of the requests to ``path`` (and its query) the page makes from now on."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if urlsplit(request.url).path == path:
            seen.append(request.url)

    page.on("request", record)
    return seen


# -- the live table ------------------------------------------------------------------------------


def test_new_job_appears_live_moves_to_100_and_shows_its_result(server: LiveServer, page: PageWatch) -> None:
    streams = requests_to(page.page, "/api/stream")
    lists = requests_to(page.page, "/api/jobs")
    open_dashboard(page, server)
    expect(page.page.locator(".live.on")).to_have_text("live")
    expect(page.page.locator("table#jobs .empty")).to_contain_text("No jobs yet")

    job_id = server.submit("steps", gate="g", count=2, message="copying")

    line = row(page, job_id)
    expect(line).to_have_attribute("data-status", "running")
    bar = line.locator("progress")
    server.gates.open("g/1")
    expect(bar).to_have_attribute("value", "50")
    expect(line.locator(".jobs-message")).to_have_text("copying 1")
    server.gates.open("g/2")
    expect(bar).to_have_attribute("value", "100")
    server.gates.open("g")
    expect(line).to_have_attribute("data-status", "succeeded")
    expect(line.locator(".badge")).to_have_text("succeeded")
    expect(line.get_by_role("button", name="Cancel")).to_have_count(0)
    # one stream for the whole table, which it read once; the new job was looked up once
    assert len(streams) == 1, streams
    assert server.open_streams("sse") == 1
    assert [url for url in lists if "ids=" not in url] == [f"{server.base}/api/jobs?limit=50"]
    assert [url for url in lists if "ids=" in url] == [f"{server.base}/api/jobs?ids={job_id}&limit=1"]

    line.get_by_role("link", name=job_id).click()
    expect(page.page.locator(".job-page")).to_have_attribute("data-status", "succeeded")
    expect(page.page.locator(".job-page progress")).to_have_attribute("value", "100")
    expect(page.page.locator(".job-percent")).to_have_text("100 %")
    expect(page.page.locator(".job-result pre.json")).to_have_text("2")
    expect(page.page.locator(".job-message")).to_have_text("copying 2")
    expect(page.page.locator(".job-attempts tbody tr")).to_have_count(1)
    page.assert_clean()


def test_cancel_from_the_job_page_stops_a_running_job(server: LiveServer, page: PageWatch) -> None:
    job_id = server.submit("steps", gate="c", count=3)
    open_dashboard(page, server, f"/jobs/{job_id}")
    job = page.page.locator(".job-page")
    expect(job).to_have_attribute("data-status", "running")
    server.gates.open("c/1")
    expect(job.locator("progress")).to_have_attribute("value", "33.3")
    expect(job.locator(".job-count")).to_have_text("1 / 3")

    job.get_by_role("button", name="Cancel", exact=True).click()

    expect(job).to_have_attribute("data-status", "cancelled")
    expect(job.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    assert server.wait_status(job_id, "cancelled")["status"] == "cancelled"
    attempts = job.locator(".job-attempts tbody tr[data-attempt]")
    expect(attempts).to_contain_text("stopped after a cancel request")

    # run again: the page follows it from where its events stopped
    job.get_by_role("button", name="Retry").click()
    expect(job).to_have_attribute("data-status", "running")
    server.gates.open("c/2")
    expect(job.locator(".job-count")).to_have_text("2 / 3")
    expect(attempts).to_have_count(2)
    expect(job.locator(".job-attempts tr.job-note")).to_contain_text("run again by hand")
    page.assert_clean()


def test_cancel_all_matching_cancels_exactly_the_matching_jobs(live: LiveServer, page: PageWatch) -> None:
    alpha = [live.submit("steps", gate="never", count=1, message=f"alpha {i}") for i in range(3)]
    beta = [live.submit("steps", gate="never", count=1, message=f"beta {i}") for i in range(2)]
    open_dashboard(page, live, "/?q=alpha")
    expect(table_rows(page)).to_have_count(3)
    assert sorted(shown_ids(page)) == sorted(alpha)

    page.page.get_by_role("button", name="Cancel all matching").click()
    page.page.get_by_role("button", name="Yes").click()

    toast(page, "Cancelled 3 jobs")
    for job_id in alpha:
        expect(row(page, job_id)).to_have_attribute("data-status", "cancelled")
        live.wait_status(job_id, "cancelled")
    for job_id in beta:
        assert live.job(job_id)["status"] in ("queued", "running")
    page.assert_clean()


def test_cancel_selected(live: LiveServer, page: PageWatch) -> None:
    jobs = [live.submit("steps", gate="never", count=1) for _ in range(3)]
    open_dashboard(page, live)
    expect(table_rows(page)).to_have_count(3)
    cancel_selected = page.page.get_by_role("button", name="Cancel selected")
    expect(cancel_selected).to_be_disabled()

    row(page, jobs[0]).get_by_role("checkbox").check()
    row(page, jobs[2]).get_by_role("checkbox").check()
    expect(page.page.locator(".jobs-bulk")).to_contain_text("2 jobs selected")
    cancel_selected.click()

    toast(page, "Cancelled 2 jobs")
    expect(row(page, jobs[0])).to_have_attribute("data-status", "cancelled")
    expect(row(page, jobs[2])).to_have_attribute("data-status", "cancelled")
    assert live.job(jobs[1])["status"] in ("queued", "running")
    page.page.get_by_label("Select all on page").check()
    expect(page.page.locator(".jobs-bulk")).to_contain_text("3 jobs selected")
    page.assert_clean()


def test_retry_a_failed_job_from_its_row_and_all_failed_matching(live: LiveServer, page: PageWatch) -> None:
    once = {"max_attempts": 1}
    first = live.submit("boom", message="omega one", job_options=once)
    second = live.submit("boom", message="omega two", job_options=once)
    other = live.submit("boom", message="other", job_options=once)
    for job_id in (first, second, other):
        live.wait_status(job_id, "failed")
    open_dashboard(page, live, "/?status=failed")
    expect(table_rows(page)).to_have_count(3)

    row(page, first).get_by_role("button", name="Retry").click()

    toast(page, f"Retrying {first}")
    wait_until(lambda: live.job(first)["attempt"] == 2 and live.job(first)["status"] == "failed")
    expect(row(page, first)).to_have_attribute("data-status", "failed")
    expect(row(page, first).locator("td.num")).to_have_text("2/1")

    set_url_field(page, "Search", "omega")
    expect_ids(page, [second, first])
    page.page.get_by_role("button", name="Retry all failed matching").click()
    page.page.get_by_role("button", name="Yes").click()

    toast(page, "Retried 2 jobs")
    wait_until(lambda: live.job(first)["attempt"] == 3 and live.job(first)["status"] == "failed")
    wait_until(lambda: live.job(second)["attempt"] == 2 and live.job(second)["status"] == "failed")
    assert live.job(other)["attempt"] == 1
    page.assert_clean()


def test_a_job_that_starts_to_match_the_status_filter_appears(live: LiveServer, page: PageWatch) -> None:
    open_dashboard(page, live, "/?status=succeeded")
    expect(page.page.locator(".live.on")).to_be_visible()
    running = live.submit("steps", gate="s", count=1)
    done = live.submit("item", text="quick")
    expect(row(page, done)).to_have_attribute("data-status", "succeeded")
    expect(row(page, running)).to_have_count(0)
    live.gates.open("s/1")
    live.gates.open("s")
    expect(row(page, running)).to_have_attribute("data-status", "succeeded")
    expect_ids(page, [done, running])  # newest first
    page.assert_clean()


# -- filters, search, paging, freeze -------------------------------------------------------------


def test_search_finds_a_job_by_argument_text_or_id(live: LiveServer, page: PageWatch) -> None:
    jobs = {text: live.submit("item", text=text) for text in ("apple pie", "Banana split", "cherry tart")}
    for job_id in jobs.values():
        live.wait_status(job_id, "succeeded")
    open_dashboard(page, live)
    expect(table_rows(page)).to_have_count(3)

    set_url_field(page, "Search", "banana")
    expect_ids(page, [jobs["Banana split"]])

    prefix = jobs["cherry tart"][:20]
    set_url_field(page, "Search", prefix)
    expect_ids(page, [jobs["cherry tart"]])

    set_url_field(page, "Search", "nothing like it")
    expect(page.page.locator("table#jobs .empty")).to_have_text("No job matches these filters.")
    page.assert_clean()


def test_filters_are_kept_in_the_url_and_survive_a_reload(live: LiveServer, page: PageWatch) -> None:
    failed = live.submit("boom", message="x", job_options={"max_attempts": 1})
    live.submit("item", text="fine")
    labelled = live.submit("item", text="labelled", job_options={"labels": {"team": "blue"}})
    live.wait_status(failed, "failed")
    live.wait_status(labelled, "succeeded")
    open_dashboard(page, live)
    expect(table_rows(page)).to_have_count(3)

    streams = requests_to(page.page, "/api/stream")
    page.page.get_by_label("Status", exact=True).select_option("failed")
    set_url_field(page, "Task", "boom")
    expect_ids(page, [failed])
    # a stream takes no status: a new one for the task only, and the old one is closed
    assert len(streams) == 1, streams
    assert "task=boom" in streams[0]
    wait_until(lambda: live.open_streams("sse") == 1, what="one open stream")
    page.page.reload()
    expect(page.page.get_by_label("Status", exact=True)).to_have_value("failed")
    expect(page.page.get_by_label("Task", exact=True)).to_have_value("boom")
    expect_ids(page, [failed])

    page.page.get_by_role("button", name="Clear filters").click()
    expect(table_rows(page)).to_have_count(3)
    set_url_field(page, "Label", "team:blue")
    expect_ids(page, [labelled])
    page.page.go_back()  # a change of filter is a history entry (typing replaces it)
    expect(page.page.get_by_label("Status", exact=True)).to_have_value("failed")
    expect(page.page.get_by_label("Label", exact=True)).to_have_value("")
    expect_ids(page, [failed])
    page.assert_clean()


def test_freeze_holds_updates_until_unfrozen(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("steps", gate="f", count=2)
    open_dashboard(page, live)
    bar = row(page, job_id).locator("progress")
    live.gates.open("f/1")
    expect(bar).to_have_attribute("value", "50")

    page.page.get_by_label("Freeze").check()
    expect(page.page.locator(".jobs-pending")).to_be_visible()
    live.gates.open("f/2")
    expect(page.page.locator(".jobs-pending")).to_have_text(re.compile(r"^[1-9]\d* updates? pending$"))
    live.gates.open("f")
    live.wait_status(job_id, "succeeded")
    expect(page.page.locator(".jobs-pending")).to_have_text(re.compile(r"^[2-9]\d* updates pending$"))
    assert bar.get_attribute("value") == "50"
    assert row(page, job_id).get_attribute("data-status") == "running"
    new = live.submit("item", text="while frozen")
    live.wait_status(new, "succeeded")
    expect(page.page.locator(".jobs-pending")).to_have_text(re.compile(r"^[3-9]\d* updates pending$"))
    expect(row(page, new)).to_have_count(0)

    page.page.get_by_label("Freeze").uncheck()

    expect(bar).to_have_attribute("value", "100")
    expect(row(page, job_id)).to_have_attribute("data-status", "succeeded")
    expect(row(page, new)).to_have_attribute("data-status", "succeeded")
    expect(page.page.locator(".jobs-pending")).to_have_count(0)
    page.assert_clean()


def test_paging_with_a_cursor(live: LiveServer, page: PageWatch) -> None:
    batch = live.submit_batch("item", [{"text": f"page item {i}"} for i in range(60)])
    open_dashboard(page, live, f"/?batch={batch}")
    expect(table_rows(page)).to_have_count(50)
    first_page = shown_ids(page)
    newer = page.page.get_by_role("button", name="← Newer")
    older = page.page.get_by_role("button", name="Older →")
    expect(newer).to_be_disabled()

    older.click()
    expect(table_rows(page)).to_have_count(10)
    second_page = shown_ids(page)
    assert not set(first_page) & set(second_page)
    assert min(first_page) > max(second_page)
    expect(older).to_be_disabled()

    newer.click()
    expect(table_rows(page)).to_have_count(50)
    assert shown_ids(page) == first_page
    page.assert_clean()


# -- the job page --------------------------------------------------------------------------------


def test_answering_with_an_option_button_resumes_the_job(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("ask", question="Ship it?", options=["yes", "no"])
    open_dashboard(page, live, f"/jobs/{job_id}")
    question = page.page.locator(".job-question")
    expect(question.locator(".job-question-text")).to_have_text("Ship it?")
    expect(question.get_by_role("button")).to_have_text(["yes", "no"])

    question.get_by_role("button", name="no").click()

    expect(page.page.locator(".job-page")).to_have_attribute("data-status", "succeeded")
    expect(question).to_have_count(0)
    expect(page.page.locator(".job-result pre.json")).to_have_text('{\n  "answer": "no"\n}')
    assert live.wait_status(job_id, "succeeded")["result"] == {"answer": "no"}
    expect(page.page.locator(".job-page progress")).to_have_attribute("value", "100")
    page.assert_clean()


def test_a_structured_answer_through_the_generated_form(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("survey", question="Who and how many?")
    open_dashboard(page, live, f"/jobs/{job_id}")
    form = page.page.locator(".job-question form")
    expect(form).to_be_visible()
    expect(form.locator("label")).to_have_text(["name *", "count *"])
    name = form.get_by_label("name")
    count = form.get_by_label("count")
    expect(count).to_have_attribute("type", "number")
    expect(count).to_have_attribute("min", "1")
    expect(name).to_have_attribute("required", "")

    name.fill("Ada")
    page.page.get_by_label("Level").select_option("info")  # the page is drawn again: "Ada" stays
    count.fill("3")
    expect(name).to_have_value("Ada")
    form.get_by_role("button", name="Answer").click()

    expect(page.page.locator(".job-page")).to_have_attribute("data-status", "succeeded")
    assert live.wait_status(job_id, "succeeded")["result"] == {"name": "Ada", "count": 3}
    expect(page.page.locator(".job-result pre.json")).to_contain_text('"count": 3')

    # a finished job can be deleted; the page goes back to the list
    page.page.get_by_role("button", name="Delete").click()
    page.page.get_by_role("button", name="Yes").click()
    expect(page.page.locator("table#jobs")).to_be_visible()
    assert live.client().get(f"/jobs/{job_id}").status_code == 404
    page.assert_clean()


def test_logs_stream_in_and_the_level_filter_works(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("chatty", text="<b>line</b>", lines=8, gate="more")
    open_dashboard(page, live, f"/jobs/{job_id}")
    logs = page.page.locator(".job-logs li.job-log")
    expect(logs).to_have_count(8)
    expect(logs.first.locator(".job-log-message")).to_have_text("<b>line</b> 1")
    assert page.page.locator(".job-logs b").count() == 0
    expect(page.page.locator(".job-step")).to_have_text(re.compile(r"^step 1 of 2"))
    expect(page.page.get_by_label("Follow")).to_be_checked()

    page.page.get_by_label("Level").select_option("error")
    expect(logs).to_have_count(2)
    assert logs.evaluate_all("(all) => all.map((li) => li.dataset.level)") == ["error", "error"]
    assert "level=error" in location(page)
    page.page.reload()
    expect(page.page.get_by_label("Level")).to_have_value("error")
    expect(logs).to_have_count(2)

    live.gates.open("more")
    expect(page.page.locator(".job-page")).to_have_attribute("data-status", "succeeded")
    expect(page.page.locator(".job-step")).to_contain_text("step 2 of 2")
    page.page.get_by_label("Level").select_option("all")
    expect(logs).to_have_count(8)

    timeline = page.page.locator(".job-timeline")
    timeline.locator("summary").click()
    events = timeline.locator("tbody tr")
    last_seq = live.job(job_id)["last_seq"]
    expect(events).to_have_count(last_seq)
    expect(events.last).to_have_attribute("data-type", "status")
    expect(events.last).to_contain_text("succeeded")
    page.assert_clean()


def test_a_failed_job_shows_its_error_traceback_and_attempts(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("boom", message="<img src=x onerror=alert(1)>", job_options={"max_attempts": 2})
    live.wait_status(job_id, "failed")
    open_dashboard(page, live, f"/jobs/{job_id}")
    error = page.page.locator(".job-error")
    expect(error.locator(".job-error-line")).to_have_text("ValueError: <img src=x onerror=alert(1)>")
    expect(error.locator("pre.trace")).to_contain_text("Traceback")
    attempts = page.page.locator(".job-attempts tbody tr[data-attempt]")
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("another attempt follows")
    expect(attempts.nth(1)).to_contain_text("failed on its last attempt")
    assert page.page.locator(".job-page img").count() == 0
    page.assert_clean()


def test_an_unknown_job_says_so(live: LiveServer, page: PageWatch) -> None:
    open_dashboard(page, live, "/jobs/no-such-job")
    expect(page.page.locator(".job-missing h1")).to_have_text("No such job")
    expect(page.page.locator(".job-missing")).to_contain_text("no-such-job")
    # the one request that answered 404 is the browser's console error, and nothing else
    assert all("404" in error for error in page.console_errors), page.console_errors
    page.console_errors.clear()
    page.assert_clean()


# -- screenshots ---------------------------------------------------------------------------------


def some_jobs(live: LiveServer) -> dict[str, str]:
    """Jobs in every state, for the screenshots."""
    jobs = {
        "done": live.submit("item", text="report 2025-Q1", job_options={"labels": {"team": "finance"}}),
        "failed": live.submit("boom", message="the upstream API said 503", job_options={"max_attempts": 1}),
        "asking": live.submit("ask", question="Publish the report?", options=["publish", "hold"]),
        "running": live.submit("chatty", text="exporting rows", lines=6, gate="shot"),
        "copying": live.submit("steps", gate="copy", count=4, message="copying shard"),
    }
    live.gates.open("copy/1")
    live.gates.open("copy/2")
    live.gates.open("copy/3")
    live.wait_status(jobs["failed"], "failed")
    live.wait_status(jobs["asking"], "waiting")
    return jobs


def take_screenshots(page: PageWatch, live: LiveServer, jobs: dict[str, str], suffix: str) -> None:
    open_dashboard(page, live)
    expect(table_rows(page)).to_have_count(len(jobs))
    expect(row(page, jobs["copying"]).locator("progress")).to_have_attribute("value", "75")
    expect(page.page.locator(".live.on")).to_be_visible()
    screenshot(page, f"jobs{suffix}")
    open_dashboard(page, live, f"/jobs/{jobs['running']}")
    expect(page.page.locator(".job-logs li.job-log")).to_have_count(6)
    screenshot(page, f"job{suffix}")


def test_screenshots(live: LiveServer, page: PageWatch, browser: Browser) -> None:
    jobs = some_jobs(live)
    take_screenshots(page, live, jobs, "")
    open_dashboard(page, live, f"/jobs/{jobs['asking']}")
    expect(page.page.locator(".job-question")).to_be_visible()
    screenshot(page, "job-question")
    open_dashboard(page, live, f"/jobs/{jobs['failed']}")
    expect(page.page.locator(".job-error pre.trace")).to_be_visible()
    screenshot(page, "job-failed")
    page.page.set_viewport_size({"width": 360, "height": 800})
    take_screenshots(page, live, jobs, "-narrow")
    width = page.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the job page is {width} px wide at 360 px"
    page.assert_clean()

    context = browser.new_context(color_scheme="dark")
    try:
        dark = PageWatch(context.new_page())
        take_screenshots(dark, live, jobs, "-dark")
        dark.assert_clean()
    finally:
        context.close()


def test_the_jobs_page_fits_360_px(live: LiveServer, page: PageWatch) -> None:
    live.submit("steps", gate="narrow", count=2, message="a rather long progress message that goes on")
    page.page.set_viewport_size({"width": 360, "height": 800})
    open_dashboard(page, live)
    expect(table_rows(page)).to_have_count(1)
    hidden = page.page.locator("table#jobs thead th.hide-narrow").first
    expect(hidden).to_be_hidden()
    width = page.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the jobs page is {width} px wide at 360 px"
    page.assert_clean()
