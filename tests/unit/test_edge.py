"""Pure pieces of the edge: rate-limit keys and windows, CORS answers, request ids, samplers."""

from __future__ import annotations

import uuid

import pytest

from delineate.api.edge.ratelimit import Window, address_key
from delineate.api.edge.security import Cors
from delineate.config import ConfigError, load_settings
from delineate.ids import new_uuid


@pytest.mark.parametrize(
    "address, key",
    [
        ("203.0.113.9", "ip:203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "ip:2001:db8:1:2::/64"),  # one /64, one counter
        ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
        ("::ffff:198.51.100.7", "ip:198.51.100.7"),  # IPv4-mapped: counted as the IPv4 address
        ("fe80::1%eth0", "ip:fe80::/64"),
        (None, "ip:unknown"),
    ],
)
def test_address_keys(address: str | None, key: str) -> None:
    assert address_key(address) == key


def test_window_headers() -> None:
    window = Window(limit=100, count=101, reset_ms=1500)
    assert window.exceeded and window.remaining == 0 and window.reset_seconds == 2
    assert dict(window.headers()) == {"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "2"}
    assert not Window(100, 100, 0).exceeded


def test_cors_wildcard_and_listed_origins() -> None:
    wildcard = dict(Cors(("*",)).headers(None, preflight=False))
    assert (
        wildcard["Access-Control-Allow-Origin"] == "*" and "X-Request-ID" in wildcard["Access-Control-Expose-Headers"]
    )
    listed = Cors(("https://good.example",))
    assert dict(listed.headers("https://good.example", False))["Access-Control-Allow-Origin"] == "https://good.example"
    assert listed.headers("https://evil.example", False) == [("Vary", "Origin")]
    preflight = dict(listed.headers("https://good.example", True))
    assert (
        "POST" in preflight["Access-Control-Allow-Methods"]
        and "Idempotency-Key" in preflight["Access-Control-Allow-Headers"]
    )


def test_new_uuid_is_a_random_version_4_uuid() -> None:
    ids = {new_uuid() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_sampler_settings() -> None:
    settings = load_settings(
        environ={"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, dotenv_path=None
    )
    assert settings.otel_traces_sampler == "parentbased_traceidratio" and settings.otel_traces_sampler_arg == 0.1
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER must be one of"):
        load_settings(environ={"OTEL_TRACES_SAMPLER": "sometimes"}, dotenv_path=None)
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        load_settings(environ={"OTEL_TRACES_SAMPLER_ARG": "2"}, dotenv_path=None)


def test_every_sampler_name_builds() -> None:
    from delineate.config.parse import _SAMPLERS
    from delineate.telemetry.tracing import configured_sampler

    wanted = {
        "always_on": "AlwaysOnSampler",
        "always_off": "AlwaysOffSampler",
        "traceidratio": "TraceIdRatioBased{0.5}",
        "parentbased_always_on": "ParentBased{root:AlwaysOnSampler",
        "parentbased_always_off": "ParentBased{root:AlwaysOffSampler",
        "parentbased_traceidratio": "ParentBased{root:TraceIdRatioBased{0.5}",
        "": "ParentBased{root:AlwaysOnSampler",  # unset: the SDK's own default
    }
    assert set(wanted) - {""} == set(_SAMPLERS)
    for name, description in wanted.items():
        assert configured_sampler(name, 0.5).get_description().startswith(description), name


def test_a_header_sent_unchecked_is_checked_once_at_start_up() -> None:
    from delineate.api.checked_headers import check_constant

    assert check_constant("Vary", "Origin") == ("Vary", "Origin")
    for name, value in [("Vary", "a\r\nSet-Cookie: x=1"), ("Bad Name", "x"), ("Vary", " padded ")]:
        with pytest.raises(ValueError, match="not a valid header"):
            check_constant(name, value)
    with pytest.raises(ValueError, match="Access-Control-Allow-Origin"):
        Cors(("https://ok.example", "https://bad.example\r\nX-Injected: 1"))
