"""Fetch ``image_url`` without letting a stranger steer our server at our own network.

The URL is hostile until proven otherwise. The rules, and why:

* When ``FETCH_ALLOWED_HOSTS`` is set, only those host names (or their subdomains, for
  an entry starting with a dot) are fetched; everything else, IP literals included, is
  refused before any DNS lookup. A deployment that only renders its own CDN's images
  sets it, and so does the live fuzz run, whose URLs must never leave the machine.
* http and https only, no user info (``http://user@host`` hides the real host from
  people reading logs), and only the configured ports (80 and 443), so the fetcher
  cannot be used to poke at SSH, Redis or admin ports even on public hosts.
* The host is resolved exactly once per hop and every answer must be public unicast
  (``imaging.addresses``). We then connect to one of the checked addresses ourselves,
  with no second lookup, so a DNS server that answers "public" to the check and
  "127.0.0.1" to the connect (DNS rebinding) gains nothing. The Host header, TLS server
  name and certificate check still use the hostname.
* IP literal hosts, in every spelling a resolver would accept, are parsed here and
  never sent to DNS.
* Redirects are followed by hand, at most ``max_redirects``, each hop checked exactly
  like the first; https never downgrades to http.
* One deadline covers everything: DNS, connects, TLS handshakes, headers and body, over
  all hops. Every socket read and write is given only what is left of it, so a server
  that trickles one byte at a time cannot hold a worker past the deadline.
* The body is capped while streaming, counting decoded bytes when the server applies
  gzip/deflate although we asked for identity (a gzip bomb stops at the cap).
* The first bytes must be JPEG, PNG, WebP, HEIC or AVIF (``Content-Type`` is ignored); anything
  else stops the download early.
* Nothing is read from the environment: ``http.client`` knows no proxies, and a plain
  socket is opened by us.
"""

from __future__ import annotations

import functools
import http.client
import io
import selectors
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from ipaddress import IPv6Address, ip_address
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from django.conf import settings

from imaging import addresses
from imaging import errors  # noqa: F401  (registers the codes raised below)
from imaging.image_input import describe_unsupported, sniff_format
from platform_site.api_errors import ApiError

PARAM = "image_url"

Resolver = Callable[[str, int], list[str]]
"""(host, port) -> IP address strings. Called once per hop."""

Connector = Callable[[str, int, float], socket.socket]
"""(checked address, port, timeout) -> a connected TCP socket. A seam for tests."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_READ_SIZE = 64 * 1024
_SNIFF_BYTES = 12
_USER_AGENT = "replace-background-fetcher/1.0"
_ALLOWED_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")
# Characters that may stay as they are in a request target; everything else is
# percent-encoded, so spaces or control characters in a URL cannot split the request.
_SAFE_IN_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_IN_QUERY = _SAFE_IN_PATH + "?"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch. ``from_settings()`` is what production uses.

    ``ca_file`` replaces the system trust store when set (tests, private deployments).
    """

    allow_private: bool = False
    allowed_ports: frozenset[int] = field(default_factory=lambda: frozenset({80, 443}))
    timeout: float = 10.0
    connect_timeout: float = 3.0
    max_bytes: int = 25_000_000
    max_redirects: int = 3
    ca_file: str | None = None
    # Empty: any host whose addresses pass the checks. Otherwise exact names, and
    # ".example.com" for every subdomain of example.com.
    allowed_hosts: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Accept any iterable of ports (settings hold a list) but keep the policy immutable.
        object.__setattr__(self, "allowed_ports", frozenset(int(p) for p in self.allowed_ports))
        object.__setattr__(self, "allowed_hosts", frozenset(h.lower().rstrip(".") for h in self.allowed_hosts))

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (normalised: IDNA ASCII, lower case) is on the allow list, if any."""
        if not self.allowed_hosts:
            return True
        return host in self.allowed_hosts or any(
            entry.startswith(".") and host.endswith(entry) for entry in self.allowed_hosts)

    @classmethod
    def from_settings(cls) -> FetchPolicy:
        return cls(
            allow_private=bool(settings.FETCH_ALLOW_PRIVATE_ADDRESSES),
            allowed_ports=frozenset(int(port) for port in settings.FETCH_ALLOWED_PORTS),
            timeout=float(settings.FETCH_TIMEOUT_SECONDS),
            connect_timeout=float(settings.FETCH_CONNECT_TIMEOUT_SECONDS),
            max_bytes=int(settings.FETCH_MAX_BYTES),
            max_redirects=int(settings.FETCH_MAX_REDIRECTS),
            allowed_hosts=frozenset(getattr(settings, "FETCH_ALLOWED_HOSTS", ())),
        )


@dataclass(frozen=True)
class Target:
    """One hop's URL, parsed and checked for everything that needs no network."""

    url: str
    scheme: str
    host: str  # IDNA ASCII, lower case, no brackets, no trailing dot
    port: int
    literal: addresses.IPAddress | None
    request_target: str
    host_header: str


def _forbidden(message: str) -> ApiError:
    return ApiError("image_url_forbidden", message, param=PARAM)


def _unreachable(message: str) -> ApiError:
    return ApiError("image_unreachable", f"image_url could not be fetched: {message}", param=PARAM)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(
        "image_too_large",
        f"The image at image_url is larger than the {max_bytes:,} byte limit.",
        param=PARAM,
    )


def _remaining(deadline: float) -> float:
    """Seconds left before the deadline; raises TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _normalise_host(raw: str, bracketed: bool) -> tuple[str, addresses.IPAddress | None]:
    if bracketed:
        try:
            literal = addresses.parse_host_address(raw)
        except ValueError:
            raise _forbidden("image_url has an invalid IPv6 address.") from None
        if not isinstance(literal, IPv6Address):
            raise _forbidden("image_url has an invalid IPv6 address.")
        return str(literal), literal
    try:
        # Python's IDNA codec maps full-width digits and ideographic dots to ASCII, as
        # browsers do, so "１２７。０。０。１" is checked as the address it really is.
        host = raw if raw.isascii() else raw.encode("idna").decode("ascii")
    except UnicodeError:
        raise _forbidden("image_url has an invalid host name.") from None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if (
        not host
        or len(host) > 253
        or not set(host) <= _ALLOWED_HOST_CHARACTERS
        or any(not label for label in host.split("."))
    ):
        raise _forbidden("image_url has an invalid host name.")
    try:
        literal = addresses.parse_ipv4_spelling(host)
    except ValueError:
        raise _forbidden("image_url's host looks like an IP address but is not a valid one.") from None
    return (str(literal) if literal is not None else host), literal


def parse_target(url: str, policy: FetchPolicy) -> Target:
    """Everything that can be refused without the network: scheme, user info, port, host."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise _forbidden("image_url must be an http or https URL.")
        if "@" in parts.netloc:
            raise _forbidden("image_url must not contain a user name or password.")
        raw_host = parts.hostname
        port = parts.port
    except ValueError:
        raise _forbidden("image_url is not a valid URL.") from None
    if not raw_host:
        raise _forbidden("image_url has no host.")
    bracketed = parts.netloc.startswith("[")
    host, literal = _normalise_host(raw_host, bracketed)
    if not policy.allows_host(host):
        raise _forbidden("image_url's host is not one this server fetches from.")

    if port is None:
        port = _DEFAULT_PORTS[scheme]
    if port not in policy.allowed_ports:
        raise _forbidden(f"image_url uses port {port}; only ports "
                         f"{', '.join(str(p) for p in sorted(policy.allowed_ports))} are allowed.")

    path = quote(parts.path or "/", safe=_SAFE_IN_PATH)
    query = quote(parts.query, safe=_SAFE_IN_QUERY)
    request_target = f"{path}?{query}" if query else path
    host_header = f"[{host}]" if isinstance(literal, IPv6Address) else host
    if port != _DEFAULT_PORTS[scheme]:
        host_header = f"{host_header}:{port}"
    return Target(url, scheme, host, port, literal, request_target, host_header)


def resolve_host(host: str, port: int) -> list[str]:
    """The default resolver: one getaddrinfo call, addresses in the order returned."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canonname, sockaddr in answers:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


# getaddrinfo has no timeout of its own; running resolvers here lets the fetch deadline
# cover DNS too. A lookup that outlives its deadline finishes in the background, so
# there are enough workers that a few deliberately slow domains cannot queue up
# everybody else's lookups behind them.
_resolver_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fetch-resolve")


def _resolve(resolver: Resolver, target: Target, deadline: float) -> list[str]:
    future = _resolver_pool.submit(resolver, target.host, target.port)
    try:
        answers = future.result(timeout=_remaining(deadline))
    except (FutureTimeout, TimeoutError):
        future.cancel()
        raise _unreachable(f"resolving {target.host} timed out.") from None
    except (OSError, UnicodeError):
        raise _unreachable(f"the host {target.host} could not be resolved.") from None
    if not answers:
        raise _unreachable(f"the host {target.host} could not be resolved.")
    return list(answers)


def _describe_category(category: str) -> str:
    article = "an" if category[0] in "aeiou" else "a"
    return f"{article} {category}"


def checked_addresses(
    target: Target, policy: FetchPolicy, resolver: Resolver, deadline: float
) -> list[str]:
    """The addresses to dial for this hop, every one of them allowed, else ApiError."""
    if target.literal is not None:
        candidates: list[addresses.IPAddress] = [target.literal]
        subject = f"image_url's host {target.host} is"
    else:
        if not policy.allow_private and (
            target.host == "localhost" or target.host.endswith(".localhost")
        ):
            raise _forbidden("image_url's host is the local machine; only public addresses can be fetched.")
        candidates = []
        for answer in _resolve(resolver, target, deadline):
            try:
                candidates.append(ip_address(str(answer)))
            except ValueError:
                raise _forbidden(f"image_url's host {target.host} resolved to something that "
                                 "is not an IP address.") from None
        # The resolved address is not echoed back: it would turn this API into an
        # oracle for our internal DNS.
        subject = f"image_url's host {target.host} resolves to"

    for candidate in candidates:
        category = addresses.classify(candidate)
        if category == addresses.PUBLIC:
            continue
        if policy.allow_private and category in addresses.PRIVATE_USE_CATEGORIES:
            continue
        raise _forbidden(f"{subject} {_describe_category(category)} address; only public "
                         "addresses can be fetched.")
    return list(dict.fromkeys(addresses.connect_address(c) for c in candidates))


def open_connection(address: str, port: int, timeout: float) -> socket.socket:
    """The default connector: a plain TCP connection to an already checked address."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    # Loading the trust store costs milliseconds; contexts are safe to share.
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _tls_handshake(sock: socket.socket, target: Target, policy: FetchPolicy,
                   deadline: float) -> ssl.SSLSocket:
    """TLS with SNI and certificate check for the hostname, bounded by the deadline.

    Done non-blocking by hand: a blocking handshake applies the timeout to each read,
    so a server trickling its certificate could stretch it without end.
    """
    tls = _tls_context(policy.ca_file).wrap_socket(
        sock, server_hostname=target.host, do_handshake_on_connect=False
    )
    try:
        tls.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    selector.modify(tls, selectors.EVENT_READ)
                except ssl.SSLWantWriteError:
                    selector.modify(tls, selectors.EVENT_WRITE)
                if not selector.select(_remaining(deadline)):
                    raise TimeoutError("TLS handshake timed out")
        tls.setblocking(True)
    except BaseException:
        tls.close()  # wrap_socket took over the descriptor; closing `sock` would not
        raise
    return tls


class _DeadlineReader(io.RawIOBase):
    """Socket reads that each get only what is left of the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """What ``http.client`` sees as its socket: the three methods it uses, deadline-bound."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(_remaining(self._deadline))
        self._sock.sendall(data)

    def close(self) -> None:
        # http.client closes "its" socket as soon as it sees Connection: close, while
        # the response is still being read from it; the real socket is closed by the
        # hop that opened it, once the body is in.
        pass


def _connect(target: Target, dial: list[str], policy: FetchPolicy, connector: Connector,
             deadline: float) -> socket.socket:
    """Dials the checked addresses in order; the first that answers wins."""
    failure: OSError | None = None
    for address in dial:
        timeout = min(policy.connect_timeout, _remaining(deadline))
        try:
            sock = connector(address, target.port, timeout)
        except OSError as exc:
            failure = exc
            continue
        if target.scheme == "https":
            return _tls_handshake(sock, target, policy, deadline)
        return sock
    if isinstance(failure, TimeoutError):
        raise _unreachable(f"connecting to {target.host} timed out.")
    assert failure is not None
    raise failure


class _Body:
    """Collects a response body, decoding gzip/deflate, never past ``max_bytes``."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.data = bytearray()
        self.raw_bytes = 0
        self._encoding = encoding
        self._decoder: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def feed(self, chunk: bytes) -> None:
        self.raw_bytes += len(chunk)
        if self.raw_bytes > self.max_bytes:
            raise _too_large(self.max_bytes)
        if self._encoding == "deflate" and self._decoder is None:
            # "deflate" means zlib-wrapped, but some servers send a raw stream.
            zlib_header = len(chunk) >= 2 and chunk[0] & 0x0F == 8 and int.from_bytes(chunk[:2], "big") % 31 == 0
            self._decoder = zlib.decompressobj(wbits=zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        if self._decoder is None:
            self.data += chunk
            return
        budget = self.max_bytes - len(self.data)
        try:
            # Asking for one byte more than allowed is how we notice the cap without
            # ever inflating more than that into memory.
            decoded = self._decoder.decompress(chunk, budget + 1)
        except zlib.error:
            raise _unreachable(f"the {self._encoding} content encoding is corrupt.") from None
        if len(decoded) > budget:
            raise _too_large(self.max_bytes)
        self.data += decoded

    def finish(self) -> bytes:
        if self._decoder is not None and not self._decoder.eof:
            raise _unreachable(f"the {self._encoding} content encoding ended early.")
        return bytes(self.data)


def _read_body(response: http.client.HTTPResponse, policy: FetchPolicy) -> bytes:
    transfer_encoding = (response.getheader("Transfer-Encoding") or "").strip().lower()
    if transfer_encoding and transfer_encoding != "chunked":
        raise _unreachable(f"the server used the unsupported transfer encoding {transfer_encoding!r}.")
    encoding = (response.getheader("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise _unreachable(f"the server used the unsupported content encoding {encoding!r}.")

    declared: int | None = None
    if not transfer_encoding:
        length_header = response.getheader("Content-Length")
        if length_header is not None:
            try:
                declared = int(length_header)
            except ValueError:
                raise _unreachable("the server sent an invalid Content-Length.") from None
            if declared > policy.max_bytes:
                raise _too_large(policy.max_bytes)

    body = _Body(encoding, policy.max_bytes)
    sniffed = False
    while True:
        chunk = response.read1(_READ_SIZE)
        if not chunk:
            break
        body.feed(chunk)
        if not sniffed and len(body.data) >= _SNIFF_BYTES:
            _require_image(bytes(body.data[:_SNIFF_BYTES]))
            sniffed = True
    if declared is not None and body.raw_bytes < declared:
        raise _unreachable("the connection closed before the whole body arrived.")
    data = body.finish()
    if not data:
        raise ApiError("invalid_image", "image_url returned an empty body, not an image.", param=PARAM)
    if not sniffed:
        _require_image(data)
    return data


def _require_image(head: bytes) -> None:
    if sniff_format(head) is None:
        raise ApiError("unsupported_image", describe_unsupported(head), param=PARAM)


@contextmanager
def guarded_connection(target: Target, dial: list[str], policy: FetchPolicy, connector: Connector,
                       deadline: float) -> Iterator[http.client.HTTPConnection]:
    """An HTTP(S) connection to one of the addresses ``checked_addresses`` allowed.

    Every read and write runs under ``deadline``. Shared by the image fetch and webhook
    delivery (imaging.webhooks.delivery), the two places that talk to a stranger's URL.
    """
    sock = _connect(target, dial, policy, connector, deadline)
    connection = http.client.HTTPConnection(target.host, target.port)
    connection.sock = _DeadlineSocket(sock, deadline)  # type: ignore[assignment]
    try:
        yield connection
    finally:
        connection.close()
        sock.close()


def _one_hop(target: Target, dial: list[str], policy: FetchPolicy, connector: Connector,
             deadline: float) -> tuple[int, str | None, bytes | None]:
    """One request. Returns (status, Location, body); the body only for 2xx."""
    with guarded_connection(target, dial, policy, connector, deadline) as connection:
        connection.putrequest("GET", target.request_target, skip_host=True,
                              skip_accept_encoding=True)
        connection.putheader("Host", target.host_header)
        connection.putheader("User-Agent", _USER_AGENT)
        connection.putheader("Accept", "image/avif,image/webp,image/png,image/jpeg;q=0.9,image/heic;q=0.8,*/*;q=0.1")
        connection.putheader("Accept-Encoding", "identity")
        connection.putheader("Connection", "close")
        connection.endheaders()
        response = connection.getresponse()
        if response.status in _REDIRECT_STATUSES:
            return response.status, response.getheader("Location"), None
        if not 200 <= response.status < 300:
            return response.status, None, None
        return response.status, None, _read_body(response, policy)


def _header_text(value: str) -> str:
    """http.client decodes headers as Latin-1; a UTF-8 Location is re-read as UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def describe_failure(exc: BaseException, target: Target, policy: FetchPolicy) -> str:
    if isinstance(exc, TimeoutError):
        return f"no complete answer within the {policy.timeout:g} s limit."
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the TLS certificate is not valid for {target.host} ({exc.verify_message})."
    if isinstance(exc, ssl.SSLError):
        return "the TLS handshake failed."
    if isinstance(exc, ConnectionRefusedError):
        return f"the connection to {target.host} was refused."
    if isinstance(exc, http.client.HTTPException):
        return "the server's answer is not valid HTTP."
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return f"the connection to {target.host} failed ({reason})."


def fetch_image(
    url: str,
    *,
    policy: FetchPolicy | None = None,
    resolver: Resolver | None = None,
    connector: Connector | None = None,
) -> bytes:
    """The body of ``url``, fetched under ``policy``; every refusal is an ApiError.

    422 ``image_url_forbidden`` for URLs and addresses we will not touch, 422
    ``image_unreachable`` (with the reason) for DNS, connection, TLS, timeout, redirect
    and non-2xx failures, 413 ``image_too_large`` past ``max_bytes``, 415
    ``unsupported_image`` when the first bytes are not JPEG, PNG, WebP, HEIC or AVIF.
    """
    policy = policy or FetchPolicy.from_settings()
    resolver = resolver or resolve_host
    connector = connector or open_connection
    deadline = time.monotonic() + policy.timeout
    current = url
    redirects = 0
    while True:
        target = parse_target(current, policy)
        dial = checked_addresses(target, policy, resolver, deadline)
        try:
            status, location, body = _one_hop(target, dial, policy, connector, deadline)
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(describe_failure(exc, target, policy)) from None
        if body is not None:
            return body
        if status not in _REDIRECT_STATUSES:
            raise _unreachable(f"the server answered HTTP {status}.")
        if not location:
            raise _unreachable(f"the server answered HTTP {status} without a Location.")
        if redirects >= policy.max_redirects:
            raise _unreachable(f"more than {policy.max_redirects} redirects.")
        redirects += 1
        following = urljoin(current, _header_text(location).strip())
        if target.scheme == "https" and urlsplit(following).scheme.lower() == "http":
            raise _forbidden("image_url redirected from https to http, which is not followed.")
        current = following
