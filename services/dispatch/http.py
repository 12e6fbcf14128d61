"""A small HTTP/1.1 client for provider requests: kept-alive connections per origin, one request at a time on each.

Why not aiohttp's client: sending is dispatch's hot path, and aiohttp's general-purpose request path cost about
170-190 µs of CPU per request on this project's machine against 30-40 µs for a plain keep-alive exchange on
the same loop (docs/benchmarks.md, fifth round) — a third of the worker's CPU per command. What a provider send
needs is small: a POST with a JSON body, a few headers, and the status, `Retry-After` and body of the answer.

What it does: HTTP/1.1 over TCP or TLS (`https`, the system's CA store, SNI), `Content-Length` and chunked
response bodies, bodies delimited by the connection's close, 1xx interim answers skipped, `Connection: close`
honoured, idle connections dropped after `idle_seconds` (4 s: under Node.js's default keep-alive timeout of 5 s —
Evolution API runs on Node.js — so that a server rarely closes a connection just as a request goes out on it).
What it does not: redirects (a provider API answering 3xx is an error the caller sees), proxies, compression
(never asked for), HTTP/2.

Failures say whether the request may have reached the server (`written`): a connection that could not be made,
or a request never written, cannot have been delivered; a timeout or a connection lost after the write can.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # status line and headers
MAX_BODY = 1024 * 1024  # a provider's answer to a send is a few hundred bytes
FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")


class HttpError(Exception):
    """The exchange failed. `written`: the whole request had been handed to the connection."""

    def __init__(self, reason: str, *, written: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.written = written


class ConnectFailed(HttpError):
    """No connection could be made: the request was not sent."""


class RequestTimeout(HttpError):
    """No whole answer within the timeout."""


class ConnectionLost(HttpError):
    """The connection closed or broke before a whole answer arrived."""


class BadResponse(HttpError):
    """The answer is not HTTP this client can read (malformed, or over the size limits)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header's values joined with ", "
    body: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    prefix: str  # the base URL's path, without a trailing slash

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def origin_of(base_url: str) -> Origin:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {base_url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


class _Parser:
    """An HTTP/1.1 response read incrementally from the bytes a connection receives."""

    def __init__(self, head_only: bool) -> None:
        self.head_only = head_only  # a HEAD request: no body whatever the headers say
        self.status = 0
        self.version = b""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.until_close = False
        self._chunked = False
        self._length = -1
        self._chunk_left = -1  # chunked: bytes left in the current chunk; -1: a size line is next
        self._in_trailers = False
        self._has_head = False

    def feed(self, buffer: bytearray) -> bool:
        """Consume what `buffer` holds of the response; True once it is whole (what follows stays in `buffer`)."""
        while not self._has_head:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise BadResponse("response head too large", written=True)
                return False
            head = bytes(buffer[:end])
            del buffer[:end + 4]
            self._read_head(head)
        if self.until_close:
            self._take(buffer, len(buffer))
            return False
        if self._chunked:
            return self._feed_chunked(buffer)
        self._take(buffer, min(len(buffer), self._length - len(self.body)))
        return len(self.body) == self._length

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BadResponse("malformed status line", written=True)
        status = int(code)
        if 100 <= status < 200:  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadResponse("malformed header line", written=True)
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.status, self.version, self.headers, self._has_head = status, version, headers, True
        if self.head_only or status in (204, 304):
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise BadResponse("malformed Content-Length", written=True) from None
            if self._length < 0:
                raise BadResponse("malformed Content-Length", written=True)
            if self._length > MAX_BODY:
                raise BadResponse("response body too large", written=True)
        else:
            self.until_close = True

    def _take(self, buffer: bytearray, n: int) -> None:
        if len(self.body) + n > MAX_BODY:
            raise BadResponse("response body too large", written=True)
        self.body += buffer[:n]
        del buffer[:n]

    def _feed_chunked(self, buffer: bytearray) -> bool:
        while True:
            if self._in_trailers:  # trailer lines up to an empty one; their content is not used
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                line = buffer[:end]
                del buffer[:end + 2]
                if not line:
                    return True
                continue
            if self._chunk_left < 0:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise BadResponse("malformed chunk size", written=True)
                    return False
                size = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[:end + 2]
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise BadResponse("malformed chunk size", written=True) from None
                if self._chunk_left == 0:
                    self._in_trailers = True
                    continue
            if self._chunk_left > 0:
                n = min(len(buffer), self._chunk_left)
                self._take(buffer, n)
                self._chunk_left -= n
                if self._chunk_left:
                    return False
            if len(buffer) < 2:
                return False
            if buffer[:2] != b"\r\n":
                raise BadResponse("malformed chunk", written=True)
            del buffer[:2]
            self._chunk_left = -1

    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.until_close or "close" in connection:
            return False
        return self.version != b"HTTP/1.0" or "keep-alive" in connection

    def response(self) -> Response:
        return Response(self.status, self.headers, bytes(self.body))


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.parser: _Parser | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.lost = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.parser is None or self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        try:
            whole = self.parser.feed(self.buffer)
        except BadResponse as exc:
            self.waiter.set_exception(exc)
            self.close()
            return
        if whole:
            self.waiter.set_result(self.parser.response())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        waiter, parser = self.waiter, self.parser
        if waiter is None or waiter.done():
            return
        if parser is not None and parser.until_close:
            waiter.set_result(parser.response())
        else:
            reason = type(exc).__name__ if exc is not None else "closed by the server"
            waiter.set_exception(ConnectionLost(f"connection lost: {reason}", written=True))

    def usable(self, now: float, idle_seconds: float) -> bool:
        return (not self.lost and self.transport is not None and not self.transport.is_closing()
                and now - self.idle_since < idle_seconds)

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Requests to a few origins over at most `max_connections` connections in all (like a connector's limit)."""

    def __init__(self, *, timeout_seconds: float, max_connections: int, idle_seconds: float = 4.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout_seconds
        self.idle_seconds = idle_seconds
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}  # kept-alive connections per origin, newest last
        self._origins: dict[str, Origin] = {}
        self._ssl = ssl_context
        self._closed = False

    async def request(self, method: str, base_url: str, path: str, body: bytes,
                      headers: Mapping[str, str]) -> Response:
        """The whole answer to `method` `base_url` + `path`; raises an `HttpError` (or ValueError for a request
        that cannot be written: a bad URL, a header with a line break)."""
        origin = self._origins.get(base_url)
        if origin is None:
            origin = self._origins[base_url] = origin_of(base_url)
        head = _request_head(method, origin, origin.prefix + path, len(body), headers)
        connection: _Connection | None = None
        written = False
        try:
            async with asyncio.timeout(self.timeout), self._slots:  # waiting for a free connection counts too
                if self._closed:
                    raise ConnectFailed("client closed", written=False)
                connection = await self._connection(origin)
                connection.parser = _Parser(head_only=method == "HEAD")
                connection.waiter = asyncio.get_running_loop().create_future()
                assert connection.transport is not None
                connection.transport.write(head + body)
                written = True
                response = await connection.waiter
        except TimeoutError:
            if connection is not None:
                connection.close()  # an answer may still come: never reused
            raise RequestTimeout("timeout", written=written) from None
        except BaseException:  # an HttpError, a cancellation: the connection is out of step
            if connection is not None:
                connection.close()
            raise
        if connection.parser.keep_alive() and not connection.buffer and not connection.lost and not self._closed:
            connection.parser = connection.waiter = None
            connection.idle_since = time.monotonic()
            self._idle[origin].append(connection)
        else:
            connection.close()
        return response

    async def _connection(self, origin: Origin) -> _Connection:
        idle = self._idle.setdefault(origin, [])
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable(now, self.idle_seconds):
                return connection
            connection.close()
        context = None
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection, origin.host, origin.port, ssl=context,
                server_hostname=origin.host if context is not None else None)
        except OSError as exc:  # refused, unreachable, name not resolved, TLS handshake refused (an SSLError)
            raise ConnectFailed(f"cannot connect: {type(exc).__name__}", written=False) from None
        return connection

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
            idle.clear()


def _request_head(method: str, origin: Origin, target: str, length: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {target or '/'} HTTP/1.1", f"Host: {origin.host_header}", f"Content-Length: {length}",
             *(f"{name}: {value}" for name, value in headers.items())]
    if " " in target or any(c in line for line in lines for c in FORBIDDEN_IN_HEADERS):
        raise ValueError("the path holds a space, or a header a line break or a NUL")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
