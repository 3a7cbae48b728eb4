"""A small threaded HTTP(S) server on 127.0.0.1 that misbehaves on request.

Tests of the fetcher need servers that are slow, huge, compressed, redirecting or
lying, and need to know whether they were contacted at all: every server counts the
TCP connections it accepted, so "refused before connecting" is something a test can
assert rather than assume. Raw sockets rather than ``http.server`` because several
behaviours (trickled status lines, endless chunked bodies, gzip bombs) are not what a
well-behaved server library would let us send.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from imaging.fetch import open_connection

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names


@dataclass
class Exchange:
    """One accepted connection, handed to a behaviour after the request head was read."""

    sock: socket.socket
    request: Request
    server: LoopbackServer

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.server.bytes_sent += len(data)

    def send_head(self, status: int, headers: dict[str, str] | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Whatever')}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append("Connection: close")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def pause(self, seconds: float) -> None:
        """Sleeps, but wakes up (and stops the behaviour) when the server closes."""
        if self.server.closing.wait(seconds):
            raise ConnectionAbortedError("server closing")


Behaviour = Callable[[Exchange], None]

_REASONS = {
    200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other",
    307: "Temporary Redirect", 308: "Permanent Redirect", 404: "Not Found",
    500: "Internal Server Error", 503: "Service Unavailable",
}


@dataclass
class LoopbackServer:
    """Serves ``behaviour`` for every connection until ``close()``."""

    behaviour: Behaviour
    tls: ssl.SSLContext | None = None
    connections: int = 0
    bytes_sent: int = 0
    requests: list[Request] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        if self.tls is not None:
            self.tls.sni_callback = self._record_server_name
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def _record_server_name(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def _accept_loop(self) -> None:
        while not self.closing.is_set():
            try:
                sock, _peer = self._listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                self.connections += 1
                self._open.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(5)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._open.append(sock)
            request = _read_request(sock)
            if request is None:
                return
            self.requests.append(request)
            self.behaviour(Exchange(sock, request, self))
        except (OSError, ValueError):
            pass  # the client hung up or closed first: that is often the point of a test
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.closing.set()
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_request(sock: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > 65536:
            raise ValueError("request head too large")
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    request_line, *header_lines = head.split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers)


# Behaviours ---------------------------------------------------------------------------


def respond(body: bytes, *, status: int = 200, content_type: str = "image/png",
            headers: dict[str, str] | None = None) -> Behaviour:
    """A fixed body with a correct Content-Length."""

    def behaviour(exchange: Exchange) -> None:
        head = {"Content-Type": content_type, "Content-Length": str(len(body))}
        head.update(headers or {})
        exchange.send_head(status, head)
        exchange.send(body)

    return behaviour


def redirect(location: str | Callable[[Request], str], *, status: int = 302) -> Behaviour:
    """A redirect; ``location`` may depend on the request (for chains and loops)."""

    def behaviour(exchange: Exchange) -> None:
        target = location(exchange.request) if callable(location) else location
        exchange.send_head(status, {"Location": target, "Content-Length": "0"})

    return behaviour


def routes(table: dict[str, Behaviour], default: Behaviour | None = None) -> Behaviour:
    """Dispatches on the request path."""

    def behaviour(exchange: Exchange) -> None:
        chosen = table.get(exchange.request.target.split("?")[0], default)
        if chosen is None:
            exchange.send_head(404, {"Content-Length": "0"})
        else:
            chosen(exchange)

    return behaviour


def chunked(body: bytes, *, block: int = 1024) -> Behaviour:
    """``body`` in chunked transfer encoding, so no length is known in advance."""

    def behaviour(exchange: Exchange) -> None:
        exchange.send_head(200, {"Content-Type": "image/png", "Transfer-Encoding": "chunked"})
        for start in range(0, len(body), block):
            piece = body[start : start + block]
            exchange.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        exchange.send(b"0\r\n\r\n")

    return behaviour


def declares_length(length: int, body: bytes = b"") -> Behaviour:
    """Announces ``length`` bytes and sends ``body`` (shorter, or nothing) before closing."""

    def behaviour(exchange: Exchange) -> None:
        exchange.send_head(200, {"Content-Type": "image/png", "Content-Length": str(length)})
        exchange.send(body)

    return behaviour


def endless(*, chunked: bool = True, block: int = 64 * 1024) -> Behaviour:
    """A PNG-looking body that never ends, with no Content-Length."""

    def behaviour(exchange: Exchange) -> None:
        head = {"Content-Type": "image/png"}
        if chunked:
            head["Transfer-Encoding"] = "chunked"
        exchange.send_head(200, head)
        payload = PNG_SIGNATURE + b"\0" * (block - len(PNG_SIGNATURE))
        while not exchange.server.closing.is_set():
            data = payload if not chunked else b"%x\r\n%s\r\n" % (len(payload), payload)
            exchange.send(data)
            payload = b"\0" * block

    return behaviour


def trickle(*, interval: float, body: bytes = PNG_SIGNATURE + b"\0" * 10_000) -> Behaviour:
    """Headers at once, then the body one byte every ``interval`` seconds."""

    def behaviour(exchange: Exchange) -> None:
        exchange.send_head(200, {"Content-Type": "image/png", "Content-Length": str(len(body))})
        for index in range(len(body)):
            exchange.send(body[index : index + 1])
            exchange.pause(interval)

    return behaviour


def trickle_head(*, interval: float) -> Behaviour:
    """The status line and headers one byte every ``interval`` seconds, padded forever."""

    def behaviour(exchange: Exchange) -> None:
        head = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 60_000
        for index in range(len(head)):
            exchange.send(head[index : index + 1])
            exchange.pause(interval)

    return behaviour


def silent() -> Behaviour:
    """Reads the request and never answers."""

    def behaviour(exchange: Exchange) -> None:
        exchange.pause(30)

    return behaviour


def compressed(decoded: bytes, *, encoding: str = "gzip", raw_deflate: bool = False) -> Behaviour:
    """``decoded`` sent with a Content-Encoding, whatever the client asked for."""
    if encoding == "gzip":
        compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    else:
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS if raw_deflate else zlib.MAX_WBITS)
    body = compressor.compress(decoded) + compressor.flush()
    return respond(body, headers={"Content-Encoding": encoding})


def gzip_bomb(*, decoded_size: int) -> Behaviour:
    """A gzip stream of a PNG signature and zeros, decoded_size bytes once inflated.

    Compressed on the fly in blocks, so a 1 GB bomb costs the test about a megabyte of
    wire traffic and no memory; it stops early once the client hangs up.
    """

    def behaviour(exchange: Exchange) -> None:
        exchange.send_head(200, {"Content-Type": "image/png", "Content-Encoding": "gzip",
                                 "Transfer-Encoding": "chunked"})
        compressor = zlib.compressobj(9, wbits=16 + zlib.MAX_WBITS)
        block = b"\0" * (1 << 20)
        first = compressor.compress(PNG_SIGNATURE)
        produced = len(PNG_SIGNATURE)
        pending = first
        while produced < decoded_size and not exchange.server.closing.is_set():
            pending += compressor.compress(block)
            produced += len(block)
            if len(pending) >= 16 * 1024:
                exchange.send(b"%x\r\n%s\r\n" % (len(pending), pending))
                pending = b""
        pending += compressor.flush()
        exchange.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(pending), pending))

    return behaviour


def raw(data: bytes) -> Behaviour:
    """Whatever bytes a test wants, as the whole response."""

    def behaviour(exchange: Exchange) -> None:
        exchange.send(data)

    return behaviour


# Other loopback fixtures ----------------------------------------------------------------


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A loopback port whose connects hang: a listener whose accept queue is full.

    With ``listen(0)`` Linux queues one connection; once that slot is taken by a
    connection nobody accepts, further SYNs are dropped and connect() waits until its
    timeout, like a firewalled host, without any packet leaving loopback.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            try:
                fillers.append(open_connection("127.0.0.1", port, 0.2))
            except OSError:
                break  # the queue is full: connects now hang
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@dataclass
class Dialer:
    """A connector for ``fetch_image`` that records every dial.

    ``routes`` maps (checked address, port) to a loopback port: tests let a public
    looking address, chosen by the injected resolver, reach a loopback server, so the
    fetcher runs with the production policy. Anything else is dialled for real, which
    the network guard turns into a failure unless it is loopback.
    """

    routes: dict[tuple[str, int], int] = field(default_factory=dict)
    calls: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, address: str, port: int, timeout: float) -> socket.socket:
        self.calls.append((address, port))
        local = self.routes.get((address, port))
        if local is not None:
            return open_connection("127.0.0.1", local, timeout)
        return open_connection(address, port, timeout)


@dataclass
class FakeDns:
    """An injected resolver: fixed answers per host, or a function of the call number."""

    records: dict[str, list[str] | Callable[[int], list[str]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    delay: float = 0.0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if self.delay:
            time.sleep(self.delay)
        answer = self.records.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if callable(answer):
            return answer(sum(1 for called in self.calls if called == host))
        return list(answer)
