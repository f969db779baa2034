"""Pure pieces of the observability code: scrubbing, log context, metric parsing helpers."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask, g

from delineate.api.metrics import _histogram
from delineate.config import ConfigError, load_settings
from delineate.telemetry.logs import ContextFilter, logging_config
from delineate.telemetry.metrics import BUNDLE_SIZE_BUCKETS
from delineate.telemetry.sentry import FILTERED, redact, scrub

PRESIGNED = (
    "http://127.0.0.1:8333/downloads/bundles/x.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=delineate%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z"
    "&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=0123456789abcdef"
)


def test_redact_removes_signature_and_credential_but_keeps_the_rest() -> None:
    cleaned = redact(f"redirecting to {PRESIGNED} now")
    assert "0123456789abcdef" not in cleaned and "delineate%2F" not in cleaned
    assert f"X-Amz-Signature={FILTERED}" in cleaned and "X-Amz-Expires=900" in cleaned
    assert redact("no secrets here") == "no secrets here"


def test_scrub_filters_secret_headers_and_urls_everywhere() -> None:
    event = {
        "request": {
            "headers": {"X-Api-Key": "k1", "Authorization": "Bearer b1", "Accept": "*/*"},
            "query_string": "sentry_test=true&X-Amz-Signature=abc",
            "cookies": {"session": "c1"},
        },
        "breadcrumbs": {"values": [{"message": f"GET {PRESIGNED}"}]},
        "exception": {"values": [{"value": f"failed on {PRESIGNED}"}]},
    }
    out = scrub(event, {})
    text = json.dumps(out)
    for secret in ("k1", "b1", "c1", "abc", "0123456789abcdef"):
        assert f'"{secret}"' not in text and f"={secret}" not in text
    assert out["request"]["headers"]["Accept"] == "*/*"


def test_context_filter_adds_request_ids_inside_a_request() -> None:
    from delineate.api import request_context

    request_context.install()  # what create_app does: the web side hooks its request in
    app = Flask(__name__)
    app.add_url_rule("/jobs/<job_id>", "job", lambda job_id: "")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "at %s", (PRESIGNED,), None)
    with app.test_request_context("/jobs/1234"):
        g.request_id = "rid-1"
        assert ContextFilter().filter(record)
    assert record.request_id == "rid-1"  # type: ignore[attr-defined]
    assert record.job_id == "1234"  # type: ignore[attr-defined]
    assert "0123456789abcdef" not in record.getMessage()


def test_logging_config_turns_off_gunicorns_access_log() -> None:
    config = logging_config()
    assert config["loggers"]["gunicorn.access"]["propagate"] is False
    assert config["handlers"]["stdout"]["formatter"] == "json"


def test_redis_histogram_renders_cumulative_buckets() -> None:
    family = _histogram("h", "doc", BUNDLE_SIZE_BUCKETS, {"le:65536": "1", "le:262144": "2", "count": "3", "sum": "9"})
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("h_bucket", "65536")] == 1 and samples[("h_bucket", "+Inf")] == 3
    assert samples[("h_count", None)] == 3 and samples[("h_sum", None)] == 9


@pytest.mark.parametrize("raw", ["user", ":pw", "user:"])
def test_flower_basic_auth_must_be_user_and_password(raw: str) -> None:
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH"):
        load_settings(environ={"FLOWER_BASIC_AUTH": raw}, dotenv_path=None)
    assert load_settings(environ={"FLOWER_BASIC_AUTH": "ops:pw"}, dotenv_path=None).flower_basic_auth == "ops:pw"


def test_request_tallies_flush_what_observing_each_request_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from delineate.api.metrics import HTTP_LATENCY, HTTP_REQUESTS, RequestMetrics
    from delineate.telemetry.metrics import LATENCY_BUCKETS

    def samples(metric: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metric.collect()  # type: ignore[attr-defined]
            for s in family.samples
            if s.labels.get("route") == "/tally-test" or "route" not in s.labels
        }

    reference = Histogram(
        "ref", "ref", ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=CollectorRegistry()
    )
    before_latency, before_requests = samples(HTTP_LATENCY), samples(HTTP_REQUESTS)
    tallies = RequestMetrics()
    durations = [0.0004, 0.001, 0.0011, 0.003, 0.05, 0.7, 3.0, 42.0, 0.0049]
    for n, seconds in enumerate(durations):
        tallies.observe("GET", "/tally-test", 200, seconds)
        reference.labels("GET", "/tally-test", "200").observe(seconds)
        if n == 4:
            tallies.flush()  # a flush in between sends only the difference later
    tallies.flush()
    tallies.flush()  # nothing new: nothing sent twice

    def delta(after: dict, before: dict) -> dict:  # type: ignore[type-arg]
        return {k: v - before.get(k, 0.0) for k, v in after.items() if not k[0].endswith("_created")}

    got = delta(samples(HTTP_LATENCY), before_latency)
    want = {
        (name.replace("ref", "delineate_http_request_duration_seconds", 1), labels): value
        for (name, labels), value in samples(reference).items()
        if not name.endswith("_created")
    }
    assert got == pytest.approx(want)
    requests = delta(samples(HTTP_REQUESTS), before_requests)
    assert (
        requests[("delineate_http_requests_total", (("method", "GET"), ("route", "/tally-test"), ("status", "200")))]
        == 9
    )
