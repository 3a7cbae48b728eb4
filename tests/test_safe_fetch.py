"""Fetching image_url safely: hostile URLs are refused before any connection is made.

Most tests run the fetcher with the production policy (public addresses only, ports 80
and 443). The injected resolver answers with a public-looking address and the ``Dialer``
connector routes that one address to a loopback test server, so a test can prove both
what was fetched and what was never dialled. Every server counts its connections, and
the suite's network guard fails any test that lets a packet leave loopback.
"""

from __future__ import annotations

import io
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings
from PIL import Image

from imaging import checks as imaging_checks
from imaging.addresses import classify, is_public_unicast, parse_ipv4_spelling
from imaging.fetch import FetchPolicy, fetch_image, resolve_host
from platform_site.api_errors import ApiError
from tests import loopback_http as lb

PUBLIC_A = "93.184.216.34"
PUBLIC_B = "93.184.216.35"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

PRODUCTION = FetchPolicy(timeout=3.0, connect_timeout=1.0)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


class Site:
    """A loopback server that the fetcher believes lives at PUBLIC_A ports 80 and 443."""

    def __init__(self, server: lb.LoopbackServer, records: dict | None = None) -> None:
        self.server = server
        self.dns = lb.FakeDns({"images.example": [PUBLIC_A], **(records or {})})
        self.dialer = lb.Dialer({(PUBLIC_A, 80): server.port, (PUBLIC_A, 443): server.port})

    def fetch(self, url: str, policy: FetchPolicy = PRODUCTION) -> bytes:
        return fetch_image(url, policy=policy, resolver=self.dns, connector=self.dialer)

    def refuse(self, url: str, policy: FetchPolicy = PRODUCTION) -> ApiError:
        with pytest.raises(ApiError) as info:
            self.fetch(url, policy)
        return info.value


@pytest.fixture
def serve():
    servers: list[lb.LoopbackServer] = []

    def start(behaviour: lb.Behaviour, tls: ssl.SSLContext | None = None) -> lb.LoopbackServer:
        server = lb.LoopbackServer(behaviour, tls=tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def site(serve):
    def make(behaviour: lb.Behaviour, records: dict | None = None) -> Site:
        return Site(serve(behaviour), records)

    return make


def local_policy(*ports: int, **changes) -> FetchPolicy:
    """The development switch: loopback allowed, on the test servers' ports."""
    return FetchPolicy(allow_private=True, allowed_ports={80, 443, *ports}, **changes)


def refused(url: str, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        fetch_image(url, **kwargs)
    return info.value


# The hostile-URL battery -------------------------------------------------------------

LITERAL_HOSTS_THAT_ARE_NOT_PUBLIC = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",
    "http://017700000001/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://0177.0.0.01/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://127.0.0.1./",
    "http://127.255.255.254/",
    "http://0.0.0.0/",
    "http://0/",
    "http://10.0.0.1/",
    "http://012.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
    "http://100.64.0.1/",
    "http://100.127.255.254/",
    "http://100.100.100.200/",
    "http://192.0.0.170/",
    "http://192.0.2.1/",
    "http://198.18.0.1/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::127.0.0.1]/",
    "http://[::8.8.8.8]/",
    "http://[::ffff:0:7f00:1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b:1::a00:1]/",
    "http://[64:ff9b:1::808:808]/",
    "http://[2002:7f00:1::1]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[2002:c0a8:101::1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://[2001:0:a00:1:8000:63bf:f7f7:f7f7]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fc00::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[100::1]/",
    "http://[2001:db8::1]/",
    "http://[3fff::1]/",
    "http://[4000::1]/",
    "https://127.0.0.1/",
    "https://[::1]/",
    "http://１２７。０。０。１/",
    "http://①②⑦.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://ｌｏｃａｌｈｏｓｔ/",
]


@pytest.mark.parametrize("url", LITERAL_HOSTS_THAT_ARE_NOT_PUBLIC)
def test_it_refuses_a_host_that_is_not_public_without_dns_or_a_connection(url):
    dns, dialer = lb.FakeDns(), lb.Dialer()
    error = refused(url, policy=PRODUCTION, resolver=dns, connector=dialer)
    assert error.code == "image_url_forbidden"
    assert error.status == 422 and error.param == "image_url"
    assert dns.calls == [] and dialer.calls == []


LOOPBACK_SPELLINGS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f.1", "0177.0.0.1", "0x7f000001",
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost", "127.0.0.1.",
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_a_live_loopback_server_spelled_any_way_sees_no_connection(serve, spelling):
    server = serve(lb.respond(PNG))
    policy = FetchPolicy(allowed_ports={80, 443, server.port}, timeout=2)
    error = refused(f"http://{spelling}:{server.port}/a.png", policy=policy)
    assert error.code == "image_url_forbidden"
    assert server.connections == 0


MALFORMED_OR_DISALLOWED_URLS = [
    "file:///etc/passwd",
    "ftp://images.example/a.png",
    "gopher://127.0.0.1:70/_",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "dict://127.0.0.1:11211/stats",
    "ldap://127.0.0.1/",
    "//images.example/a.png",
    "images.example/a.png",
    "http:///a.png",
    "http://user:secret@images.example/a.png",
    "http://user@images.example/a.png",
    "http://@images.example/a.png",
    "http://images.example@127.0.0.1/a.png",
    "http://images.example:80@127.0.0.1/a.png",
    "http://images.example:8080/a.png",
    "http://images.example:22/",
    "http://images.example:6379/",
    "https://images.example:8443/a.png",
    "http://images.example:0/",
    "http://images.example:99999/",
    "http://999.0.0.1/",
    "http://1.2.3.4.5/",
    "http://0x7g.1/",
    "http://example.08/",
    "http://%31%32%37.0.0.1/",
    "http://127.0.0.1%2f.images.example/",
    "http://[127.0.0.1]/",
    "http://images..example/",
    "http://under score!.example/",
]


@pytest.mark.parametrize("url", MALFORMED_OR_DISALLOWED_URLS)
def test_it_refuses_bad_schemes_user_info_ports_and_malformed_hosts_before_dns(url):
    dns = lb.FakeDns({"images.example": [PUBLIC_A]})
    dialer = lb.Dialer()
    error = refused(url, policy=PRODUCTION, resolver=dns, connector=dialer)
    assert error.code == "image_url_forbidden"
    assert dns.calls == [] and dialer.calls == []


HOSTILE_DNS_ANSWERS = [
    ["127.0.0.1"],
    ["10.1.2.3"],
    ["169.254.169.254"],
    ["100.100.100.200"],
    ["0.0.0.0"],
    ["192.168.0.10"],
    ["224.0.0.251"],
    ["::1"],
    ["::ffff:127.0.0.1"],
    ["::ffff:169.254.169.254"],
    ["fd00:ec2::254"],
    ["fe80::a9fe:a9fe%eth0"],
    ["64:ff9b::a00:1"],
    ["2002:a00:1::1"],
    [PUBLIC_A, "127.0.0.1"],
    ["10.0.0.1", PUBLIC_A],
    [PUBLIC_A, PUBLIC_V6, "::1"],
    ["not an address"],
]


@pytest.mark.parametrize("answers", HOSTILE_DNS_ANSWERS, ids=lambda a: ",".join(a))
def test_it_refuses_a_name_if_any_answer_is_not_public_and_dials_nothing(answers):
    dns = lb.FakeDns({"images.example": answers})
    dialer = lb.Dialer({(PUBLIC_A, 80): 9})
    error = refused("http://images.example/a.png", policy=PRODUCTION, resolver=dns, connector=dialer)
    assert error.code == "image_url_forbidden"
    assert dns.calls == ["images.example"]
    assert dialer.calls == []
    # The internal address is not echoed: that would make the API a DNS oracle.
    for answer in answers:
        if answer != PUBLIC_A:
            assert answer not in error.message


REDIRECT_TARGETS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://2130706433/latest",
    "http://0x7f.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://internal.example/admin",
    "http://v6.internal.example/",
    "http://10.0.0.1/",
    "http://[fd00:ec2::254]/",
    "//127.0.0.1/x.png",
    "http://images.example:6379/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "http://user:pw@images.example/a.png",
]

INTERNAL_NAMES = {
    "metadata.google.internal": ["169.254.169.254"],
    "internal.example": ["10.0.0.7"],
    "v6.internal.example": ["fd00::1"],
}


@pytest.mark.parametrize("location", REDIRECT_TARGETS)
def test_a_redirect_to_a_forbidden_target_is_refused_after_the_first_hop_only(site, location):
    public = site(lb.redirect(location), INTERNAL_NAMES)
    error = public.refuse("http://images.example/start")
    assert error.code == "image_url_forbidden"
    assert public.server.connections == 1
    assert public.dialer.calls == [(PUBLIC_A, 80)]


@pytest.mark.parametrize("spelling", ["127.0.0.1", "2130706433", "[::ffff:127.0.0.1]", "localhost", "0x7f.1"])
def test_a_live_loopback_redirect_target_is_never_contacted(serve, site, spelling):
    target = serve(lb.respond(PNG))
    public = site(lb.redirect(f"http://{spelling}:{target.port}/secret"))
    policy = FetchPolicy(allowed_ports={80, 443, target.port}, timeout=2)
    error = public.refuse("http://images.example/start", policy)
    assert error.code == "image_url_forbidden"
    assert target.connections == 0
    assert public.server.connections == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_checked_again(site, status):
    public = site(lb.redirect("http://169.254.169.254/", status=status))
    assert public.refuse("http://images.example/start").code == "image_url_forbidden"
    assert public.dialer.calls == [(PUBLIC_A, 80)]


# DNS: once per hop, the checked address is the one dialled -------------------------------


def test_it_resolves_once_and_dials_the_checked_address_despite_rebinding(site):
    rebinding = {"rebind.example": lambda call: [PUBLIC_A] if call == 1 else ["127.0.0.1"]}
    public = site(lb.respond(PNG), rebinding)
    assert public.fetch("http://rebind.example/a.png") == PNG
    assert public.dns.calls == ["rebind.example"]
    assert public.dialer.calls == [(PUBLIC_A, 80)]
    assert public.server.requests[0].headers["host"] == "rebind.example"


def test_a_rebinding_host_is_caught_when_a_redirect_resolves_it_again(site):
    rebinding = {"rebind.example": lambda call: [PUBLIC_A] if call == 1 else ["127.0.0.1"]}
    public = site(lb.routes({"/a": lb.redirect("/b"), "/b": lb.respond(PNG)}), rebinding)
    error = public.refuse("http://rebind.example/a")
    assert error.code == "image_url_forbidden"
    assert public.dns.calls == ["rebind.example", "rebind.example"]
    assert public.dialer.calls == [(PUBLIC_A, 80)]
    assert [r.target for r in public.server.requests] == ["/a"]


def test_the_default_resolver_asks_getaddrinfo_once_and_the_answer_is_checked(monkeypatch):
    calls = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        calls.append(host)
        address = "127.0.0.1" if len(calls) == 1 else PUBLIC_A  # rebinds after the check
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))] * 2

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    dialer = lb.Dialer()
    error = refused("http://images.example/a.png", policy=PRODUCTION, connector=dialer)
    assert error.code == "image_url_forbidden"
    assert calls == ["images.example"]
    assert dialer.calls == []
    assert resolve_host("images.example", 80) == [PUBLIC_A]  # duplicates folded


def test_a_public_literal_is_dialled_directly_with_its_canonical_host_header(site):
    public = site(lb.respond(PNG))
    assert public.fetch("http://1572395042/a.png") == PNG  # 93.184.216.34 in decimal
    assert public.dns.calls == []
    assert public.dialer.calls == [(PUBLIC_A, 80)]
    assert public.server.requests[0].headers["host"] == PUBLIC_A


def test_an_ipv4_mapped_answer_is_dialled_as_the_ipv4_that_was_checked(site):
    public = site(lb.respond(PNG), {"mapped.example": [f"::ffff:{PUBLIC_A}"]})
    assert public.fetch("http://mapped.example/a.png") == PNG
    assert public.dialer.calls == [(PUBLIC_A, 80)]


def test_a_public_ipv6_answer_is_dialled(site):
    public = site(lb.respond(PNG), {"v6.example": [PUBLIC_V6]})
    public.dialer.routes[(PUBLIC_V6, 80)] = public.server.port
    assert public.fetch("http://v6.example/a.png") == PNG
    assert public.dialer.calls == [(PUBLIC_V6, 80)]


def test_it_tries_the_next_checked_address_when_one_refuses(site):
    public = site(lb.respond(PNG), {"two.example": [PUBLIC_B, PUBLIC_A]})
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        public.dialer.routes[(PUBLIC_B, 80)] = closed.getsockname()[1]  # nothing listens
        assert public.fetch("http://two.example/a.png") == PNG
    assert public.dialer.calls == [(PUBLIC_B, 80), (PUBLIC_A, 80)]


def test_an_unresolvable_host_is_unreachable():
    dns = lb.FakeDns({})
    error = refused("http://nowhere.example/a.png", policy=PRODUCTION, resolver=dns, connector=lb.Dialer())
    assert error.code == "image_unreachable"
    assert "could not be resolved" in error.message


def test_a_resolver_with_no_answers_is_unreachable():
    dns = lb.FakeDns({"empty.example": []})
    error = refused("http://empty.example/", policy=PRODUCTION, resolver=dns, connector=lb.Dialer())
    assert error.code == "image_unreachable"


def test_a_hanging_resolver_is_cut_off_by_the_deadline():
    dns = lb.FakeDns({"slow.example": [PUBLIC_A]}, delay=2)
    started = time.monotonic()
    error = refused("http://slow.example/", policy=FetchPolicy(timeout=0.4), resolver=dns,
                    connector=lb.Dialer())
    assert error.code == "image_unreachable"
    assert time.monotonic() - started < 1.2


# Redirects -----------------------------------------------------------------------------


def _chain(length: int) -> lb.Behaviour:
    table = {f"/r{i}": lb.redirect(f"/r{i + 1}") for i in range(length)}
    table[f"/r{length}"] = lb.respond(PNG)
    return lb.routes(table)


def test_it_follows_three_redirects(site):
    public = site(_chain(3))
    assert public.fetch("http://images.example/r0") == PNG
    assert len(public.dns.calls) == 4  # every hop resolved (and checked) again


def test_it_gives_up_after_three_redirects(site):
    public = site(_chain(4))
    error = public.refuse("http://images.example/r0")
    assert error.code == "image_unreachable" and "redirects" in error.message
    assert [r.target for r in public.server.requests] == ["/r0", "/r1", "/r2", "/r3"]


def test_a_redirect_loop_ends(site):
    public = site(lb.redirect("/again"))
    assert public.refuse("http://images.example/").code == "image_unreachable"
    assert public.server.connections == 4


def test_a_redirect_without_location_is_unreachable(site):
    public = site(lb.raw(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"))
    assert public.refuse("http://images.example/").code == "image_unreachable"


def test_a_relative_redirect_keeps_the_host_header(site):
    public = site(lb.routes({"/old": lb.redirect("../new.png?v=1"), "/new.png": lb.respond(PNG)}))
    assert public.fetch("http://images.example/old") == PNG
    assert public.server.requests[1].target == "/new.png?v=1"
    assert public.server.requests[1].headers["host"] == "images.example"


def test_the_deadline_covers_all_hops_together(site):
    def slow_redirect(exchange: lb.Exchange) -> None:
        exchange.pause(0.25)
        lb.redirect("/next")(exchange)

    public = site(slow_redirect)
    started = time.monotonic()
    error = public.refuse("http://images.example/", FetchPolicy(timeout=0.6))
    assert error.code == "image_unreachable"
    assert public.server.connections == 3  # 0.25 s each: the third hop runs out
    assert time.monotonic() - started < 1.2


# TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=images.example", "-addext", "subjectAltName=DNS:images.example"],
        check=True, capture_output=True,
    )
    return cert, key


def _server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def _trusting(certificate: tuple[Path, Path], **changes) -> FetchPolicy:
    return FetchPolicy(ca_file=str(certificate[0]), timeout=3, connect_timeout=1, **changes)


def test_https_dials_the_checked_address_with_the_hostname_for_sni_host_and_certificate(serve, certificate):
    server = serve(lb.respond(PNG), tls=_server_tls(certificate))
    public = Site(server)
    assert public.fetch("https://images.example/a.png", _trusting(certificate)) == PNG
    assert public.dialer.calls == [(PUBLIC_A, 443)]
    assert server.server_names == ["images.example"]
    assert server.requests[0].headers["host"] == "images.example"


def test_a_certificate_for_another_name_is_unreachable(serve, certificate):
    server = serve(lb.respond(PNG), tls=_server_tls(certificate))
    public = Site(server, {"other.example": [PUBLIC_A]})
    error = public.refuse("https://other.example/a.png", _trusting(certificate))
    assert error.code == "image_unreachable" and "certificate" in error.message
    assert server.requests == []


def test_an_untrusted_certificate_is_unreachable(serve, certificate):
    server = serve(lb.respond(PNG), tls=_server_tls(certificate))
    public = Site(server)
    error = public.refuse("https://images.example/a.png", FetchPolicy(timeout=3))
    assert error.code == "image_unreachable"
    assert server.requests == []


def test_https_never_redirects_down_to_http(serve, certificate):
    secure = serve(lb.redirect("http://images.example/a.png"), tls=_server_tls(certificate))
    plain = serve(lb.respond(PNG))
    public = Site(secure)
    public.dialer.routes[(PUBLIC_A, 80)] = plain.port
    error = public.refuse("https://images.example/start", _trusting(certificate))
    assert error.code == "image_url_forbidden"
    assert plain.connections == 0
    assert public.dns.calls == ["images.example"]
    assert public.dialer.calls == [(PUBLIC_A, 443)]


def test_http_may_redirect_up_to_https(serve, certificate):
    secure = serve(lb.respond(PNG), tls=_server_tls(certificate))
    plain = serve(lb.redirect("https://images.example/a.png"))
    public = Site(plain)
    public.dialer.routes[(PUBLIC_A, 443)] = secure.port
    assert public.fetch("http://images.example/a.png", _trusting(certificate)) == PNG
    assert public.dialer.calls == [(PUBLIC_A, 80), (PUBLIC_A, 443)]


def test_a_tls_server_that_never_answers_the_handshake_hits_the_deadline(site):
    public = site(lb.silent())  # plain TCP: it waits for an HTTP request that never comes
    started = time.monotonic()
    error = public.refuse("https://images.example/a.png", FetchPolicy(timeout=0.5))
    assert error.code == "image_unreachable"
    assert time.monotonic() - started < 1.2


# Size caps -----------------------------------------------------------------------------


def test_a_declared_length_over_the_cap_is_refused_before_reading(site):
    public = site(lb.declares_length(25_000_001))
    error = public.refuse("http://images.example/a.png", FetchPolicy(timeout=3))
    assert error.code == "image_too_large" and error.status == 413


def test_a_body_exactly_at_the_cap_is_accepted_and_one_byte_more_is_not(site):
    body = lb.PNG_SIGNATURE + b"\0" * 992
    at_cap = site(lb.chunked(body))
    assert at_cap.fetch("http://images.example/", FetchPolicy(max_bytes=1000)) == body
    over = site(lb.chunked(body + b"\0"))
    assert over.refuse("http://images.example/", FetchPolicy(max_bytes=1000)).code == "image_too_large"


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "until-close"])
def test_an_endless_body_without_length_stops_at_the_cap(site, chunked):
    public = site(lb.endless(chunked=chunked))
    error = public.refuse("http://images.example/", FetchPolicy(max_bytes=2_000_000))
    assert error.code == "image_too_large"


def test_a_gzip_bomb_stops_at_the_decoded_cap(site):
    public = site(lb.gzip_bomb(decoded_size=1 << 30))
    started = time.monotonic()
    error = public.refuse("http://images.example/", FetchPolicy(max_bytes=5_000_000))
    assert error.code == "image_too_large"
    assert time.monotonic() - started < 2
    assert public.server.bytes_sent < 1_000_000  # the client hung up early


def test_a_gzip_bomb_against_the_default_cap_is_refused(site):
    public = site(lb.gzip_bomb(decoded_size=100_000_000))
    assert public.refuse("http://images.example/", FetchPolicy(timeout=5)).code == "image_too_large"


@pytest.mark.parametrize(
    "behaviour",
    [lb.compressed(PNG, encoding="gzip"), lb.compressed(PNG, encoding="deflate"),
     lb.compressed(PNG, encoding="deflate", raw_deflate=True)],
    ids=["gzip", "deflate", "raw-deflate"],
)
def test_an_unrequested_content_encoding_is_decoded(site, behaviour):
    public = site(behaviour)
    assert public.fetch("http://images.example/a.png") == PNG
    assert public.server.requests[0].headers["accept-encoding"] == "identity"


def test_a_truncated_gzip_body_is_unreachable(site):
    compressor = zlib.compressobj(wbits=31)
    whole = compressor.compress(PNG * 20) + compressor.flush()
    public = site(lb.respond(whole[: len(whole) // 2], headers={"Content-Encoding": "gzip"}))
    assert public.refuse("http://images.example/").code == "image_unreachable"


@pytest.mark.parametrize("headers", [{"Content-Encoding": "br"}, {"Content-Encoding": "gzip, gzip"},
                                     {"Transfer-Encoding": "gzip, chunked"}])
def test_encodings_we_cannot_bound_are_unreachable(site, headers):
    public = site(lb.respond(PNG, headers=headers))
    assert public.refuse("http://images.example/").code == "image_unreachable"


# Time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "behaviour",
    [lb.trickle(interval=0.05), lb.trickle_head(interval=0.05), lb.silent()],
    ids=["trickled-body", "trickled-headers", "silent"],
)
def test_a_slow_server_is_cut_off_at_the_total_deadline(site, behaviour):
    public = site(behaviour)
    started = time.monotonic()
    error = public.refuse("http://images.example/a.png", FetchPolicy(timeout=0.5))
    assert error.code == "image_unreachable" and "0.5 s" in error.message
    assert 0.45 < time.monotonic() - started < 1.0


def test_a_connect_that_hangs_hits_the_connect_timeout():
    with lb.blackhole() as port:
        policy = local_policy(port, timeout=5, connect_timeout=0.3)
        started = time.monotonic()
        error = refused(f"http://127.0.0.1:{port}/a.png", policy=policy)
    assert error.code == "image_unreachable" and "timed out" in error.message
    assert time.monotonic() - started < 1.0


def test_a_refused_connection_is_unreachable(site):
    public = site(lb.respond(PNG))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        public.dialer.routes[(PUBLIC_A, 80)] = closed.getsockname()[1]
        error = public.refuse("http://images.example/a.png")
    assert error.code == "image_unreachable" and "refused" in error.message


# Answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [300, 304, 400, 403, 404, 410, 500, 502, 503])
def test_a_non_2xx_answer_is_unreachable_with_its_status(site, status):
    public = site(lb.respond(b"nope", status=status, content_type="text/plain"))
    error = public.refuse("http://images.example/a.png")
    assert error.code == "image_unreachable"
    assert f"HTTP {status}" in error.message


def test_the_content_type_is_ignored_for_an_image(site):
    public = site(lb.respond(PNG, content_type="text/html"))
    assert public.fetch("http://images.example/a.png") == PNG


@pytest.mark.parametrize(
    "body",
    [b"<!doctype html><html>" + b"x" * 100_000, b"GIF89a" + b"\0" * 100, b"%PDF-1.7\n" + b"\0" * 100],
    ids=["html", "gif", "pdf"],
)
def test_bytes_that_are_not_an_image_are_unsupported_whatever_the_content_type(site, body):
    public = site(lb.respond(body, content_type="image/png"))
    error = public.refuse("http://images.example/a.png")
    assert error.code == "unsupported_image" and error.status == 415


def test_an_empty_body_is_an_invalid_image(site):
    public = site(lb.respond(b""))
    assert public.refuse("http://images.example/a.png").code == "invalid_image"


def test_a_body_shorter_than_its_length_is_unreachable(site):
    public = site(lb.declares_length(5000, PNG))
    assert public.refuse("http://images.example/a.png").code == "image_unreachable"


@pytest.mark.parametrize(
    "answer",
    [b"HELLO\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b""],
    ids=["garbage", "too-many-headers", "nothing"],
)
def test_an_answer_that_is_not_http_is_unreachable(site, answer):
    public = site(lb.raw(answer))
    assert public.refuse("http://images.example/a.png").code == "image_unreachable"


def test_a_configured_port_keeps_the_port_in_the_host_header(site):
    public = site(lb.respond(PNG))
    public.dialer.routes[(PUBLIC_A, 8080)] = public.server.port
    policy = FetchPolicy(allowed_ports={80, 443, 8080}, timeout=3)
    assert public.fetch("http://images.example:8080/a.png", policy) == PNG
    assert public.server.requests[0].headers["host"] == "images.example:8080"


def test_spaces_and_control_characters_in_the_path_cannot_split_the_request(site):
    public = site(lb.respond(PNG))
    assert public.fetch("http://images.example/a b.png?x=1 2\x0bX-Injected: 1\x00") == PNG
    request = public.server.requests[0]
    assert request.target == "/a%20b.png?x=1%202%0BX-Injected:%201%00"
    assert list(request.headers) == ["host", "user-agent", "accept", "accept-encoding", "connection"]


def test_proxy_variables_in_the_environment_are_ignored(serve, site, monkeypatch):
    proxy = serve(lb.respond(b"from the proxy"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    public = site(lb.respond(PNG))
    assert public.fetch("http://images.example/a.png") == PNG
    assert proxy.connections == 0


# The development switch ------------------------------------------------------------------


def test_allowing_private_addresses_reaches_loopback_with_the_real_connector(serve):
    server = serve(lb.respond(PNG))
    assert fetch_image(server.url("/a.png"), policy=local_policy(server.port)) == PNG
    assert server.connections == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "224.0.0.1", "255.255.255.255", "[::]", "[ff02::1]"])
def test_allowing_private_addresses_still_refuses_non_unicast(serve, host):
    server = serve(lb.respond(PNG))
    error = refused(f"http://{host}:{server.port}/", policy=local_policy(server.port))
    assert error.code == "image_url_forbidden"
    assert server.connections == 0


def test_the_policy_comes_from_settings():
    with override_settings(
        FETCH_ALLOW_PRIVATE_ADDRESSES=True, FETCH_ALLOWED_PORTS=[80, 8080], FETCH_TIMEOUT_SECONDS=4,
        FETCH_CONNECT_TIMEOUT_SECONDS=1, FETCH_MAX_BYTES=123, FETCH_MAX_REDIRECTS=1,
    ):
        policy = FetchPolicy.from_settings()
    assert policy == FetchPolicy(allow_private=True, allowed_ports={80, 8080}, timeout=4,
                                 connect_timeout=1, max_bytes=123, max_redirects=1)


def test_the_default_policy_is_public_only_on_default_ports():
    policy = FetchPolicy.from_settings()
    assert policy.allow_private is False
    assert policy.allowed_ports == {80, 443}
    assert policy.max_redirects == 3


def test_check_deploy_warns_when_private_addresses_are_allowed():
    def warnings_ids() -> list[str]:
        return [m.id for m in checks.run_checks(include_deployment_checks=True)]

    with override_settings(FETCH_ALLOW_PRIVATE_ADDRESSES=True):
        assert imaging_checks.PRIVATE_ADDRESSES_ALLOWED in warnings_ids()
        ordinary = [m.id for m in checks.run_checks(include_deployment_checks=False)]
        assert imaging_checks.PRIVATE_ADDRESSES_ALLOWED not in ordinary
    with override_settings(FETCH_ALLOW_PRIVATE_ADDRESSES=False):
        assert imaging_checks.PRIVATE_ADDRESSES_ALLOWED not in warnings_ids()


# The address rules themselves --------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", PUBLIC_A, "11.0.0.1", "100.63.255.255", "100.128.0.0", "126.255.255.255",
     "128.0.0.1", "172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0", "192.0.1.1",
     "198.17.255.255", "198.20.0.0", "223.255.255.255", "2606:4700:4700::1111",
     "2001:4860:4860::8888", PUBLIC_V6, "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
     "2001:0:808:808:8000:63bf:f7f7:f7f7"],
)
def test_public_unicast_addresses_next_to_the_special_ranges_are_allowed(address):
    assert is_public_unicast(address), classify(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("spelling", "address"),
    [("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"),
     ("127.1", "127.0.0.1"), ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"),
     ("0xC0.0250.1.1", "192.168.1.1"), ("0", "0.0.0.0"), ("1.2.3.4.", "1.2.3.4")],
)
def test_short_and_numeric_ipv4_spellings_mean_what_inet_aton_says(spelling, address):
    assert str(parse_ipv4_spelling(spelling)) == address


def test_names_are_not_mistaken_for_addresses():
    assert parse_ipv4_spelling("images.example") is None
    assert parse_ipv4_spelling("1e100.net") is None
    assert parse_ipv4_spelling("0x7f.example") is None


# The host allow list (FETCH_ALLOWED_HOSTS) ---------------------------------------------


@pytest.mark.parametrize("url", ["http://images.example.org/a.png", "https://8.8.8.8/a.png",
                                 "http://[2606:4700:4700::1111]/a.png", "http://cdn.example.com.evil.test/a.png",
                                 "http://example.com/a.png"])
def test_with_an_allow_list_every_other_host_is_refused_before_any_lookup(url):
    asked = []
    policy = FetchPolicy(allowed_hosts={"cdn.example.com", ".img.example.com"})
    error = refused(url, policy=policy, resolver=lambda host, port: asked.append(host) or [PUBLIC_A])
    assert (error.code, error.param) == ("image_url_forbidden", "image_url")
    assert asked == []


def test_with_an_allow_list_its_hosts_and_subdomains_are_still_checked_like_any_other():
    asked = []
    policy = FetchPolicy(allowed_hosts={"cdn.example.com", ".img.example.com"}, timeout=1)
    for url in ("http://CDN.example.com./a.png", "http://eu.img.example.com/a.png"):
        error = refused(url, policy=policy, resolver=lambda host, port: asked.append(host) or ["127.0.0.1"])
        assert error.code == "image_url_forbidden"  # allowed host, but it resolves to loopback
    assert asked == ["cdn.example.com", "eu.img.example.com"]


def test_the_allow_list_comes_from_the_setting(settings):
    settings.FETCH_ALLOWED_HOSTS = ["images.fuzz.invalid"]
    assert FetchPolicy.from_settings().allowed_hosts == frozenset({"images.fuzz.invalid"})
    settings.FETCH_ALLOWED_HOSTS = []
    assert FetchPolicy.from_settings().allows_host("anything.example")
