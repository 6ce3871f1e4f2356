"""Local ports for the servers the tests start, and peers that misbehave at the TCP level."""

from __future__ import annotations

import socket
import threading
from typing import Self


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SilentListener:
    """A TCP server on 127.0.0.1 that accepts every connection and never says a byte.

    The peer that hangs a client which trusts socket defaults: the connection
    succeeds, the request goes out, no answer ever comes. Connections are held
    open (nothing read, nothing written) until ``stop()``.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-listener", daemon=True)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def _accept(self) -> None:
        self._server.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(connection)
            self.connections += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        for connection in self._held:
            connection.close()
        self._server.close()


def refused_url() -> str:
    """An http:// URL on a local port where nothing listens: every connect is refused."""
    return f"http://127.0.0.1:{free_port()}"
