"""Guard for user-supplied webhook URLs (server-side request forgery).

The host is resolved once and *every* address is checked; the caller then connects to
one of those validated addresses (see ``http_client``), so a DNS answer that changes
between check and connect cannot steer the request inside the network. Legacy numeric
hosts (``2130706433``, ``0x7f.1``, ``127.1``) are parsed the way libc parses them,
because ``getaddrinfo`` would happily resolve them to loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Resolves (host, port) to address strings; injectable so tests never touch real DNS.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

DEFAULT_RESOLVE_TIMEOUT = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_CHARS = re.compile(r"^[a-z0-9_.-]+$")
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")
_BLOCKED_NAMES = ("localhost", "metadata.google.internal")

_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("192.0.0.192"),  # Oracle Cloud
}


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Checked explicitly rather than trusting ``is_global``, whose tables differ between
# Python releases and which calls multicast and NAT64 "global".
_BLOCKED_V4: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("an unspecified (0.0.0.0/8) address", _nets("0.0.0.0/8")),
    ("a loopback address", _nets("127.0.0.0/8")),
    ("a private address", _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("a shared (CGNAT) address", _nets("100.64.0.0/10")),
    ("a link-local address", _nets("169.254.0.0/16")),
    ("a reserved IETF protocol address", _nets("192.0.0.0/24")),
    (
        "a documentation address",
        _nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"),
    ),
    ("a benchmarking address", _nets("198.18.0.0/15")),
    ("a 6to4 relay anycast address", _nets("192.88.99.0/24")),
    ("a multicast address", _nets("224.0.0.0/4")),
    ("a reserved or broadcast address", _nets("240.0.0.0/4")),
)
_BLOCKED_V6: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("an unspecified address", _nets("::/128")),
    ("a loopback address", _nets("::1/128")),
    ("a deprecated IPv4-compatible address", _nets("::/96")),
    ("a discard-only address", _nets("100::/64")),
    ("a Teredo address", _nets("2001::/32")),
    ("a reserved IETF protocol address", _nets("2001::/23")),
    ("a documentation address", _nets("2001:db8::/32", "3fff::/20")),
    ("a local-use NAT64 address", _nets("64:ff9b:1::/48")),
    ("a unique-local address", _nets("fc00::/7")),
    ("a link-local address", _nets("fe80::/10")),
    ("a site-local address", _nets("fec0::/10")),
    ("a multicast address", _nets("ff00::/8")),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """A webhook URL that must not be called; ``reason`` is safe to show to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """A URL that passed the guard, with the addresses it may be connected to.

    ``url`` is normalised (numeric hosts in canonical form, no fragment); ``host`` is the
    ASCII (IDNA) host name without brackets, as the HTTP client sees it.
    """

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and routes to (mapped, NAT64, 6to4)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _is_allowed(ip: IPAddress, allowed_networks: Sequence[IPNetwork]) -> bool:
    # An IPv4-mapped address is the IPv4 address to the kernel, so the allow list applies.
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    return any(c in net for c in candidates for net in allowed_networks if c.version == net.version)


def _blocked_reason(ip: IPAddress) -> str | None:
    if ip in _METADATA:
        return "a cloud metadata address"
    table = _BLOCKED_V4 if isinstance(ip, ipaddress.IPv4Address) else _BLOCKED_V6
    for reason, networks in table:
        if any(ip in net for net in networks):
            return reason
    inner = embedded_ipv4(ip)
    if inner is not None:
        inner_reason = _blocked_reason(inner)
        if inner_reason is not None:
            return f"an IPv6 form of {inner} ({inner_reason})"
        return None
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    return None


def address_problem(ip: IPAddress, allowed_networks: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``ip`` must not be contacted, or None when it is public or explicitly allowed."""
    if _is_allowed(ip, allowed_networks):
        return None
    reason = _blocked_reason(ip)
    return None if reason is None else f"{ip} is {reason}"


def _parse_ip_host(host: str) -> IPAddress | None:
    """The address a numeric host means to libc, None for a name; UnsafeUrl if malformed."""
    if ":" in host:
        if "%" in host:
            raise UnsafeUrl("IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise UnsafeUrl(f"invalid IPv6 address {host!r}") from exc
    labels = host.rstrip(".").split(".")
    # As in the WHATWG URL parser: a host whose last label is a number is an IPv4 address.
    if not _NUMERIC_LABEL.match(labels[-1]):
        return None
    if not all(_NUMERIC_LABEL.match(label) for label in labels):
        raise UnsafeUrl(f"invalid IPv4 address {host!r}")
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host.rstrip(".")))
    except OSError as exc:
        raise UnsafeUrl(f"invalid IPv4 address {host!r}") from exc


def _parse(url: str) -> tuple[httpx.URL, str, int]:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeUrl(f"malformed URL: {exc}") from exc
    if parsed.scheme not in _DEFAULT_PORTS:
        raise UnsafeUrl("only http and https URLs are allowed")
    if parsed.userinfo:
        raise UnsafeUrl("URLs with a user name or password are not allowed")
    if parsed.fragment:
        raise UnsafeUrl("URLs with a fragment (#...) are not allowed")
    try:
        host = parsed.raw_host.decode("ascii").lower()
    except UnicodeDecodeError as exc:
        raise UnsafeUrl("the host name is not valid") from exc
    if not host:
        raise UnsafeUrl("the URL has no host")
    if ":" not in host and (not _HOST_CHARS.match(host) or ".." in host or host[0] == "."):
        raise UnsafeUrl(f"the host name {host!r} is not valid")
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[parsed.scheme]
    if not 0 < port < 65536:
        raise UnsafeUrl(f"port {port} is not allowed")
    return parsed, host, port


async def system_resolver(host: str, port: int) -> list[str]:
    """All TCP addresses of ``host`` from the system resolver (A and AAAA)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def _resolve(host: str, port: int, resolver: Resolver, limit: float) -> list[IPAddress]:
    try:
        async with asyncio.timeout(limit):
            raw = await resolver(host, port)
    except TimeoutError as exc:
        raise UnsafeUrl(f"resolving {host!r} timed out") from exc
    except OSError as exc:
        raise UnsafeUrl(f"the host name {host!r} could not be resolved") from exc
    addresses: list[IPAddress] = []
    for text in raw:
        try:
            # Scoped link-local answers carry "%iface"; the scope does not change the check.
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError as exc:
            raise UnsafeUrl(f"the host name {host!r} resolved to an invalid address") from exc
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise UnsafeUrl(f"the host name {host!r} did not resolve to any address")
    return addresses


async def check_url(
    url: str,
    allowed_networks: Sequence[IPNetwork] = (),
    *,
    allowed_ports: Collection[int] | None = None,
    require_https: bool = False,
    resolver: Resolver = system_resolver,
    resolve_timeout: float = DEFAULT_RESOLVE_TIMEOUT,
) -> CheckedUrl:
    """Validate ``url`` and resolve it to addresses that are safe to connect to.

    Raises UnsafeUrl with a user-facing reason. Call it when an endpoint is registered
    and again before every attempt, because DNS answers change.
    """
    parsed, host, port = _parse(url)
    if require_https and parsed.scheme != "https":
        raise UnsafeUrl("only https URLs are allowed")
    if allowed_ports is not None and port not in allowed_ports:
        raise UnsafeUrl(f"port {port} is not allowed")
    name = host.rstrip(".")
    if name in _BLOCKED_NAMES or name.endswith(".localhost"):
        raise UnsafeUrl(f"the host name {host!r} points at this machine or its platform")
    literal = _parse_ip_host(host)
    if literal is not None:
        addresses = [literal]
        host = literal.compressed
    else:
        addresses = await _resolve(host, port, resolver, resolve_timeout)
    for ip in addresses:
        problem = address_problem(ip, allowed_networks)
        if problem is not None:
            raise UnsafeUrl(f"the URL is not allowed: {problem}")
    normalised = parsed.copy_with(host=host, fragment=None)
    return CheckedUrl(
        url=str(normalised),
        scheme=parsed.scheme,
        host=host,
        port=port,
        addresses=tuple(addresses),
    )


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """Parse a comma-separated CIDR list such as ``KIRIM_WEBHOOK_ALLOWED_NETWORKS``."""
    networks: list[IPNetwork] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(
                f"invalid network {part!r}: expected a CIDR such as 127.0.0.0/8"
            ) from exc
    return tuple(networks)
