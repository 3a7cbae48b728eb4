"""Fail closed: the public development SECRET_KEY never serves anyone off this machine.

Without ``SECRET_KEY`` and with ``DEBUG`` off, settings refuse to load (every process
stops at start). With ``DEBUG`` on (the default, so that ``make run`` and ``make test``
need no setup) the key in ``settings.py`` is used; it is public, so anything it signs
(sessions, signed file URLs, verification links) could be forged by anyone. It is
therefore refused in two places:

* ``check_bind``: gunicorn's ``on_starting`` hook (``gunicorn.conf.py`` at the
  repository root, which gunicorn loads by default from the directory it starts in)
  refuses to start when any bind address is not loopback, before it opens a socket.
  A Unix socket counts as local; a file descriptor handed over by systemd does not
  (we cannot tell where it listens).
* ``DevelopmentKeyGuard``: a middleware that answers 503 to any request from a
  non-loopback client, or arriving on a non-loopback socket, while the key is in use.
  It covers servers started some other way (``runserver 0.0.0.0:8000``, gunicorn with
  another config file).

Set ``SECRET_KEY`` to serve anything beyond loopback.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from platform_site.client_ip import is_loopback
from platform_site.middleware import HybridMiddleware

log = logging.getLogger(__name__)

REFUSAL = (
    "refusing to serve with the development SECRET_KEY on {where}: it is public, so "
    "sessions and signed links could be forged. Bind to 127.0.0.1 (or ::1), or set SECRET_KEY."
)


def uses_development_key() -> bool:
    return settings.SECRET_KEY == getattr(settings, "DEVELOPMENT_SECRET_KEY", None)


def _is_loopback_bind(address: Any) -> bool:
    """A gunicorn bind address: (host, port) for TCP, a path string for a Unix socket."""
    if isinstance(address, (tuple, list)) and address:
        host = str(address[0]).strip("[]")
        if host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    if isinstance(address, str):
        # Unix sockets (gunicorn passes their path); fd:// binds are not strings here.
        return not address.startswith("fd://")
    return False


def check_bind(addresses: Iterable[Any]) -> None:
    """Raises RuntimeError when the development key would be served beyond loopback."""
    if not uses_development_key():
        return
    outside = [a for a in addresses if not _is_loopback_bind(a)]
    if outside:
        where = ", ".join(_show(a) for a in outside)
        raise RuntimeError(REFUSAL.format(where=where))


def _show(address: Any) -> str:
    if isinstance(address, (tuple, list)):
        return f"{address[0]}:{address[1]}" if len(address) > 1 else str(address[0])
    return str(address)


def gunicorn_on_starting(server: Any) -> None:
    """gunicorn's on_starting hook: ``server.cfg.address`` is the list it will bind."""
    check_bind(server.cfg.address)


class DevelopmentKeyGuard(HybridMiddleware):
    """503 for requests from (or to) beyond loopback while the development key is in use."""

    def before(self, request: HttpRequest) -> HttpResponse | None:
        if uses_development_key() and not _local_request(request):
            log.error("request from %s refused: development SECRET_KEY", request.META.get("REMOTE_ADDR"))
            return HttpResponse(REFUSAL.format(where="a request from beyond loopback") + "\n",
                                status=503, content_type="text/plain; charset=utf-8")
        return None


def _local_request(request: HttpRequest) -> bool:
    if not is_loopback(request.META.get("REMOTE_ADDR", "")):
        return False
    scope = getattr(request, "scope", None)
    if scope is not None:
        # ASGI: the server puts the socket's own (local) address in the scope.
        server = scope.get("server")
        return not (server and server[0] and not str(server[0]).startswith("/")
                    and not is_loopback(str(server[0])))
    sock = request.META.get("gunicorn.socket")
    if sock is not None:
        try:
            local = sock.getsockname()
        except OSError:
            return False
        if isinstance(local, tuple) and not is_loopback(str(local[0])):
            return False
    return True
