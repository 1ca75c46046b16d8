"""A real HTTP server that records what it is sent: healthchecks pings and JSON webhooks.

Plain Python (no pytest). ``start_http_receiver()`` serves ``http.server.ThreadingHTTPServer`` on
127.0.0.1 and a free port in a background thread. Every request (any method) is recorded with
its method, path, query, headers, body bytes and arrival time before it is answered, so a request
the receiver then fails or drops is recorded too.

It answers ``200 OK`` (body ``OK``, like healthchecks.io) unless told otherwise with
``respond(path, status=, delay=, close=, times=)``: a rule for a path also covers the paths below
it (``/ping/<uuid>`` covers ``/ping/<uuid>/start``), the longest matching rule wins, and a rule
with ``times=N`` applies to the next N matching requests only (then the receiver answers as
before: "fails twice, then recovers"). ``close=True`` reads the request and closes the connection
without an answer; ``delay`` waits before answering (longer than a client's timeout: a hung
receiver).

What it stands in for:

- healthchecks-style pings: ``ping_url()`` gives ``http://127.0.0.1:PORT/ping/<uuid>``; a client
  POSTs to it, to ``.../start`` and to ``.../fail``; ``ping_events(url)`` lists what arrived
  (``["start", "success"]``);
- Apprise ``json://`` webhooks: ``apprise_json_url(path)`` gives ``json://127.0.0.1:PORT/path``,
  to which Apprise POSTs ``{"version", "title", "message", "attachments", "type"}`` as JSON.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    time: float  # time.time() when the request line arrived

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    delay: float = 0.0
    close: bool = False  # drop the connection instead of answering
    body: bytes = b"OK"
    times: int | None = None  # None: every matching request; N: the next N, then the rule ends


@dataclass
class HttpReceiver:
    host: str
    port: int
    _server: ThreadingHTTPServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _requests: list[RecordedRequest] = field(default_factory=list, repr=False)
    _rules: dict[str, Response] = field(default_factory=dict, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _arrived: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + "/" + path.lstrip("/")

    def ping_url(self, check: str | None = None) -> str:
        """A healthchecks-style ping URL ``http://HOST:PORT/ping/<uuid>`` (a new uuid by default)."""
        return self.url(f"/ping/{check or uuid.uuid4()}")

    def apprise_json_url(self, path: str = "/notify") -> str:
        """The Apprise URL that POSTs a JSON notification to ``path`` here."""
        return f"json://{self.host}:{self.port}/{path.lstrip('/')}"

    # --- what to answer --------------------------------------------------------------------------

    def respond(self, path: str, *, status: int = 200, delay: float = 0.0, close: bool = False,
                body: bytes = b"OK", times: int | None = None) -> None:
        """Answer requests to ``path`` and below it like this (see the module docstring)."""
        with self._lock:
            self._rules["/" + path.strip("/")] = Response(status, delay, close, body, times)

    def _take_response(self, path: str) -> Response:
        with self._lock:
            matching = [rule for rule in self._rules
                        if rule == "/" or path == rule or path.startswith(rule + "/")]
            if not matching:
                return Response()
            key = max(matching, key=len)
            response = self._rules[key]
            if response.times is not None:
                response.times -= 1
                if response.times <= 0:
                    del self._rules[key]
            return response

    # --- what arrived ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The requests to exactly ``path`` (query string ignored)."""
        return [request for request in self.requests if request.path == path]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """All requests, once at least ``count`` have arrived; TimeoutError otherwise."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"{len(self._requests)} of {count} requests arrived"
                                   f" within {timeout}s")
            return list(self._requests)

    def ping_events(self, ping_url: str) -> list[str]:
        """What a healthchecks check at ``ping_url`` was told, in order.

        ``"start"``, ``"success"`` (the URL itself), ``"fail"``, ``"log"`` or an exit status
        (``"/<0-255>"``); requests to other paths are left out.
        """
        base = urlsplit(ping_url).path.rstrip("/")
        events = []
        for request in self.requests:
            if request.path.rstrip("/") == base:
                events.append("success")
            elif request.path.startswith(base + "/"):
                events.append(request.path[len(base) + 1:])
        return events

    def clear(self) -> None:
        """Forget the recorded requests and the rules."""
        with self._lock:
            self._requests.clear()
            self._rules.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _handler_class(receiver_of: Callable[[], HttpReceiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do (Content-Length always)
        server_version = "reportsync-test-receiver"

        def _handle(self) -> None:
            arrived = time.time()
            receiver = receiver_of()
            body = _read_body(self)
            split = urlsplit(self.path)
            receiver._record(RecordedRequest(
                method=self.command, path=split.path, query=parse_qs(split.query),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body, time=arrived))
            response = receiver._take_response(split.path)
            if response.delay and receiver._stopping.wait(response.delay):
                return  # the receiver is stopping: no answer
            if response.close:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(response.status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the recorded requests say it all; no noise on stderr

    return Handler


def start_http_receiver() -> HttpReceiver:
    holder: list[HttpReceiver] = []
    # Port 0: the kernel picks a free port at bind time (free_port()'s choice, without its race).
    server = ThreadingHTTPServer((HOST, 0), _handler_class(lambda: holder[0]))
    server.daemon_threads = True  # a delayed handler never holds up stop()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="http-receiver", daemon=True)
    receiver = HttpReceiver(host=HOST, port=int(server.server_address[1]), _server=server,
                            _thread=thread)
    holder.append(receiver)
    thread.start()
    return receiver


if __name__ == "__main__":  # pragma: no cover - manual check: python -m tests.servers.http_receiver
    running = start_http_receiver()
    print(f"recording on {running.base_url}; ping URL {running.ping_url()}")
    try:
        while True:
            time.sleep(1)
            for seen in running.requests:
                print(seen.method, seen.path, seen.body[:200])
            running.clear()
    except KeyboardInterrupt:
        running.stop()
