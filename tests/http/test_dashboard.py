"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright),
on the shared stack, which configures no Sentry and no collector (the console with them:
``test_http_console.py``).

Never ``playwright install``: the browser comes from apt (``.ci/run`` installs it).
The page is served with its own strict Content-Security-Policy, which proves it needs no
inline script or style. The screenshot lands in ``test-results/dashboard.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.browser import ARTIFACTS, chromium, needs_chromium

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def test_dashboard_starts_a_job_and_shows_it_finish(browser: Any, api_server: str) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    problems: list[str] = []
    requests: list[Any] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("request", lambda request: requests.append(request))

    answer = page.goto(f"{api_server}/dashboard")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy  # no telemetry origin
    page.wait_for_selector("#health-redis.ok", timeout=10_000)
    assert page.text_content("#health-storage") == "ok"

    page.fill("#file-ids", "70000 70007 70014 70001")
    job = start_and_find(page)
    job.locator("a.download").wait_for(state="visible", timeout=30_000)
    assert job.get_attribute("data-status") == "completed"
    assert job.locator("progress").evaluate("el => el.value") == 100
    assert job.locator(".job-percent").text_content() == "100 %"
    assert "missing 70001" in (job.locator(".job-files").text_content() or "")
    job_id = job.get_attribute("data-job-id")
    href = job.locator("a.download").get_attribute("href")
    assert href == f"/v1/download/{job_id}"
    # The link leads to the bundle (302 to a presigned URL).
    assert httpx.get(f"{api_server}{href}", timeout=10).status_code == 302
    page.wait_for_function("document.getElementById('stat-completed').textContent !== '\u2013'", timeout=10_000)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # Remembered across a reload (localStorage), and shown finished again.
    page.reload()
    again = page.locator(f'.job[data-job-id="{job_id}"]')
    again.locator("a.download").wait_for(state="visible", timeout=10_000)
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    # Without DASHBOARD_SENTRY_DSN / DASHBOARD_OTLP_ENDPOINT nothing is loaded for them and no
    # call carries a traceparent.
    assert not [r.url for r in requests if "sentry.min.js" in r.url or "otel.min.js" in r.url]
    assert not [r.url for r in requests if "traceparent" in r.headers]
    assert page.text_content("#telemetry-sentry") == "off" and page.text_content("#telemetry-traces") == "off"
    # No 404 (a favicon's is an error in every console), and every request stayed on the origin.
    assert not [p for p in problems if "404" in p], problems
    assert {r.url.split("/")[2] for r in requests} == {api_server.split("/")[2]}
    page.close()


def start_and_find(page: Any) -> Any:
    """Click start and return the new job's card (the page also lists the server's history)."""
    with page.expect_response(lambda r: r.url.endswith("/v1/download/initiate")) as answer:
        page.click("#start")
    job_id = answer.value.json()["jobId"]
    return page.locator(f'.job[data-job-id="{job_id}"]')


def test_dashboard_lists_the_servers_history(browser: Any, api_server: str) -> None:
    """A job started elsewhere (a script) shows up on a fresh page: the history comes from the server."""
    job_id = httpx.post(f"{api_server}/v1/download/initiate", json={"file_ids": [70035]}, timeout=10).json()["jobId"]
    page = browser.new_page()
    page.goto(f"{api_server}/dashboard")
    page.evaluate("localStorage.clear()")
    page.reload()
    page.locator(f'.job[data-job-id="{job_id}"]').wait_for(state="attached", timeout=15_000)
    page.close()


def test_a_forgotten_card_from_the_history_stays_forgotten(browser: Any, api_server: str) -> None:
    job_id = httpx.post(f"{api_server}/v1/download/initiate", json={"file_ids": [70042]}, timeout=10).json()["jobId"]
    page = browser.new_page()
    page.goto(f"{api_server}/dashboard")
    page.evaluate("localStorage.clear()")
    page.reload()
    card = page.locator(f'.job[data-job-id="{job_id}"]')
    card.locator("button.forget").wait_for(state="visible", timeout=30_000)
    card.locator("button.forget").click()
    card.wait_for(state="detached", timeout=5_000)
    page.reload()
    page.wait_for_selector("#health-redis.ok", timeout=10_000)
    page.wait_for_timeout(1_500)  # the history has been loaded
    assert page.locator(f'.job[data-job-id="{job_id}"]').count() == 0
    page.close()


def test_the_favicon_is_served(api_server: str) -> None:
    answer = httpx.get(f"{api_server}/favicon.ico", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/x-icon"
    assert answer.content[:4] == b"\x00\x00\x01\x00"  # an ICO
    assert "RateLimit-Limit" not in answer.headers  # not counted


def test_dashboard_cancels_a_job(browser: Any, api_server: str) -> None:
    page = browser.new_page()
    page.goto(f"{api_server}/dashboard")
    page.evaluate("localStorage.clear()")
    page.reload()
    # Many files: with the test delay spread over them, the job runs long enough to cancel.
    page.fill("#file-ids", " ".join(str(70000 + 7 * i) for i in range(60)))
    job = start_and_find(page)
    job.locator("button.cancel").wait_for(state="visible", timeout=10_000)
    job.locator("button.cancel").click()
    page.wait_for_selector(
        f'.job[data-job-id="{job.get_attribute("data-job-id")}"][data-status="cancelled"]', timeout=15_000
    )
    assert job.locator("a.download").is_hidden()
    page.close()


def test_dashboard_page_has_no_inline_script_or_style(api_server: str) -> None:
    html = httpx.get(f"{api_server}/dashboard", timeout=10).text
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert 'src="/dashboard/static/dashboard.js"' in html
    for asset in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js", "vendor/sentry.min.js"):
        assert httpx.get(f"{api_server}/dashboard/static/{asset}", timeout=10).status_code == 200
