"""dispatch's HTTP client (services/dispatch/http.py) against real sockets: a scripted HTTP server that answers
each request the way a test says, byte by byte when it matters, and a TLS server with a certificate made for
the test (the openssl command)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.dispatch import http
from services.dispatch.http import BadResponse, ConnectFailed, ConnectionLost, HttpClient, RequestTimeout

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]  # the request -> keep the connection open?


class Scripted:
    """A TCP server reading whole HTTP requests (head + Content-Length body) and answering with `answer`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.ended = 0  # connections the client closed or lost
        self.server: asyncio.Server | None = None

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                if not await self.answer(request, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended += 1
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def replying(*pieces: bytes, keep: bool = True, pause: float = 0.0) -> Answer:
    async def answer(_: bytes, writer: asyncio.StreamWriter) -> bool:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        return keep
    return answer


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"id\":\"wamid1\"}"


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    c = HttpClient(timeout_seconds=2.0, max_connections=4)
    try:
        yield c
    finally:
        await c.close()


async def serve(answer: Answer) -> tuple[Scripted, str]:
    server = Scripted(answer)
    port = await server.start()
    return server, f"http://127.0.0.1:{port}/v21.0/"


async def test_a_request_goes_out_as_http_1_1_and_the_connection_is_kept_for_the_next(client: HttpClient) -> None:
    server, base = await serve(replying(OK))
    try:
        first = await client.request("POST", base, "/123/messages", b'{"to":"5511"}',
                                     {"Content-Type": "application/json", "Idempotency-Key": "c-1"})
        second = await client.request("POST", base, "/123/messages", b"{}", {"Idempotency-Key": "c-2"})
    finally:
        await server.close()
    assert (first.status, first.body, first.headers["content-type"]) == (200, b'{"id":"wamid1"}', "application/json")
    assert second.body == b'{"id":"wamid1"}'
    port = base.split(":")[2].split("/")[0]
    assert server.requests[0] == (
        f"POST /v21.0/123/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 13\r\n"
        "Content-Type: application/json\r\nIdempotency-Key: c-1\r\n\r\n{\"to\":\"5511\"}").encode()
    assert server.connections == 1


async def test_bodies_arriving_a_byte_at_a_time_chunked_or_by_length_are_read_whole(client: HttpClient) -> None:
    chunked = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n"
               b"4;ext=1\r\n{\"id\r\n0b\r\n\":\"wamid2\"}\r\n0\r\nX-Trailer: t\r\n\r\n")
    for raw, body in ((chunked, b'{"id":"wamid2"}'), (OK, b'{"id":"wamid1"}')):
        server, base = await serve(replying(*(raw[i:i + 1] for i in range(len(raw)))))
        try:
            response = await client.request("POST", base, "/m", b"{}", {})
        finally:
            await server.close()
        assert response.body == body
    assert response.status == 200
    server, base = await serve(replying(chunked))
    try:
        response = await client.request("POST", base, "/m", b"{}", {})
        assert (response.status, response.headers["retry-after"]) == (201, "3")
        await client.request("POST", base, "/m", b"{}", {})
    finally:
        await server.close()
    assert server.connections == 1  # the chunked answer ended where it said: the connection stays in step


async def test_interim_answers_are_skipped_and_connection_close_is_honoured(client: HttpClient) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    server, base = await serve(replying(answer, keep=False))
    try:
        replies = [await client.request("POST", base, "/m", b"{}", {}) for _ in range(2)]
    finally:
        await server.close()
    assert [(r.status, r.body) for r in replies] == [(200, b"ok"), (200, b"ok")]
    assert server.connections == 2


async def test_a_body_without_length_ends_with_the_connection(client: HttpClient) -> None:
    server, base = await serve(replying(b"HTTP/1.0 502 Bad Gateway\r\n\r\nupstream ", b"down", keep=False))
    try:
        response = await client.request("POST", base, "/m", b"{}", {})
    finally:
        await server.close()
    assert (response.status, response.body) == (502, b"upstream down")


async def test_a_connection_the_server_closed_while_idle_is_not_used_again(client: HttpClient) -> None:
    async def once_then_close(_: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)  # keep-alive by the headers, but the server closes right after
        await writer.drain()
        return False

    server, base = await serve(once_then_close)
    try:
        await client.request("POST", base, "/m", b"{}", {})
        await asyncio.sleep(0.1)  # the close reaches the client while the connection is idle
        second = await client.request("POST", base, "/m", b"{}", {})
    finally:
        await server.close()
    assert second.status == 200
    assert server.connections == 2


async def test_failures_say_whether_the_request_may_have_reached_the_server() -> None:
    client = HttpClient(timeout_seconds=0.3, max_connections=2)
    silent, silent_base = await serve(replying(keep=True, pause=0))  # reads the request, never answers
    hangup, hangup_base = await serve(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", keep=False))
    garbled, garbled_base = await serve(replying(b"HTTP/2 200\r\n\r\n"))
    huge, huge_base = await serve(replying(f"HTTP/1.1 200 OK\r\nContent-Length: {http.MAX_BODY + 1}\r\n\r\n".encode()))
    free = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    refused_port = free.sockets[0].getsockname()[1]
    free.close()
    await free.wait_closed()
    try:
        with pytest.raises(RequestTimeout) as timeout:
            await client.request("POST", silent_base, "/m", b"{}", {})
        with pytest.raises(ConnectionLost) as lost:
            await client.request("POST", hangup_base, "/m", b"{}", {})
        with pytest.raises(BadResponse) as bad:
            await client.request("POST", garbled_base, "/m", b"{}", {})
        with pytest.raises(BadResponse, match="too large"):
            await client.request("POST", huge_base, "/m", b"{}", {})
        with pytest.raises(ConnectFailed) as refused:
            await client.request("POST", f"http://127.0.0.1:{refused_port}", "/m", b"{}", {})
        with pytest.raises(ValueError, match="line break"):
            await client.request("POST", silent_base, "/m", b"{}", {"apikey": "k\r\nX-Injected: 1"})
    finally:
        for server in (silent, hangup, garbled, huge):
            await server.close()
        await client.close()
    assert (timeout.value.written, lost.value.written, bad.value.written) == (True, True, True)
    assert refused.value.written is False
    assert len(silent.requests) == 1  # the refused header never went out


def _certificate(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_https_verifies_the_server_certificate_for_the_host_name(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = Scripted(replying(OK))
    port = await server.start(server_context)
    trusting = HttpClient(timeout_seconds=2.0, max_connections=2, ssl_context=ssl.create_default_context(cafile=cert))
    default = HttpClient(timeout_seconds=2.0, max_connections=2)  # the system's CAs do not know the test's certificate
    try:
        response = await trusting.request("POST", f"https://localhost:{port}", "/m", b"{}", {})
        with pytest.raises(ConnectFailed):
            await default.request("POST", f"https://localhost:{port}", "/m", b"{}", {})
        with pytest.raises(ConnectFailed):  # the certificate names localhost, not this address
            await trusting.request("POST", f"https://127.0.0.1:{port}", "/m", b"{}", {})
    finally:
        await trusting.close()
        await default.close()
        await server.close()
    assert response.body == b'{"id":"wamid1"}'
    assert server.requests[0].startswith(f"POST /m HTTP/1.1\r\nHost: localhost:{port}\r\n".encode())


async def test_a_connection_idle_longer_than_the_limit_is_replaced_by_a_new_one() -> None:
    client = HttpClient(timeout_seconds=2.0, max_connections=2, idle_seconds=0.2)
    server, base = await serve(replying(OK))
    try:
        await client.request("POST", base, "/m", b"{}", {})
        await client.request("POST", base, "/m", b"{}", {})  # at once: the same connection
        await asyncio.sleep(0.3)
        await client.request("POST", base, "/m", b"{}", {})  # idle too long: dropped, a new one
    finally:
        await client.close()
        await server.close()
    assert server.connections == 2


async def test_a_request_in_flight_when_the_client_closes_ends_and_leaves_no_connection_open() -> None:
    client = HttpClient(timeout_seconds=2.0, max_connections=2)

    async def late(_: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.2)
        writer.write(OK)
        await writer.drain()
        return True

    server, base = await serve(late)
    try:
        request = asyncio.ensure_future(client.request("POST", base, "/m", b"{}", {}))
        await asyncio.sleep(0.05)
        await client.close()
        response = await request
        for _ in range(50):
            if server.ended:
                break
            await asyncio.sleep(0.02)
    finally:
        await server.close()
    assert response.status == 200
    assert server.ended == 1  # the client closed the connection instead of keeping it for a next request
