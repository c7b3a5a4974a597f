"""The test receiver itself: scripting, recording, down/up and use from a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.http_receiver import HttpReceiver, Reply


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as server:
        yield server


def plain_client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5)


def test_status_sequence_then_default(receiver: HttpReceiver) -> None:
    receiver.enqueue(Reply(500), Reply(500), Reply(200, b"done"))
    with plain_client() as client:
        statuses = [client.post(receiver.url_for("/h"), content=b"x").status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert [r.body for r in receiver.requests] == [b"x"] * 4


def test_per_path_script_wins_over_the_shared_queue(receiver: HttpReceiver) -> None:
    receiver.enqueue(Reply(410), path="/a")
    receiver.enqueue(Reply(503))
    receiver.set_default(Reply(202))
    with plain_client() as client:
        assert client.post(receiver.url_for("/b")).status_code == 503
        assert client.post(receiver.url_for("/a?x=1")).status_code == 410
        assert client.post(receiver.url_for("/a")).status_code == 202


def test_records_method_path_headers_body_and_time(receiver: HttpReceiver) -> None:
    before = time.time()
    with plain_client() as client:
        client.put(receiver.url_for("/p?q=1"), content=b"body", headers={"X-Test": "yes"})
    [request] = receiver.wait_for(1)
    assert (request.method, request.path, request.body) == ("PUT", "/p?q=1", b"body")
    assert request.header("x-test") == "yes"
    assert ("X-Test", "yes") in request.raw_headers
    assert before <= request.arrived_at <= time.time()


def test_chunked_request_body(receiver: HttpReceiver) -> None:
    with plain_client() as client:
        client.post(receiver.url_for("/c"), content=iter([b"ab", b"cd"]))
    assert receiver.wait_for(1)[0].body == b"abcd"


def test_scripted_headers_and_redirect_are_sent(receiver: HttpReceiver) -> None:
    receiver.enqueue(Reply.too_many(120), Reply.redirect("http://127.0.0.1:1/elsewhere"))
    with plain_client() as client:
        throttled = client.post(receiver.url_for("/"))
        moved = client.post(receiver.url_for("/"))
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "120")
    assert (moved.status_code, moved.headers["location"]) == (302, "http://127.0.0.1:1/elsewhere")


def test_delay_is_applied(receiver: HttpReceiver) -> None:
    receiver.enqueue(Reply(200, delay=0.3))
    started = time.monotonic()
    with plain_client() as client:
        client.post(receiver.url_for("/slow"))
    assert time.monotonic() - started >= 0.3


def test_wait_for_times_out(receiver: HttpReceiver) -> None:
    with pytest.raises(AssertionError, match="expected 1 requests"):
        receiver.wait_for(1, timeout=0.05)


def connect_refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_down_reserves_the_port_and_refuses_then_comes_up() -> None:
    with HttpReceiver().start(up=False) as server:
        port = server.port
        assert not server.is_up
        assert connect_refused(port)
        server.up()
        with plain_client() as client:
            assert client.get(server.url_for("/")).status_code == 200
        server.down()
        assert connect_refused(port)
        server.up()
        assert server.port == port
        with plain_client() as client:
            assert client.get(server.url_for("/")).status_code == 200


async def test_usable_from_async_code() -> None:
    async with HttpReceiver() as server:
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.post(server.url_for("/async"), content=b"{}")
        assert response.status_code == 200
        assert len(await server.wait_for_async(1, within=2)) == 1


def test_usable_from_a_subprocess(receiver: HttpReceiver) -> None:
    code = (
        "import sys, urllib.request\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "request = urllib.request.Request(sys.argv[1], data=b'from-child', method='POST')\n"
        "print(opener.open(request, timeout=5).status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, receiver.url_for("/child")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == "200"
    assert receiver.wait_for(1)[0].body == b"from-child"
