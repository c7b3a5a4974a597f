from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest

from service.webhooks.ssrf import (
    CheckedUrl,
    UnsafeUrl,
    address_problem,
    check_url,
    embedded_ipv4,
    parse_networks,
)

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)

# Every one of these must be refused with a reason and without any connection or lookup.
REFUSED_WITHOUT_LOOKUP = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://100.64.0.1/hook", "CGNAT"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[::ffff:169.254.169.254]/", "169.254.169.254"),
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
    ("http://[64:ff9b::a9fe:a9fe]/", "169.254.169.254"),
    ("http://[64:ff9b::7f00:1]/", "127.0.0.1"),
    ("http://[2002:a9fe:a9fe::]/", "169.254.169.254"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.10/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0177.0.0.1/", "IPv4 address"),  # httpx itself refuses this form
    ("http://0xa9fea9fe/", "metadata"),
    ("http://127.0.0.1./", "loopback"),
    ("http://localhost/", "localhost"),
    ("http://LOCALHOST:8080/", "localhost"),
    ("http://localhost./", "localhost"),
    ("http://foo.localhost/", "foo.localhost"),
    ("http://metadata.google.internal/", "metadata.google.internal"),
    ("http://user:pw@example.com/", "user name or password"),
    ("http://user@example.com/", "user name or password"),
    ("ftp://example.com/file", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("gopher://example.com/", "only http and https"),
    ("http:///nohost", "no host"),
    ("http://example.com:0/", "port 0"),
    ("http://example.com/#frag", "fragment"),
    ("http://1.2.3.4.5/", "invalid IPv4"),
    ("http://256.1.1.1/", "invalid IPv4"),
    ("http://%31%32%37.0.0.1/", "not valid"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("not a url at all", "only http and https"),
]


@pytest.mark.parametrize(("url", "reason_part"), REFUSED_WITHOUT_LOOKUP)
async def test_refused_at_check_time_without_any_connection(
    url: str, reason_part: str, connect_spy: Any, resolver: Any
) -> None:
    with pytest.raises(UnsafeUrl) as caught:
        await check_url(url, resolver=resolver)
    assert reason_part.lower() in caught.value.reason.lower()
    assert connect_spy.attempts == []
    assert resolver.calls == []


async def test_name_resolving_to_a_private_address_is_refused(
    connect_spy: Any, resolver: Any
) -> None:
    resolver.table["internal.example"] = ["10.1.2.3"]
    with pytest.raises(UnsafeUrl, match=r"10\.1\.2\.3 is a private address"):
        await check_url("https://internal.example/hook", resolver=resolver)
    assert resolver.calls == [("internal.example", 443)]
    assert connect_spy.attempts == []


async def test_every_resolved_address_is_checked(connect_spy: Any, resolver: Any) -> None:
    # One public answer next to a loopback one is the classic pinning bypass.
    resolver.table["mixed.example"] = ["93.184.216.34", "2606:2800:220:1::1", "127.0.0.1"]
    with pytest.raises(UnsafeUrl, match="loopback"):
        await check_url("https://mixed.example/", resolver=resolver)
    assert connect_spy.attempts == []


async def test_system_resolver_is_used_and_checked(
    monkeypatch: pytest.MonkeyPatch, connect_spy: Any
) -> None:
    lookups: list[tuple[Any, ...]] = []

    async def fake_getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        lookups.append((host, port))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(UnsafeUrl, match="metadata"):
        await check_url("http://rebind.example:8080/x")
    assert lookups == [("rebind.example", 8080)]
    assert connect_spy.attempts == []


async def test_check_before_each_attempt_catches_a_rebound_name(resolver: Any) -> None:
    resolver.table["flip.example"] = ["93.184.216.34"]
    assert (await check_url("https://flip.example/", resolver=resolver)).addresses
    resolver.table["flip.example"] = ["127.0.0.1"]
    with pytest.raises(UnsafeUrl, match="loopback"):
        await check_url("https://flip.example/", resolver=resolver)


async def test_name_resolving_to_nothing_is_refused(resolver: Any) -> None:
    resolver.table["empty.example"] = []
    with pytest.raises(UnsafeUrl, match="did not resolve"):
        await check_url("https://empty.example/", resolver=resolver)
    with pytest.raises(UnsafeUrl, match="could not be resolved"):
        await check_url("https://unknown.example/", resolver=resolver)


async def test_slow_resolution_times_out() -> None:
    async def slow(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return ["93.184.216.34"]

    with pytest.raises(UnsafeUrl, match="timed out"):
        await check_url("https://slow.example/", resolver=slow, resolve_timeout=0.05)


async def test_public_name_is_allowed_with_all_its_addresses(
    connect_spy: Any, resolver: Any
) -> None:
    resolver.table["hooks.example"] = ["93.184.216.34", "2606:2800:220:1::1", "93.184.216.34"]
    checked = await check_url("https://Hooks.Example:8443/in?a=1", resolver=resolver)
    assert checked == CheckedUrl(
        url="https://hooks.example:8443/in?a=1",
        scheme="https",
        host="hooks.example",
        port=8443,
        addresses=(
            ipaddress.ip_address("93.184.216.34"),
            ipaddress.ip_address("2606:2800:220:1::1"),
        ),
    )
    assert connect_spy.attempts == []


async def test_idna_host_is_checked_in_ascii_form(resolver: Any) -> None:
    resolver.table["xn--bcher-kva.example"] = ["93.184.216.34"]
    checked = await check_url("https://bücher.example/", resolver=resolver)
    assert checked.host == "xn--bcher-kva.example"
    assert resolver.calls == [("xn--bcher-kva.example", 443)]


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:9000/hook", "127.0.0.1"),
        ("http://127.1:9000/hook", "127.0.0.1"),
        ("http://2130706433:9000/hook", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]:9000/hook", "::ffff:7f00:1"),
    ],
)
async def test_loopback_is_allowed_by_the_allow_list(url: str, address: str, resolver: Any) -> None:
    checked = await check_url(url, LOOPBACK, resolver=resolver)
    assert checked.addresses == (ipaddress.ip_address(address),)
    assert checked.port == 9000
    assert resolver.calls == []


async def test_legacy_numeric_host_is_normalised_in_the_checked_url() -> None:
    checked = await check_url("http://0x7f.1:8080/a", LOOPBACK)
    assert checked.url == "http://127.0.0.1:8080/a"
    assert checked.host == "127.0.0.1"


async def test_allow_list_does_not_open_other_ranges() -> None:
    with pytest.raises(UnsafeUrl, match="private"):
        await check_url("http://10.0.0.1/", LOOPBACK)
    with pytest.raises(UnsafeUrl, match="localhost"):
        await check_url("http://localhost/", LOOPBACK)


async def test_ports_and_https_can_be_restricted() -> None:
    assert (await check_url("https://8.8.8.8/", allowed_ports={443})).port == 443
    with pytest.raises(UnsafeUrl, match="port 8443"):
        await check_url("https://8.8.8.8:8443/", allowed_ports={443})
    with pytest.raises(UnsafeUrl, match="only https"):
        await check_url("http://8.8.8.8/", require_https=True)


def test_embedded_ipv4_forms() -> None:
    ip = ipaddress.ip_address
    assert embedded_ipv4(ip("::ffff:10.0.0.1")) == ip("10.0.0.1")
    assert embedded_ipv4(ip("64:ff9b::a00:1")) == ip("10.0.0.1")
    assert embedded_ipv4(ip("2002:a00:1::5")) == ip("10.0.0.1")
    assert embedded_ipv4(ip("2606:2800:220:1::1")) is None
    assert embedded_ipv4(ip("10.0.0.1")) is None


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_parse_networks() -> None:
    assert parse_networks("127.0.0.0/8, ::1/128,") == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match="not-a-cidr"):
        parse_networks("10.0.0.0/8,not-a-cidr")
