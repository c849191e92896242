"""<underway-job> and <underway-batch> in Chromium, on a page with a strict CSP, against a real
server: the bar, the events, cancel, questions, text-only rendering, batches, tokens, cleanup.

Every test ends with ``page.assert_clean()``: no console error, no uncaught error, no CSP
violation on the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from browser_support import SOON, LiveServer, PageWatch, StartServer, expect, wait_until
from postgres_support import fresh_postgres_url

from underway.auth import Principal

if TYPE_CHECKING:
    from playwright.sync_api import Locator

XSS = '<img src=x onerror="window.__xss=1">'


def job_bar(page: PageWatch) -> Locator:
    return page.page.locator("underway-job").get_by_role("progressbar")


def run_steps(live: LiveServer, page: PageWatch, count: int = 4, **params: str) -> str:
    """Open a page on a ``steps`` job, open its gates one by one checking the bar, end it."""
    job_id = live.submit("steps", gate="g", count=count)
    page.open(live, element="job", id=job_id, **params)
    element = page.page.locator("underway-job")
    expect(element).to_have_attribute("status", "running")
    bar = job_bar(page)
    for i in range(1, count + 1):
        live.gates.open(f"g/{i}")
        expect(bar).to_have_attribute("aria-valuenow", str(round(100 * i / count, 1)).removesuffix(".0"))
        expect(element.locator("[part~=message]")).to_have_text(f"step {i}")
    live.gates.open("g")
    expect(element).to_have_attribute("status", "succeeded")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(element.locator("[part~=cancel]")).to_be_hidden()
    return job_id


@pytest.mark.parametrize("transport", ["sse", "ws", "poll"])
def test_bar_moves_to_100_and_events_fire(live: LiveServer, page: PageWatch, transport: str) -> None:
    job_id = run_steps(live, page, transport=transport)

    ends = wait_until(lambda: page.recorded("end"), what="underway-end")
    assert len(ends) == 1
    assert ends[0]["status"] == "succeeded"
    assert ends[0]["job"]["id"] == job_id
    assert ends[0]["job"]["result"] == 4
    progress = page.recorded("progress")
    percents = [(state.get("progress") or {}).get("percent") for state in progress]
    assert [p for p in (25, 50, 75, 100) if p in percents] == [25, 50, 75, 100], percents
    assert progress[-1]["status"] == "succeeded"
    page.assert_clean()


@pytest.fixture
def on_postgres(start: StartServer) -> Iterator[LiveServer]:
    """A server on a fresh PostgreSQL schema (skips without PostgreSQL; fails under CI=true)."""
    for url in fresh_postgres_url():  # one URL; the schema is dropped once the loop goes on
        live = start(url=url)
        try:
            yield live
        finally:
            live.stop()  # before the schema goes


def test_bar_moves_to_100_on_postgres(on_postgres: LiveServer, page: PageWatch) -> None:
    run_steps(on_postgres, page)
    wait_until(lambda: page.recorded("end"), what="underway-end")
    page.assert_clean()


def test_cancel_button_cancels_the_job(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("steps", gate="c", count=2)
    page.open(live, element="job", id=job_id)
    element = page.page.locator("underway-job")
    live.gates.open("c/1")
    expect(job_bar(page)).to_have_attribute("aria-valuenow", "50")

    element.get_by_role("button", name="Cancel").click()

    expect(element).to_have_attribute("status", "cancelled")
    expect(element).to_have_attribute("ended", "")
    expect(element.get_by_role("button", name="Cancel")).to_be_hidden()
    assert live.wait_status(job_id, "cancelled")["status"] == "cancelled"
    ends = wait_until(lambda: page.recorded("end"), what="underway-end")
    assert [end["status"] for end in ends] == ["cancelled"]
    page.assert_clean()


def test_answering_from_the_buttons_resumes_the_job(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("ask", question="Ship it?", options=["yes", "no"])
    page.open(live, element="job", id=job_id)
    element = page.page.locator("underway-job")
    expect(element).to_have_attribute("status", "waiting")
    expect(element.locator("[part~=question]")).to_have_text("Ship it?")
    options = element.locator("[part~=option]")
    expect(options).to_have_text(["yes", "no"])

    element.get_by_role("button", name="no").click()

    expect(element).to_have_attribute("status", "succeeded")
    expect(element.locator("[part~=prompt]")).to_be_hidden()
    assert live.wait_status(job_id, "succeeded")["result"] == {"answer": "no"}
    ends = wait_until(lambda: page.recorded("end"), what="underway-end")
    assert ends[0]["job"]["result"] == {"answer": "no"}
    page.assert_clean()


def test_failure_shows_the_error_as_text(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("boom", message=XSS, job_options={"max_attempts": 1})
    page.open(live, element="job", id=job_id)
    element = page.page.locator("underway-job")
    expect(element).to_have_attribute("status", "failed")
    expect(element.locator("[part~=error]")).to_have_text(f"ValueError: {XSS}")
    expect(job_bar(page)).to_have_attribute("aria-valuenow", "25")
    expect(element.locator("[part~=cancel]")).to_be_hidden()
    ends = wait_until(lambda: page.recorded("end"), what="underway-end")
    assert [end["status"] for end in ends] == ["failed"]
    assert page.page.locator("img").count() == 0
    assert page.page.evaluate("window.__xss") is None
    page.assert_clean()


def test_job_strings_stay_text(live: LiveServer, page: PageWatch) -> None:
    """A message, a question and an option that look like HTML are shown as they are."""
    job_id = live.submit("ask", question=XSS, options=[XSS, "<b>bold</b>"])
    page.open(live, element="job", id=job_id)
    element = page.page.locator("underway-job")
    expect(element).to_have_attribute("status", "waiting")
    expect(element.locator("[part~=message]")).to_have_text(XSS)
    expect(element.locator("[part~=question]")).to_have_text(XSS)
    expect(element.locator("[part~=option]")).to_have_text([XSS, "<b>bold</b>"])
    assert page.page.locator("img").count() == 0  # CSS locators pierce the shadow root
    assert element.locator("b").count() == 0

    element.get_by_role("button", name=XSS).click()

    expect(element).to_have_attribute("status", "succeeded")
    assert live.wait_status(job_id, "succeeded")["result"] == {"answer": XSS}
    assert page.page.locator("img").count() == 0
    assert page.page.evaluate("window.__xss") is None
    page.assert_clean()


def test_batch_shows_counts_and_ends_at_100(live: LiveServer, page: PageWatch) -> None:
    items = [{"text": f"item {i}", "gate": "b", "fail": i == 4} for i in range(6)]
    batch_id = live.submit_batch("item", items)
    page.open(live, element="batch", id=batch_id)
    element = page.page.locator("underway-batch")
    bar = element.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "0")
    expect(element.locator("[part~=count]").first).to_be_visible()

    live.gates.open("b")

    expect(element).to_have_attribute("status", "partial")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(element.locator("[part~=count]")).to_have_text(["5 succeeded", "1 failed"])
    expect(element.locator("[part~=percent]")).to_have_text("100 %")
    widths = element.locator("[part~=segment]").evaluate_all("(all) => all.map((s) => s.style.width)")
    assert [round(float(w.removesuffix("%")), 2) for w in widths[:3]] == [83.33, 16.67, 0]
    ends = wait_until(lambda: page.recorded("end"), what="underway-end")
    assert len(ends) == 1
    assert ends[0]["status"] == "partial"
    assert ends[0]["batch"]["counts"]["succeeded"] == 5
    assert page.recorded("progress")[-1]["percent"] == 100
    page.assert_clean()


@pytest.fixture
def owned(start: StartServer) -> LiveServer:
    """A server with authentication on (a hook that knows one header); the page has no
    credentials but what its backend (``POST /browser/token``) mints for ada."""

    async def authenticate(conn: object) -> Principal | None:
        headers = getattr(conn, "headers", {})
        return Principal(owner="ada", role="user") if headers.get("x-test-user") == "ada" else None

    return start(authenticate=authenticate, headers={"X-Test-User": "ada"}, owner="ada")


@pytest.mark.parametrize("how", ["token-url", "provider", "token"])
def test_tokens(owned: LiveServer, page: PageWatch, how: str) -> None:
    """With authentication on, the element watches and cancels with a stream token from a
    token-url, a tokenProvider, or a token attribute."""
    job_id = owned.submit("steps", gate="t", count=2)
    if how == "token":
        response = owned.client().post("/stream-tokens", json={"job": job_id})
        assert response.status_code == 201, response.text
        page.open(owned, element="job", id=job_id, token=response.json()["token"])
    elif how == "token-url":
        page.open(owned, element="job", id=job_id, **{"token-url": "/browser/token"})
    else:
        page.open(owned, element="job", id=job_id, provider="/browser/token")
    element = page.page.locator("underway-job")
    owned.gates.open("t/1")
    expect(job_bar(page)).to_have_attribute("aria-valuenow", "50")
    element.get_by_role("button", name="Cancel").click()
    expect(element).to_have_attribute("status", "cancelled")
    if how != "token":
        assert owned.web.state.tokens_minted >= 1
    page.assert_clean()


def test_rewatches_on_new_id_and_closes_when_removed(live: LiveServer, page: PageWatch) -> None:
    first = live.submit("steps", gate="one", count=2)
    second = live.submit("steps", gate="two", count=4)
    page.open(live, element="job", id=first)
    element = page.page.locator("underway-job")
    live.gates.open("one/1")
    expect(job_bar(page)).to_have_attribute("aria-valuenow", "50")
    wait_until(lambda: live.open_streams("sse") == 1, what="one open stream")

    page.page.evaluate(f"window.__element.setAttribute('job-id', {second!r})")
    live.gates.open("two/1")
    expect(job_bar(page)).to_have_attribute("aria-valuenow", "25")
    expect(element.locator("[part~=message]")).to_have_text("step 1")
    wait_until(lambda: live.open_streams("sse") == 1, what="the first stream to close")

    page.page.evaluate("window.__element.remove()")
    wait_until(lambda: live.open_streams("sse") == 0, SOON, what="the stream to close on removal")
    live.gates.open("two/2")
    assert live.job(second)["progress"]["percent"] == 50
    assert page.recorded("end") == []
    page.assert_clean()
