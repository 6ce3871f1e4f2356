"""A stand-in for the X-Ray daemon: a real UDP socket on a free 127.0.0.1 port.

``XRayDaemon.address`` is what ``AWS_XRAY_DAEMON_ADDRESS`` holds in Lambda;
``collect()`` waits for the datagrams the functions sent and checks each is
the daemon's format (a JSON header line, then one segment document).
``raw`` keeps every datagram's bytes, to search for what must never be there.
The ``xray_daemon`` fixture gives each test its own.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

HEADER_LINE = b'{"format": "json", "version": 1}'
Document = dict[str, Any]


def trace_header(*, sampled: bool = True) -> tuple[str, str, str]:
    """A fresh ``_X_AMZN_TRACE_ID`` as Lambda sets it, with its root and parent ids."""
    root = f"1-{os.urandom(4).hex()}-{os.urandom(12).hex()}"
    parent = os.urandom(8).hex()
    return f"Root={root};Parent={parent};Sampled={int(sampled)}", root, parent


class XRayDaemon:
    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._socket.getsockname()[1]}"
        self.raw: list[bytes] = []

    def collect(self, *, wait: float = 1.0, quiet: float = 0.2) -> list[Document]:
        """The documents received until ``quiet`` seconds pass without one (``wait`` first)."""
        documents: list[Document] = []
        self._socket.settimeout(wait)
        while True:
            try:
                datagram = self._socket.recv(65535)
            except TimeoutError:
                return documents
            self.raw.append(datagram)
            header, newline, body = datagram.partition(b"\n")
            assert (header, newline) == (HEADER_LINE, b"\n"), datagram
            documents.append(json.loads(body))
            self._socket.settimeout(quiet)

    def close(self) -> None:
        self._socket.close()


def by_name(documents: list[Document]) -> dict[str, Document]:
    """Each document under its name; a name sent twice fails here."""
    named = {document["name"]: document for document in documents}
    assert len(named) == len(documents), [d["name"] for d in documents]
    return named


@pytest.fixture
def xray_daemon() -> Iterator[XRayDaemon]:
    daemon = XRayDaemon()
    yield daemon
    daemon.close()
