"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Never ``playwright install``: the browser comes from apt (``.ci/run`` installs it).
The page is served with a strict Content-Security-Policy to prove it needs no inline
script or style. The screenshot lands in ``test-results/dashboard.png``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stack import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-results"
CSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def test_dashboard_starts_a_job_and_shows_it_finish(browser: Any, api_server: str) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 720})
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    def with_csp(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": CSP})

    page.route(f"{api_server}/dashboard", with_csp)
    page.goto(f"{api_server}/dashboard")
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
    for asset in ("dashboard.js", "dashboard.css"):
        assert httpx.get(f"{api_server}/dashboard/static/{asset}", timeout=10).status_code == 200
