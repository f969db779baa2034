"""The operator console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright), against the real stack with a local OTLP collector and a Sentry ingest:
one trace from the click to the worker's S3 calls, the browser's Sentry events, the
error log, the charts, and what the page costs the rate limit.

Never ``playwright install``: the browser comes from apt (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from delineate.config import Settings
from tests.support.browser import ARTIFACTS, chromium, needs_chromium
from tests.support.receivers import OtlpReceiver, SentryReceiver, Span
from tests.support.stack import Service, start_api, start_worker, wait_for

TRACE_URL = "http://traces.example/trace/{traceId}"
SERVER, CLIENT, CONSUMER = 2, 3, 5

pytestmark = needs_chromium


@dataclass
class Console:
    base: str
    settings: Settings
    otlp: OtlpReceiver
    sentry: SentryReceiver

    def origins(self) -> set[str]:
        return {self.base, self.otlp.endpoint, f"http://127.0.0.1:{self.sentry.port}"}


@pytest.fixture(scope="module")
def console(make_settings: Callable[..., Settings], workdir: Path) -> Iterator[Console]:
    otlp = OtlpReceiver().start()
    sentry = SentryReceiver().start()
    settings = make_settings(
        sentry_dsn=sentry.dsn,
        otel_exporter_otlp_endpoint=otlp.endpoint,
        dashboard_trace_url=TRACE_URL,
        sentry_test_route=True,  # ?sentry_test=true: the deliberate 500
    )
    started: list[Service] = []
    try:
        started.append(start_worker(settings, workdir, "worker-console", concurrency=4))
        api, base = start_api(settings, workdir, "api-console", workers=2)
        started.append(api)
        yield Console(base, settings, otlp, sentry)
    finally:
        for service in started:
            service.stop()
        otlp.stop()
        sentry.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


class Recorded:
    """A page with every request it made and every console error and CSP refusal it met."""

    def __init__(self, browser: Any, **options: Any) -> None:
        self.context = browser.new_context(**options)
        self.page = self.context.new_page()
        self.requests: list[Any] = []
        self.problems: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request))
        self.page.on("console", lambda msg: self.problems.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.problems.append(str(exc)))

    def origins(self) -> set[str]:
        return {f"{urlsplit(r.url).scheme}://{urlsplit(r.url).netloc}" for r in self.requests}

    def refusals(self) -> list[str]:
        return [p for p in self.problems if "Content Security Policy" in p or "Refused" in p]

    def close(self) -> None:
        self.context.close()


def start_job(page: Any, ids: str) -> Any:
    page.fill("#file-ids", ids)
    with page.expect_response(lambda r: r.url.endswith("/v1/download/initiate")) as answer:
        page.click("#start")
    job_id = answer.value.json()["jobId"]
    return page.locator(f'.job[data-job-id="{job_id}"]')


def failing(status: int, request_id: str) -> Callable[[Any], None]:
    """A Playwright route handler answering as the API does when it fails: JSON, with its id."""

    def answer(route: Any) -> None:
        route.fulfill(
            status=status,
            headers={"Content-Type": "application/json", "X-Request-ID": request_id},
            body=json.dumps({"error": "failed", "message": f"HTTP {status} for the test", "requestId": request_id}),
        )

    return answer


def api_call(url: str, prefixes: tuple[str, ...] = ("/v1", "/health")) -> bool:
    return urlsplit(url).path.startswith(prefixes)


def _descends(span: Span, ancestor: Span, by_id: dict[str, Span]) -> bool:
    current, seen = by_id.get(span.parent_span_id), 0
    while current is not None and seen < 20:
        if current is ancestor:
            return True
        current, seen = by_id.get(current.parent_span_id), seen + 1
    return False


# -- traces -----------------------------------------------------------------------------


def test_a_job_started_in_the_page_is_one_trace_from_the_click_to_s3(console: Console, browser: Any) -> None:
    tab = Recorded(browser)
    page = tab.page
    page.goto(f"{console.base}/dashboard")
    page.wait_for_selector("#telemetry-traces.ok", timeout=10_000)
    job = start_job(page, "70000 70007")
    job.locator("a.download").wait_for(state="visible", timeout=30_000)
    trace_id = job.get_attribute("data-trace-id")
    assert trace_id and len(trace_id) == 32
    # The page shows the trace id, linked to the trace viewer.
    link = job.locator(".trace-link")
    assert link.text_content() == trace_id
    assert link.get_attribute("href") == TRACE_URL.replace("{traceId}", trace_id)

    def whole_trace() -> list[Span] | None:
        spans = [s for s in console.otlp.spans() if s.trace_id == trace_id]
        kinds = {(s.service, s.kind) for s in spans}
        s3 = [s for s in spans if s.service == "delineate-worker" and s.attributes.get("rpc.service") == "S3"]
        # Spans come in batches, a parent after its children: wait for every one asserted on.
        wanted = {("delineate-dashboard", CLIENT), ("delineate-api", SERVER), ("delineate-worker", CONSUMER)}
        actions = [s for s in spans if s.service == "delineate-dashboard" and s.name == "start"]
        return spans if wanted <= kinds and s3 and actions else None

    spans = console.otlp.wait_for(whole_trace, 20, f"the spans of trace {trace_id} from all three services")
    by_id = {s.span_id: s for s in spans}
    action = next(s for s in spans if s.service == "delineate-dashboard" and s.name == "start")
    call = next(
        s
        for s in spans
        if s.service == "delineate-dashboard" and s.kind == CLIENT and s.parent_span_id == action.span_id
    )
    assert call.attributes.get("http.request.method") == "POST"
    server = next(s for s in spans if s.service == "delineate-api" and s.kind == SERVER)
    assert server.name == "POST /v1/download/initiate"
    assert server.parent_span_id == call.span_id  # the traceparent came from the page's call
    task = next(s for s in spans if s.service == "delineate-worker" and s.kind == CONSUMER)
    assert _descends(task, server, by_id)
    s3 = next(s for s in spans if s.attributes.get("rpc.service") == "S3")
    assert _descends(s3, task, by_id)
    # The collector accepted the page's export (a CORS preflight, then the POST).
    assert any(path == "/v1/traces" for path, _ in console.otlp.preflights)
    # Nothing was loaded from, or sent to, any origin but the service and the two telemetry endpoints.
    assert tab.origins() <= console.origins(), tab.origins()
    assert not tab.refusals(), tab.problems
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
    tab.close()


def test_every_call_of_the_page_carries_a_traceparent(console: Console, browser: Any) -> None:
    tab = Recorded(browser)
    tab.page.goto(f"{console.base}/dashboard")
    tab.page.wait_for_selector("#chart-requests canvas", timeout=15_000)
    calls = [
        r
        for r in tab.requests
        if r.url.startswith(console.base) and urlsplit(r.url).path.startswith(("/v1", "/health"))
    ]
    assert calls
    for request in calls:
        assert request.headers.get("traceparent", "").startswith("00-"), request.url
    tab.close()


# -- Sentry in the browser -------------------------------------------------------------------


def test_sentry_gets_the_page_load_a_failed_call_and_a_failed_job_then_offers_feedback(
    console: Console, browser: Any
) -> None:
    tab = Recorded(browser)
    page = tab.page

    # A call that fails: the timeline answers 500 (with its request id) for this page only.
    page.route("**/v1/stats/timeline*", failing(500, "req-broken-timeline"))
    page.goto(f"{console.base}/dashboard")
    page.wait_for_selector("#telemetry-sentry.ok", timeout=10_000)
    page.fill("#api-key", "a-secret-key-never-sent")
    page.click("#key-form button")

    def failed_call() -> dict[str, Any] | None:
        return next(
            (e for e in console.sentry.events() if e.get("tags", {}).get("request_id") == "req-broken-timeline"), None
        )

    event = console.sentry.wait_for(failed_call, 15, "the failed call's event")
    tags = event["tags"]
    assert tags["route"] == "GET /v1/stats/timeline" and tags["status"] == "500"
    assert len(tags["trace_id"]) == 32

    def page_load() -> dict[str, Any] | None:
        return next(
            (
                t
                for t in console.sentry.items("transaction")
                if t.get("contexts", {}).get("trace", {}).get("op") == "pageload"
            ),
            None,
        )

    console.sentry.wait_for(page_load, 15, "the page-load transaction")

    # The feedback control is offered after an error, and opens Sentry's form.
    page.wait_for_selector("#report-problem", state="visible", timeout=5_000)
    page.click("#report-problem")
    message = page.locator("#sentry-feedback textarea")  # Playwright's locators pierce the shadow root
    message.wait_for(timeout=10_000)
    message.fill("The charts stayed empty.")
    page.locator('#sentry-feedback button[type="submit"]').click()

    def feedback() -> dict[str, Any] | None:
        return next((f for f in console.sentry.items("feedback") if "charts stayed empty" in json.dumps(f)), None)

    console.sentry.wait_for(feedback, 15, "the feedback")
    message.wait_for(state="detached", timeout=10_000)

    # A job that fails (no file of it exists) is a business error of its own, naming the job.
    job = start_job(page, "70001")
    job_id = job.get_attribute("data-job-id")
    page.wait_for_selector(f'.job[data-job-id="{job_id}"][data-status="failed"]', timeout=30_000)

    def failed_job() -> dict[str, Any] | None:
        return next((e for e in console.sentry.events() if e.get("tags", {}).get("job_id") == job_id), None)

    job_event = console.sentry.wait_for(failed_job, 15, "the failed job's event")
    assert "No files available" in json.dumps(job_event)
    assert job_event["tags"]["trace_id"] == job.get_attribute("data-trace-id")
    # No API key, presigned signature or secret in anything sent to Sentry.
    everything = "\n".join(console.sentry.raw_texts())
    assert "a-secret-key-never-sent" not in everything
    assert "X-Amz-Signature=" not in everything.replace("X-Amz-Signature=[Filtered]", "")
    tab.close()


# -- the error log and the charts ---------------------------------------------------------------


def test_the_error_log_lists_a_server_500_and_a_failure_the_browser_captured(console: Console, browser: Any) -> None:
    answer = httpx.post(f"{console.base}/v1/download/check?sentry_test=true", json={"file_id": 70000}, timeout=10)
    assert answer.status_code == 500
    request_id = answer.headers["X-Request-ID"]
    wait_for(
        lambda: any(
            e.get("requestId") == request_id for e in httpx.get(f"{console.base}/v1/errors", timeout=5).json()["errors"]
        ),
        10,
        "the 500 in /v1/errors",
    )
    tab = Recorded(browser)
    page = tab.page
    page.route("**/v1/downloads?*", failing(503, "req-history-down"))
    page.goto(f"{console.base}/dashboard")
    server_row = page.locator(f'#errors tr[data-source="api"][data-request-id="{request_id}"]')
    server_row.wait_for(timeout=15_000)
    assert "500" in (server_row.text_content() or "")
    assert server_row.locator(".trace-link").count() == 1  # linked to its trace
    browser_row = page.locator('#errors tr[data-source="browser"][data-request-id="req-history-down"]')
    browser_row.wait_for(timeout=10_000)
    assert "503" in (browser_row.text_content() or "")
    # The server's entry names the Sentry event the API sent for it.
    entry = next(
        e
        for e in httpx.get(f"{console.base}/v1/errors", timeout=5).json()["errors"]
        if e.get("requestId") == request_id
    )
    assert entry["source"] == "api" and entry["status"] == 500 and entry["traceId"]
    assert entry["sentryEventId"] in {e["event_id"] for e in console.sentry.events()}
    tab.close()


def test_the_charts_draw_the_timeline(console: Console, browser: Any) -> None:
    for _ in range(20):
        httpx.get(f"{console.base}/v1/downloads?limit=1", timeout=5)
    time.sleep(1.5)  # the API processes write their tallies every second
    tab = Recorded(browser)
    page = tab.page
    page.goto(f"{console.base}/dashboard")
    for chart in ("chart-requests", "chart-latency", "chart-jobs"):
        page.wait_for_selector(f'#{chart}[data-filled="true"] canvas', timeout=15_000)
    assert page.text_content("#stat-queue") != "\u2013"
    assert not tab.refusals(), tab.problems
    tab.close()


def test_an_open_tab_costs_a_few_requests_a_minute(console: Console, browser: Any) -> None:
    """Health every 10 s is not rate limited; the rest (timeline, totals, errors) is ~10 a minute."""
    tab = Recorded(browser)
    page = tab.page
    page.clock.install()
    page.goto(f"{console.base}/dashboard")
    page.wait_for_selector("#chart-requests canvas", timeout=15_000)
    before = len(tab.requests)
    page.clock.run_for(60_000)
    page.wait_for_timeout(2_000)  # the calls the timers started complete
    counted = [
        r.url
        for r in tab.requests[before:]
        if r.url.startswith(console.base) and urlsplit(r.url).path.startswith("/v1")
    ]
    assert len(counted) <= 12, counted
    tab.close()
