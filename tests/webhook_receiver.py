"""A webhook receiver on 127.0.0.1 for tests: records every POST, answers from a script.

``answers`` is consumed one per request: an HTTP status, or ``("sleep", seconds,
status)`` to stall before answering (a receiver slower than our timeout). Once the
script is used up every request gets ``default``. The server counts accepted TCP
connections, so a test can assert that a refused URL was never contacted.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from imaging.webhooks import signing

Answer = int | tuple[str, float, int]


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers.get("pixelapi-event-id", "")

    def verifies(self, secret: str) -> bool:
        return signing.verify(secret, self.body, self.headers.get("pixelapi-signature", ""))


@dataclass
class Receiver:
    answers: list[Answer] = field(default_factory=list)
    default: int = 200
    received: list[Received] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._closing = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    answer = receiver.answers.pop(0) if receiver.answers else receiver.default
                if isinstance(answer, tuple):
                    _, seconds, answer = answer
                    if receiver._closing.wait(seconds):
                        return
                self.send_response(answer)
                if 300 <= answer < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def process_request(self, request: Any, client_address: Any) -> None:
                with receiver._lock:
                    receiver.connections += 1
                super().process_request(request, client_address)

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client gave up first (a timeout test): that is the point

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def unique_event_ids(self) -> set[str]:
        """What a receiver that dedupes by event id would process."""
        return {r.event_id for r in self.received}

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
