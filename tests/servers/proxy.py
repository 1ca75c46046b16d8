"""A TCP proxy on 127.0.0.1 that forwards to a real server and can misbehave on purpose.

Used for what a real server will not do on demand: drop a connection part-way through a
download (``cut_after``: close the n-th connection after that many server→client bytes) and
throttle (``rate``: bytes per second server→client) so a test can kill a run mid-download.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

CHUNK = 16384


@dataclass
class FaultPlan:
    cut_after: int | None = None  # server→client bytes after which to drop the connection
    cut_connections: set[int] = field(default_factory=lambda: {1})  # which connections (1-based)
    rate: float | None = None  # server→client bytes per second


class FaultProxy:
    def __init__(self, target_port: int, plan: FaultPlan, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.plan = plan
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.connections += 1
                number = self.connections
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets.extend((client, upstream))
            cut = self.plan.cut_after if number in self.plan.cut_connections else None
            threading.Thread(target=self._pump, args=(client, upstream, None, None),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, cut, self.plan.rate),
                             daemon=True).start()

    def _pump(self, source: socket.socket, destination: socket.socket, cut_after: int | None,
              rate: float | None) -> None:
        sent = 0
        started = time.monotonic()
        try:
            source.settimeout(None)
            while not self._stopping.is_set():
                data = source.recv(CHUNK)
                if not data:
                    break
                if cut_after is not None and sent + len(data) >= cut_after:
                    destination.sendall(data[: max(cut_after - sent, 0)])
                    break
                destination.sendall(data)
                sent += len(data)
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        finally:
            _close(source)
            _close(destination)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
