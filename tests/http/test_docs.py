"""``/docs`` in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Never ``playwright install``: the browser comes from apt (``.ci/run`` installs it).
The page keeps the Content-Security-Policy the edge gives every HTML answer (no inline
script or style), and Swagger UI must render every operation of our OpenAPI 3.1 document:
Swagger UI 4 answered "Unable to render this definition" and showed none.

The browser reaches the server under a name that is neither ``localhost`` nor
``127.0.0.1`` (Chromium maps it to the loopback address), as a deployed page is: Swagger UI
hides some outside calls (its online validator badge) on local addresses only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from delineate.api.edge.security import HTML_CSP
from tests.support.browser import ARTIFACTS, chromium, needs_chromium

HOST = "delineate-docs.test"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(f"--host-resolver-rules=MAP {HOST} 127.0.0.1") as browser:
        yield browser


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS}


def test_docs_renders_every_operation_under_the_strict_csp(browser: Any, api_server: str) -> None:
    spec = httpx.get(f"{api_server}/openapi.json", timeout=10).json()
    assert spec["openapi"].startswith("3.1")
    expected = spec_operations(spec)
    assert len(expected) > 10, expected

    base = f"http://{HOST}:{urlsplit(api_server).port}"
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url} {req.failure}"))
    page.on("request", lambda req: requests.append(req.url))

    answer = page.goto(f"{base}/docs")
    assert answer is not None and answer.status == 200
    # The edge's policy, untouched: the page must live with it.
    assert answer.headers["content-security-policy"] == HTML_CSP

    # Whichever comes first: the operations, or Swagger UI's refusal / error box.
    page.wait_for_selector(
        "#swagger-ui .opblock, #swagger-ui .version-pragma, #swagger-ui .errors-wrapper", timeout=20_000
    )
    page.wait_for_load_state("networkidle")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs.png"), full_page=True)

    body = page.text_content("body") or ""
    assert "Unable to render this definition" not in body
    assert page.locator("#swagger-ui .version-pragma").count() == 0
    assert page.locator("#swagger-ui .errors-wrapper").count() == 0
    assert page.locator("#swagger-ui .info .title").first.text_content()
    # Swagger UI 5 records its version on the page (4.x did not, and could not read 3.1).
    version = page.evaluate("window.versions && window.versions.swaggerUI && window.versions.swaggerUI.version")
    assert isinstance(version, str) and version.startswith("5."), version

    rendered = page.eval_on_selector_all(
        "#swagger-ui .opblock",
        """blocks => blocks.map(block => {
             const method = block.querySelector('.opblock-summary-method');
             const path = block.querySelector('.opblock-summary-path');
             return [
               method ? method.textContent.trim().toLowerCase() : null,
               path ? (path.getAttribute('data-path') || path.textContent.replace(/\\u200b/g, '').trim()) : null,
             ];
           })""",
    )
    shown = {(path, method) for method, path in rendered}
    assert shown == expected, {"missing": expected - shown, "unexpected": shown - expected}

    # Open every operation and every schema: their bodies (examples with syntax highlighting,
    # schema trees) are where Swagger UI styles elements, and the policy allows no inline style.
    blocks = page.locator("#swagger-ui .opblock")
    for i in range(blocks.count()):
        blocks.nth(i).locator(".opblock-summary-control").click()
    page.wait_for_function(
        "n => document.querySelectorAll('#swagger-ui .opblock .opblock-body').length === n", arg=blocks.count()
    )
    page.locator("#swagger-ui .opblock .responses-wrapper").first.wait_for()
    models = page.locator("#swagger-ui .models .model-container .model-box-control")
    for i in range(models.count()):
        models.nth(i).click()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ARTIFACTS / "docs-expanded.png"), full_page=True)

    # The favicon the page names exists, as a PNG.
    icons = page.eval_on_selector_all("link[rel~=icon]", "links => links.map(l => l.href)")
    assert icons
    for icon in icons:
        # Fetched by the page itself (the host name resolves only inside the browser).
        got = page.evaluate("url => fetch(url).then(r => [r.status, r.headers.get('content-type')])", icon)
        assert got == [200, "image/png"], (icon, got)

    assert not problems, problems
    origins = {f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" for url in requests if not url.startswith("data:")}
    assert origins == {base}, requests
    page.close()


def test_docs_assets_are_only_the_named_files(api_server: str) -> None:
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        response = httpx.get(f"{api_server}/docs/assets/{name}", timeout=10)
        assert response.status_code == 200, name
    for name in ("index.html", "swagger-initializer.js", "LICENSE", "VERSION", "..%2Fdocs.py", "nope.js"):
        response = httpx.get(f"{api_server}/docs/assets/{name}", timeout=10)
        assert response.status_code == 404, name
        assert response.headers["content-type"].startswith("application/json"), name
        assert response.json()["error"] == "not_found", (name, response.json())
