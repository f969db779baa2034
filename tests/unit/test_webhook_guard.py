"""The webhook SSRF guard's pure logic (``delineate/jobs/webhook_http.py``): which addresses
a host name may lead to, every IPv6 form that carries an IPv4 address judged by that
address, and a listed literal that opens only itself on its port. No network: the one
lookup is a stand-in."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from delineate.jobs import webhook_http
from delineate.jobs.webhook_http import CallbackPolicy, Refused, embedded_ipv4, is_public


def _teredo(server: str, client: str) -> str:
    """A Teredo address (RFC 4380): 2001:0::/32, the server's IPv4, flags and port, then the
    client's IPv4 with every bit inverted."""
    value = (0x2001_0000 << 96) | (int(ipaddress.IPv4Address(server)) << 64) | (0x8000_63BF << 32)
    value |= ~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF
    return str(ipaddress.IPv6Address(value))


# Each form: (an address, the IPv4 it carries).
INWARD_FORMS = [
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
    ("::ffff:10.0.0.1", "10.0.0.1"),
    ("::ffff:0:127.0.0.1", "127.0.0.1"),  # IPv4-translated (RFC 2765)
    ("::ffff:0:169.254.169.254", "169.254.169.254"),
    ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible (deprecated)
    ("::192.168.1.1", "192.168.1.1"),
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 well-known prefix
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # the cloud metadata address, through NAT64
    ("64:ff9b:1::a00:1", "10.0.0.1"),  # NAT64 local-use prefix (RFC 8215): the last 32 bits
    ("64:ff9b:1:abcd::c0a8:101", "192.168.1.1"),
    ("2002:7f00:1::1", "127.0.0.1"),  # 6to4: bits 16-48
    ("2002:a9fe:a9fe:1::5", "169.254.169.254"),
    ("2002:6440:1::", "100.64.0.1"),  # shared address space
]


@pytest.mark.parametrize(("address", "carried"), INWARD_FORMS)
def test_every_embedded_ipv4_form_is_judged_by_its_ipv4(address: str, carried: str) -> None:
    ip = ipaddress.ip_address(address)
    assert embedded_ipv4(ip) == (ipaddress.IPv4Address(carried),)
    assert not is_public(ip)


@pytest.mark.parametrize(
    "address",
    ["::ffff:8.8.8.8", "::ffff:0:8.8.8.8", "::8.8.8.8", "64:ff9b::808:808", "64:ff9b:1::808:808", "2002:808:808::1"],
)
def test_an_embedded_public_ipv4_is_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_teredo_is_judged_by_its_server_and_its_client() -> None:
    both_public = ipaddress.IPv6Address(_teredo("65.54.227.120", "8.8.8.8"))
    assert embedded_ipv4(both_public) == (ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("8.8.8.8"))
    assert both_public.teredo == (ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("8.8.8.8"))
    assert is_public(both_public)
    assert not is_public(ipaddress.ip_address(_teredo("65.54.227.120", "127.0.0.1")))  # the client inward
    assert not is_public(ipaddress.ip_address(_teredo("10.0.0.1", "8.8.8.8")))  # the server inward
    assert not is_public(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:3fff:fdd2"))  # RFC 4380's: 192.0.2.45


@pytest.mark.parametrize(
    "address",
    [
        "fec0::1", "fefe::1",  # site-local (deprecated; Python counts it global)
        "::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1", "2001:db8::1",
        "127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "192.0.2.1", "198.18.0.1", "240.0.0.1",
    ],
)  # fmt: skip
def test_inward_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700::1111", "2a00:1450:4001::200e"])
def test_global_unicast_addresses_are_public(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert embedded_ipv4(ip) is None and is_public(ip)


def _resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> list[str]:
    lookups: list[str] = []

    def fake(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return lookups


@pytest.mark.parametrize("address", [a for a, _ in INWARD_FORMS] + ["fec0::1"])
def test_a_name_resolving_to_an_embedded_inward_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    _resolving_to(monkeypatch, "8.8.8.8", address)  # one bad address refuses the name
    policy = CallbackPolicy(["hooks.example.com"])
    with pytest.raises(Refused, match="not a public address"):
        policy.resolve("hooks.example.com", 443, 1.0)


def test_a_listed_literal_never_whitelists_a_name_resolving_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving_to(monkeypatch, "127.0.0.1")
    policy = CallbackPolicy(["127.0.0.1:9000", "hooks.example.com:9000"])
    assert policy.allows("hooks.example.com", 9000)  # the name is listed...
    with pytest.raises(Refused):  # ...but leads inward, and the listed literal does not excuse it
        policy.resolve("hooks.example.com", 9000, 1.0)


def test_a_listed_literal_opens_only_its_port_and_only_to_urls_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _resolving_to(monkeypatch, "8.8.8.8")
    policy = CallbackPolicy(["127.0.0.1:9000", "10.1.2.3", "[::1]:8443"])
    assert policy.allows("127.0.0.1", 9000) and policy.resolve("127.0.0.1", 9000, 1.0) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    for port in (80, 443, 8080, 9001, 6379):
        assert not policy.allows("127.0.0.1", port)
    assert policy.allows("10.1.2.3", 80) and policy.allows("10.1.2.3", 443)  # a bare literal: 80 and 443
    assert not policy.allows("10.1.2.3", 8080)
    assert policy.allows("::1", 8443) and not policy.allows("::1", 443)
    # Another spelling of a listed address is not the listed literal.
    assert not policy.allows("::ffff:127.0.0.1", 9000) and not policy.allows("127.1", 9000)
    assert lookups == []  # a literal is never looked up


def test_send_refuses_before_any_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _resolving_to(monkeypatch, "64:ff9b::a9fe:a9fe")
    with pytest.raises(Refused, match=r"\(169\.254\.169\.254\), which is not a public address"):
        webhook_http.send("https://hooks.example.com/h", b"{}", [], CallbackPolicy(["hooks.example.com"]))
    assert lookups == ["hooks.example.com"]
    with pytest.raises(Refused, match="callback hosts"):
        webhook_http.send("http://127.0.0.1:9001/h", b"{}", [], CallbackPolicy(["127.0.0.1:9000"]))
    with pytest.raises(Refused, match="cannot be sent"):
        webhook_http.send("http://xn--zz.example/h", b"{}", [], CallbackPolicy(["xn--zz.example"]))
