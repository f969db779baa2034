"""The console's pure parts: the timeline's arithmetic, the error log's entries, the page's
policy and settings (no services)."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from delineate.api.blueprints.dashboard import console_csp, origin_of, render_page
from delineate.config import ConfigError, load_settings
from delineate.store import errorlog
from delineate.telemetry import timeline
from delineate.telemetry.timeline import LATENCY_BOUNDS, STEP_SECONDS, StepTally, percentile
from tests.support.stack import ROOT


def settings(**overrides: object):  # type: ignore[no-untyped-def]
    return load_settings(environ={}, overrides=overrides, dotenv_path=None)


# -- timeline ---------------------------------------------------------------------------


def test_percentiles_are_within_a_bucket_of_the_truth() -> None:
    latencies = [0.001 * (i + 1) for i in range(1000)]  # 1 ms ... 1000 ms
    tally = StepTally()
    for seconds in latencies:
        tally.add(200, seconds, 1_000_000.0)
    values = next(iter(tally.drain().values()))
    histogram = values[3:]
    for q, truth in ((0.5, 500.0), (0.95, 950.0), (0.99, 990.0)):
        estimate = percentile(histogram, len(latencies), q)
        assert estimate is not None and abs(estimate - truth) / truth <= 0.2, (q, estimate)
    assert percentile(histogram, 0, 0.5) is None


def test_latency_bounds_grow_by_a_fifth_from_a_quarter_millisecond_to_a_minute() -> None:
    assert LATENCY_BOUNDS[0] == pytest.approx(0.00025)
    assert LATENCY_BOUNDS[-1] >= 60
    assert all(b / a == pytest.approx(1.2) for a, b in itertools.pairwise(LATENCY_BOUNDS))


def test_a_tally_counts_requests_by_step_and_class() -> None:
    tally = StepTally()
    now = 1_000_005.0
    tally.add(200, 0.002, now)
    tally.add(404, 0.002, now)
    tally.add(503, 0.002, now + STEP_SECONDS)  # the next step
    pending = tally.drain()
    first, second = (int(now) // STEP_SECONDS), (int(now) // STEP_SECONDS) + 1
    assert pending[first][:3] == [2, 1, 0]
    assert pending[second][:3] == [1, 0, 1]
    commands = StepTally.commands(pending)
    assert ("HINCRBY", timeline.step_key(first), "n", 2) in commands
    assert ("HINCRBY", timeline.step_key(second), "e5", 1) in commands
    assert ("EXPIRE", timeline.step_key(first), timeline.KEEP_SECONDS) in commands
    assert not [c for c in commands if c[0] == "HINCRBY" and c[3] == 0]  # only what moved
    assert tally.drain() == {}


def test_what_redis_refused_is_added_back_once_and_old_steps_are_dropped() -> None:
    tally = StepTally()
    now = float(timeline.current_step() * STEP_SECONDS)
    tally.add(200, 0.01, now)
    pending = tally.drain()
    tally.add(200, 0.01, now)  # a request while the flush failed
    stale = {timeline.current_step() - 1000: [5] * len(pending[timeline.current_step()])}
    tally.restore({**pending, **stale})
    again = tally.drain()
    assert list(again) == [timeline.current_step()]
    assert again[timeline.current_step()][0] == 2


def test_long_windows_merge_steps_into_at_most_120_buckets() -> None:
    assert timeline.step_for(15) == 10
    assert timeline.step_for(20) == 10
    assert timeline.step_for(60) == 30
    for minutes in range(1, 61):
        steps = timeline.window_steps(minutes, now=1_000_000.0)
        assert len(steps) == minutes * 60 // STEP_SECONDS
        assert math.ceil(len(steps) / (timeline.step_for(minutes) // STEP_SECONDS)) <= timeline.MAX_BUCKETS


def test_build_sums_counts_and_keeps_the_latest_sample() -> None:
    steps = timeline.window_steps(60, now=1_000_000.0)
    stored: list[dict[str, str]] = [{} for _ in steps]
    stored[0] = {"n": "3", "e4": "1", "h10": "3", "completed": "2", "queue": "7", "running": "1"}
    stored[1] = {"n": "1", "e5": "1", "h20": "1", "failed": "1", "queue": "4", "running": "2"}
    answer = timeline.build(60, steps, [timeline.parse(values) for values in stored])
    assert answer["stepSeconds"] == 30
    first = answer["buckets"][0]
    assert (first["requests"], first["errors4xx"], first["errors5xx"]) == (4, 1, 1)
    assert (first["jobsCompleted"], first["jobsFailed"], first["jobsCancelled"]) == (2, 1, 0)
    assert (first["queueDepth"], first["inProgress"]) == (4, 2)
    assert first["p50Ms"] is not None and first["t"].endswith("Z")
    empty = answer["buckets"][5]
    assert empty["p99Ms"] is None and empty["queueDepth"] is None and empty["requests"] == 0


def test_parsing_ignores_unknown_fields_and_reads_bytes() -> None:
    values = timeline.parse({b"n": b"4", "h3": "2", "junk": "9", "queue": "0"})
    assert values[timeline.FIELDS.index("n")] == 4 and values[timeline.FIELDS.index("h3")] == 2
    assert values[timeline.FIELDS.index("queue")] == 0  # a sample of zero is not "no sample"
    assert values[timeline.FIELDS.index("running")] == timeline.NO_SAMPLE
    assert len(values) == len(timeline.FIELDS) and sum(v for v in values if v > 0) == 6


def test_a_terminal_job_counts_in_its_step() -> None:
    commands = timeline.terminal_commands("failed", now=1_000_000.0)
    assert commands[0] == ("HINCRBY", timeline.step_key(100_000), "failed", 1)


# -- error log --------------------------------------------------------------------------


def test_an_entry_leaves_out_what_is_unknown_and_bounds_the_message() -> None:
    record = errorlog.entry("api", "x" * 2000, status=500, jobId=None, requestId="r1")
    assert set(record) == {"time", "source", "message", "status", "requestId"}
    assert len(record["message"]) == errorlog.MESSAGE_LENGTH
    commands = errorlog.add_commands("", record)
    assert commands[0][:2] == ("LPUSH", "delineate:errors:-")
    assert commands[1] == ("LTRIM", "delineate:errors:-", 0, errorlog.ERROR_LOG_LENGTH - 1)
    assert errorlog.decode([commands[0][2], b"not json", b"[1]"]) == [record]


def test_pending_errors_are_bounded_and_put_back_in_order() -> None:
    pending = errorlog.PendingErrors(limit=3)
    for i in range(5):
        pending.add("alice", {"n": i})
    items = pending.drain()
    assert [r["n"] for _, r in items] == [2, 3, 4]  # the oldest went first
    pending.add(None, {"n": 5})
    pending.put_back(items)
    assert [(owner, r["n"]) for owner, r in pending.drain()] == [("alice", 3), ("alice", 4), ("", 5)]


# -- the page ----------------------------------------------------------------------------


def test_origins_leave_out_users_and_paths() -> None:
    assert origin_of("http://publickey@127.0.0.1:9000/1") == "http://127.0.0.1:9000"
    assert origin_of("https://o1.ingest.sentry.io/42") == "https://o1.ingest.sentry.io"
    assert origin_of("http://[::1]:4318") == "http://[::1]:4318"
    assert origin_of("ftp://example.com") is None
    assert origin_of("http://:99999") is None


def test_the_policy_opens_exactly_the_two_telemetry_origins() -> None:
    none = console_csp(settings(), "n0nce")
    assert "connect-src 'self';" in none and "'nonce-n0nce'" in none and "script-src 'self';" in none
    both = console_csp(
        settings(SENTRY_DSN="https://key@o1.ingest.sentry.io/42", OTEL_EXPORTER_OTLP_ENDPOINT="http://jaeger:4318/"),
        "n",
    )
    assert "connect-src 'self' https://o1.ingest.sentry.io http://jaeger:4318;" in both


def test_the_browser_settings_default_to_the_servers_and_can_be_turned_off() -> None:
    server = settings(SENTRY_DSN="https://key@sentry.example/1", OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318")
    assert server.dashboard_sentry_dsn == "https://key@sentry.example/1"
    assert server.dashboard_otlp_endpoint == "http://c:4318"
    off = settings(SENTRY_DSN="https://key@sentry.example/1", DASHBOARD_SENTRY_DSN="", DASHBOARD_OTLP_ENDPOINT="")
    assert off.dashboard_sentry_dsn == "" and off.dashboard_otlp_endpoint == ""
    assert "https://key@sentry.example/1" not in repr(server)  # redacted like SENTRY_DSN


def test_a_trace_link_needs_its_placeholder() -> None:
    assert settings(DASHBOARD_TRACE_URL="http://j:16686/trace/{traceId}").dashboard_trace_url.endswith("{traceId}")
    with pytest.raises(ConfigError, match="DASHBOARD_TRACE_URL"):
        settings(DASHBOARD_TRACE_URL="http://j:16686/trace/")
    with pytest.raises(ConfigError, match="DASHBOARD_OTLP_ENDPOINT"):
        settings(DASHBOARD_OTLP_ENDPOINT="jaeger:4318")


def test_the_page_loads_an_sdk_only_when_it_is_configured() -> None:
    bare = render_page(settings(), "n")
    assert "vendor/sentry.min.js" not in bare and "vendor/otel.min.js" not in bare
    assert 'name="delineate-console"' in bare
    full = render_page(settings(SENTRY_DSN="https://k@s.example/1", OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318"), "n")
    assert "vendor/sentry.min.js" in full and "vendor/otel.min.js" in full
    only_traces = render_page(settings(DASHBOARD_OTLP_ENDPOINT="http://c:4318"), "n")
    assert "vendor/sentry.min.js" not in only_traces and "vendor/otel.min.js" in only_traces
    hostile = render_page(settings(DASHBOARD_TRACE_URL='http://x/"><script>{traceId}'), "n")
    assert "<script>{traceId}" not in hostile  # escaped into the attribute


# -- the committed browser libraries ------------------------------------------------------------


def test_the_committed_browser_libraries_are_the_locked_ones_with_their_licences() -> None:
    """``make assets`` writes VERSIONS.json beside the bundles; it must match the lockfile
    (a bundle rebuilt from other versions, or a lockfile changed without a rebuild, fails here)."""
    web = ROOT / "deploy" / "web"
    vendor = ROOT / "delineate" / "api" / "static" / "dashboard" / "vendor"
    lock = json.loads((web / "package-lock.json").read_text())["packages"]
    locked = {(path.rpartition("node_modules/")[2], info["version"]) for path, info in lock.items() if path}
    shipped = json.loads((vendor / "VERSIONS.json").read_text())
    licences = (vendor / "LICENSES.txt").read_text()
    for package in shipped:
        name, _, version = package.rpartition("@")
        assert (name, version) in locked, package
        assert f"==== {name} {version} " in licences, package
    wanted = json.loads((web / "package.json").read_text())["devDependencies"]
    for name, version in wanted.items():
        if name != "esbuild":  # the bundler, not shipped
            assert f"{name}@{version}" in shipped, name
    for bundle in ("sentry.min.js", "otel.min.js", "uPlot.iife.min.js", "uPlot.min.css"):
        assert (vendor / bundle).stat().st_size > 1000, bundle
