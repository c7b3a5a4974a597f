from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import trustme
from standardwebhooks.webhooks import Webhook

from service.webhooks import signing
from service.webhooks.http_client import (
    LANE_CONNECTIONS,
    WebhookClient,
    create_client,
    post_event,
)
from service.webhooks.ssrf import CheckedUrl, check_url
from tests.support.http_receiver import HttpReceiver, Reply

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
BODY = b'{"type":"message.sent","data":{"id":"msg_1"}}'


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[WebhookClient]:
    async with create_client(total_timeout=5.0) as webhook_client:
        yield webhook_client


async def checked_for(receiver: HttpReceiver, resolver: Any, path: str = "/hook") -> CheckedUrl:
    resolver.table["hooks.test"] = ["127.0.0.1"]
    scheme = "https" if receiver.url.startswith("https") else "http"
    return await check_url(
        f"{scheme}://hooks.test:{receiver.port}{path}", LOOPBACK, resolver=resolver
    )


async def test_post_goes_to_the_pinned_address_with_the_original_host(
    receiver: HttpReceiver, client: WebhookClient, resolver: Any
) -> None:
    checked = await checked_for(receiver, resolver)
    secret = signing.new_secret()
    headers = signing.headers([secret], "evt_1", int(time.time()), BODY)
    outcome = await post_event(client, checked, headers, BODY)
    assert outcome.status_code == 200
    assert outcome.error is None
    assert outcome.response_text == "ok"
    assert outcome.latency > 0
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.header("host") == f"hooks.test:{receiver.port}"
    assert request.body == BODY
    assert (
        request.header(
            "user-agent",
        )
        == "Kirim-Webhooks/1"
    )
    # The receiver verifies exactly what arrived on the wire.
    assert Webhook(secret).verify(request.body, request.headers)["data"]["id"] == "msg_1"


async def test_connection_follows_the_pin_not_the_name(
    receiver: HttpReceiver, client: WebhookClient, connect_spy: Any
) -> None:
    # A second server on another loopback address: the pin alone decides where we connect.
    with HttpReceiver("127.0.0.2", receiver.port) as other:
        checked = CheckedUrl(
            url=f"http://hooks.test:{receiver.port}/x",
            scheme="http",
            host="hooks.test",
            port=receiver.port,
            addresses=(ipaddress.ip_address("127.0.0.2"),),
        )
        outcome = await post_event(client, checked, {}, b"{}")
        assert outcome.status_code == 200
        assert len(other.requests) == 1
        assert receiver.requests == []
    assert ("127.0.0.2", receiver.port) in connect_spy.attempts
    assert "hooks.test" not in connect_spy.hosts()


async def test_next_pinned_address_is_tried_when_the_first_refuses(
    receiver: HttpReceiver, client: WebhookClient
) -> None:
    checked = CheckedUrl(
        url=f"http://hooks.test:{receiver.port}/x",
        scheme="http",
        host="hooks.test",
        port=receiver.port,
        addresses=(ipaddress.ip_address("127.0.0.3"), ipaddress.ip_address("127.0.0.1")),
    )
    outcome = await post_event(client, checked, {}, b"{}")
    assert outcome.status_code == 200
    assert len(receiver.requests) == 1


async def test_unpinned_requests_are_refused(
    receiver: HttpReceiver, client: WebhookClient, connect_spy: Any
) -> None:
    with pytest.raises(httpx.ConnectError, match="unchecked host"):
        await client.lanes[0].post(receiver.url_for("/raw"), content=b"{}")
    assert connect_spy.attempts == []
    assert receiver.requests == []


async def test_pin_for_another_host_is_refused(
    receiver: HttpReceiver, client: WebhookClient, connect_spy: Any
) -> None:
    mismatched = CheckedUrl(
        url=f"http://other.test:{receiver.port}/x",
        scheme="http",
        host="hooks.test",
        port=receiver.port,
        addresses=(ipaddress.ip_address("127.0.0.1"),),
    )
    outcome = await post_event(client, mismatched, {}, b"{}")
    assert outcome.status_code is None
    assert outcome.error is not None and "unchecked host" in outcome.error
    assert connect_spy.attempts == []


async def test_redirects_are_not_followed(
    receiver: HttpReceiver, client: WebhookClient, resolver: Any, connect_spy: Any
) -> None:
    receiver.enqueue(Reply.redirect("http://169.254.169.254/latest/meta-data/"))
    outcome = await post_event(client, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code == 302
    assert len(receiver.requests) == 1
    assert "169.254.169.254" not in connect_spy.hosts()
    assert connect_spy.hosts() == {"127.0.0.1"}


async def test_big_response_body_is_capped(
    receiver: HttpReceiver, client: WebhookClient, resolver: Any
) -> None:
    receiver.enqueue(Reply(200, b"x" * (8 * 1024 * 1024)))
    outcome = await post_event(client, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code == 200
    assert outcome.response_text == "x" * 4096


async def test_reading_stops_at_the_cap(receiver: HttpReceiver, resolver: Any) -> None:
    # The body announces 1 GB but stalls after 64 KiB: only a capped read returns in time.
    receiver.enqueue(Reply(200, b"y" * 65536, (("content-length", str(10**9)),)))
    async with create_client(total_timeout=2.0) as capped:
        outcome = await post_event(capped, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code == 200, outcome.error
    assert outcome.response_text == "y" * 4096
    assert outcome.latency < 1.5


async def test_small_cap_is_configurable(receiver: HttpReceiver, resolver: Any) -> None:
    receiver.enqueue(Reply(500, "é".encode() * 100))
    async with create_client(max_response_bytes=11) as small:
        outcome = await post_event(small, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code == 500
    # A multi-byte character cut in half is replaced, not an error.
    assert outcome.response_text == "ééééé\ufffd"


async def test_slow_receiver_times_out_without_raising(
    receiver: HttpReceiver, resolver: Any
) -> None:
    receiver.enqueue(Reply(200, delay=5))
    async with create_client(total_timeout=0.3) as quick:
        outcome = await post_event(quick, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code is None
    assert outcome.timed_out
    assert outcome.error is not None and "timeout" in outcome.error
    assert outcome.latency < 2


async def test_refused_connection_is_an_outcome_then_recovers(
    client: WebhookClient, resolver: Any
) -> None:
    with HttpReceiver().start(up=False) as server:
        checked = await checked_for(server, resolver)
        down = await post_event(client, checked, {}, b"{}")
        assert down.status_code is None
        assert down.error is not None and down.error.startswith("connection failed")
        assert not down.timed_out
        server.up()
        up = await post_event(client, checked, {}, b"{}")
        assert up.status_code == 200


async def test_dropped_connection_is_an_outcome(
    receiver: HttpReceiver, client: WebhookClient, resolver: Any
) -> None:
    receiver.enqueue(Reply(drop=True))
    outcome = await post_event(client, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code is None
    assert outcome.error


@pytest.mark.parametrize(
    ("reply", "status", "retry_after"),
    [
        (Reply.too_many(120), 429, 120.0),
        (Reply.too_many(7, status=503), 503, 7.0),
        (Reply(500, headers=(("retry-after", "60"),)), 500, None),
        (Reply.too_many("soon"), 429, None),
        (Reply.gone(), 410, None),
    ],
)
async def test_status_and_retry_after(
    reply: Reply,
    status: int,
    retry_after: float | None,
    receiver: HttpReceiver,
    client: WebhookClient,
    resolver: Any,
) -> None:
    receiver.enqueue(reply)
    outcome = await post_event(client, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code == status
    assert outcome.retry_after == retry_after


async def test_retry_after_http_date(
    receiver: HttpReceiver, client: WebhookClient, resolver: Any
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=300)
    receiver.enqueue(Reply.too_many(format_datetime(when, usegmt=True)))
    outcome = await post_event(client, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.retry_after is not None
    assert 295 <= outcome.retry_after <= 300


async def test_proxy_environment_is_ignored(
    receiver: HttpReceiver, resolver: Any, monkeypatch: pytest.MonkeyPatch, connect_spy: Any
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:1")
    async with create_client() as proxied_env:
        outcome = await post_event(proxied_env, await checked_for(receiver, resolver), {}, b"{}")
    assert outcome.status_code == 200
    assert ("127.0.0.1", 1) not in connect_spy.attempts


def tls_receiver(ca: trustme.CA, name: str) -> HttpReceiver:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(server_context)
    return HttpReceiver(ssl_context=server_context)


async def test_https_uses_the_host_name_for_sni_and_certificate(resolver: Any) -> None:
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with tls_receiver(ca, "hooks.test") as server:
        checked = await checked_for(server, resolver)
        assert checked.url.startswith("https://hooks.test:")
        async with create_client(ssl_context=client_context) as tls_client:
            outcome = await post_event(tls_client, checked, {}, BODY)
        assert outcome.status_code == 200, outcome.error
        assert server.requests[0].body == BODY


async def test_https_certificate_for_another_name_is_refused(resolver: Any) -> None:
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with tls_receiver(ca, "elsewhere.test") as server:
        checked = await checked_for(server, resolver)
        async with create_client(ssl_context=client_context) as tls_client:
            outcome = await post_event(tls_client, checked, {}, BODY)
        assert outcome.status_code is None
        assert outcome.error is not None and "certificate" in outcome.error.lower()
        assert server.requests == []


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
async def test_ipv6_literal_url(client: WebhookClient) -> None:
    with HttpReceiver("::1") as server:
        checked = await check_url(server.url_for("/v6"), (ipaddress.ip_network("::1/128"),))
        assert checked.host == "::1"
        outcome = await post_event(client, checked, {}, b"{}")
        assert outcome.status_code == 200, outcome.error
        assert server.requests[0].header("host") == f"[::1]:{server.port}"


class HoldingServer:
    """An HTTP/1.1 server on loopback that answers nothing until released, counting the
    requests that reached it: how many the client sends at once is then exact."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HoldingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                self.arrived += 1
                await self.release.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_attempts_spread_over_lanes_up_to_max_connections_in_all(resolver: Any) -> None:
    """12 connections in all, in lanes of 8 and 4: 12 attempts are in flight at once (one
    lane alone would hold 8) and the 13th waits for a connection to come free."""
    assert LANE_CONNECTIONS == 8
    async with (
        HoldingServer() as server,
        create_client(max_connections=12, total_timeout=30.0) as client,
    ):
        assert len(client.lanes) == 2
        resolver.table["hooks.test"] = ["127.0.0.1"]
        checked = await check_url(f"http://hooks.test:{server.port}/h", LOOPBACK, resolver=resolver)
        tasks = [
            asyncio.create_task(post_event(client, checked, {"x-n": str(i)}, BODY))
            for i in range(13)
        ]
        for _ in range(200):
            if server.arrived >= 12:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # time for a 13th, were the cap not kept
        assert server.arrived == 12
        server.release.set()
        outcomes = await asyncio.gather(*tasks)
    assert [o.status_code for o in outcomes] == [200] * 13
    assert server.arrived == 13


async def test_an_attempt_takes_the_lane_with_the_most_connections_free() -> None:
    async with create_client(max_connections=20) as client:
        assert client.lane_sizes == (8, 8, 4)
        with contextlib.ExitStack() as held:
            picked = [held.enter_context(client.lane()) for _ in range(20)]
            assert [picked.count(lane) for lane in client.lanes] == [8, 8, 4]
        # All free again: the first lane, then the next with most free.
        with client.lane() as first, client.lane() as second:
            assert (first, second) == client.lanes[:2]
