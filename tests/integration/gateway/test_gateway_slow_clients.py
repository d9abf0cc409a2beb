"""Clients that send headers and then too little of the body: 408 and a closed connection.

Raw loopback sockets play the slow client (no HTTP library would send half a body); every wait
is bounded, so a gateway that keeps such connections open fails the test instead of hanging it.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from conftest import Stack

BODY_TIMEOUT_S = 1.0
HEAD = (
    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "Content-Length: {length}\r\n\r\n"
)


def _partial_request(url: str, path: str = "/v1/chat/completions") -> socket.socket:
    """A connection that sent its headers and 10 of the 1,000 body bytes it announced."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    sock.sendall(HEAD.format(path=path, length=1000).encode() + b'{"model": ')
    return sock


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes | None:
    """Everything the server sent until it closed the connection; None if still open at
    ``deadline``."""
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_a_body_that_stops_arriving_gets_a_408_and_the_connection_closes(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(body_timeout_s=BODY_TIMEOUT_S)
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    sock = _partial_request(stack.url)
    started = time.monotonic()
    with sock:
        answer = _read_until_closed(sock, started + BODY_TIMEOUT_S + 4)
    elapsed = time.monotonic() - started
    assert answer is not None, "the gateway kept a stalled upload open"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"request_timeout"' in answer.replace(b" ", b"")
    assert BODY_TIMEOUT_S * 0.9 <= elapsed < BODY_TIMEOUT_S + 4
    assert stack.engines["a"].received == [], "nothing went upstream"


def test_a_slow_body_that_arrives_in_time_is_served(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(body_timeout_s=BODY_TIMEOUT_S)
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}'
    parts = urlsplit(stack.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(HEAD.format(path="/v1/chat/completions", length=len(body)).encode())
        for i in range(0, len(body), 20):
            time.sleep(0.1)
            sock.sendall(body[i : i + 20])
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


def test_200_stalled_uploads_are_all_answered_and_closed(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(body_timeout_s=BODY_TIMEOUT_S)
    stack.set_endpoints("tiny", [stack.add_engine("a")])
    socks = [_partial_request(stack.url) for _ in range(200)]
    started = time.monotonic()
    deadline = started + BODY_TIMEOUT_S + 8
    answers: dict[socket.socket, bytes] = {s: b"" for s in socks}
    open_socks = set(socks)
    try:
        while open_socks and time.monotonic() < deadline:
            readable, _, _ = select.select(list(open_socks), [], [], 0.2)
            for sock in readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                answers[sock] += chunk
                if not chunk:
                    open_socks.discard(sock)
    finally:
        for sock in socks:
            sock.close()
    still_open = len(open_socks)
    assert still_open == 0, f"{still_open} of 200 stalled connections still open"
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers.values())
    # The gateway still serves afterwards.
    ok = httpx.post(
        stack.url + "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert ok.status_code == 200


def test_uploads_to_other_paths_are_not_kept_open(make_stack: Callable[..., Stack]) -> None:
    """A 404 or 405 answered before the body arrived closes the connection, even while the
    client keeps trickling body bytes (which would reset a keep-alive timer)."""
    stack = make_stack(body_timeout_s=BODY_TIMEOUT_S)
    for path in ("/v1/models", "/v1/nowhere"):
        with _partial_request(stack.url, path) as sock:
            deadline = time.monotonic() + 6
            answer = b""
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    sock.sendall(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                readable, _, _ = select.select([sock], [], [], 0.3)
                if readable:
                    try:
                        chunk = sock.recv(65536)
                    except ConnectionResetError:
                        chunk = b""
                    answer += chunk
                    closed = not chunk
        assert answer.startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 405 ")), answer[:200]
        assert closed, f"{path}: the connection stayed open for 6 s after the answer"
