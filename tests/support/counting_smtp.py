"""An SMTP server that counts what it accepted by Message-ID (aiosmtpd, a real socket).

The reliability tier asks one question of the far end: how many times did the
server *accept* each message? A delivery's Message-ID is stable across its
attempts (``<delivery_id@sender domain>``), so counting 250 answers per
Message-ID tells a duplicate from a retry of a message that was never taken.

- ``accepted`` counts the 250 answers to DATA per Message-ID; ``data_seen``
  counts every message whose data arrived, whatever the answer;
- by the recipient's local part: ``reject…@`` is refused ``550 5.1.1`` at
  RCPT, ``tempfail…@`` ``451 4.3.0`` at RCPT; anything else is accepted;
- ``fail_next(n)`` answers the next ``n`` messages ``451 4.3.0`` at DATA (a
  burst of temporary failures);
- ``stall_next_data()`` holds the next message after its data arrived and
  before any answer, until released (``Stalled.arrived`` says it is there);
  a client that goes away meanwhile gets no answer and nothing is counted;
- ``before_next_accept(action)`` runs ``action`` on the server's thread just
  before the next 250 goes out.

``DripFeedSmtpServer`` is the slow end instead: a server of its own on a real
socket that paces its answers so each of the client's waits ends just inside
its timeout, for the first connections it gets; see its docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from functools import partial
from io import BufferedIOBase
from types import TracebackType
from typing import Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.network import free_port

STALL_LIMIT_S = 120.0


@dataclass
class Stalled:
    """One message held after DATA; ``release()`` lets it be answered 250."""

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    abandoned: threading.Event = field(default_factory=threading.Event)
    message_id: str = ""

    def release(self) -> None:
        self.released.set()


def message_id_of(data: bytes) -> str:
    headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
    return str(headers.get("Message-ID", "")).strip()


class _Handler:
    def __init__(self, owner: CountingSmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        local = address.partition("@")[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 no such mailbox"
        if local.startswith("tempfail"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        message_id = message_id_of(data)
        failing, stalled, before_accept = self.owner._take_behaviour(message_id)
        if stalled is not None:
            stalled.message_id = message_id
            stalled.arrived.set()
            try:
                # Polled: the release comes from another thread. A client that
                # hangs up cancels this coroutine, and then nothing is answered.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + STALL_LIMIT_S
                while not stalled.released.is_set() and loop.time() < deadline:
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                stalled.abandoned.set()
                raise
        if failing:
            return "451 4.3.0 temporary failure (burst)"
        if before_accept is not None:
            before_accept()
        self.owner._accepted(message_id)
        return "250 2.0.0 Ok: queued"


class CountingSmtpServer:
    """Plain SMTP on 127.0.0.1 and a free port; see the module docstring."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted: Counter[str] = Counter()
        self.data_seen: Counter[str] = Counter()
        self.bursts = 0
        self._lock = threading.Lock()
        self._fail_next = 0
        self._stalls: deque[Stalled] = deque()
        self._before_accept: deque[Callable[[], None]] = deque()
        self._controller: Controller | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        self.port = free_port()
        controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, server_hostname="smtp.test"
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- controls (any thread) -------------------------------------------------------

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._fail_next += count
            self.bursts += 1

    def stall_next_data(self) -> Stalled:
        stalled = Stalled()
        with self._lock:
            self._stalls.append(stalled)
        return stalled

    def before_next_accept(self, action: Callable[[], None]) -> None:
        with self._lock:
            self._before_accept.append(action)

    def count(self, message_id: str) -> int:
        with self._lock:
            return self.accepted[message_id]

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.accepted)

    # -- the handler's side ----------------------------------------------------------

    def _take_behaviour(
        self, message_id: str
    ) -> tuple[bool, Stalled | None, Callable[[], None] | None]:
        with self._lock:
            self.data_seen[message_id] += 1
            stalled = self._stalls.popleft() if self._stalls else None
            failing = self._fail_next > 0
            if failing:
                self._fail_next -= 1
            before = None if failing or not self._before_accept else self._before_accept.popleft()
            return failing, stalled, before

    def _accepted(self, message_id: str) -> None:
        with self._lock:
            self.accepted[message_id] += 1


Pace = Literal["answer", "byte"]


class _DripHandler(socketserver.StreamRequestHandler):
    server: _DripTcpServer

    def handle(self) -> None:
        owner = self.server.owner
        paced = owner._connected()
        # A client that goes away leaves whatever it had not finished undelivered.
        with contextlib.suppress(OSError):
            self._converse(owner, paced)

    def _converse(self, owner: DripFeedSmtpServer, paced: bool) -> None:
        answer = partial(owner._answer, self.wfile, paced)
        answer("220 drip.test ESMTP")
        while line := self.rfile.readline():
            verb = line.strip().split(b" ")[0].upper()
            if verb in (b"EHLO", b"HELO"):
                answer("250-drip.test\r\n250 8BITMIME")
            elif verb == b"DATA":
                owner._data_started()
                answer("354 end data with <CR><LF>.<CR><LF>")
                lines: list[bytes] = []
                while (data_line := self.rfile.readline()) != b".\r\n":
                    if not data_line:
                        return  # hung up before the final dot: no message
                    lines.append(data_line[1:] if data_line.startswith(b"..") else data_line)
                # The final dot arrived: the server has the message and delivers it,
                # whether or not the client is still there for the answer.
                owner._completed(message_id_of(b"".join(lines)))
                answer("250 2.0.0 Ok: queued")
            elif verb == b"QUIT":
                answer("221 2.0.0 bye")
                return
            else:  # MAIL, RCPT, RSET, NOOP
                answer("250 2.0.0 Ok")


class _DripTcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: DripFeedSmtpServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _DripHandler)


class DripFeedSmtpServer:
    """A plain SMTP server that answers slowly, each wait just inside the client's timeout.

    With ``pace="answer"`` every answer goes out ``pause_s`` after the
    command (the greeting ``pause_s`` after the connection); with
    ``pace="byte"`` every answer is written one byte at a time, ``pause_s``
    before each byte, so no single read of the client's ever waits long while
    one answer takes many times its timeout. The first ``slow_connections``
    connections are paced; the later ones are answered at once, as by a
    server that has recovered, until ``slow_down()`` paces every answer from
    then on, on every connection (a kept one too).

    ``completed`` counts messages by Message-ID as their final dot arrives:
    the server has the message then and delivers it, whatever happens to its
    answer. ``data_started`` counts DATA commands, ``connections`` connections.
    """

    def __init__(self, pause_s: float, *, pace: Pace = "answer", slow_connections: int = 1) -> None:
        self.pause_s = pause_s
        self.pace = pace
        self.slow_connections = slow_connections
        self.completed: Counter[str] = Counter()
        self.data_started = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._slow_for_all = threading.Event()
        self._server = _DripTcpServer(self)
        self.host, self.port = "127.0.0.1", int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="drip-smtp", daemon=True
        )

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def slow_down(self) -> None:
        self._slow_for_all.set()

    def count(self, message_id: str) -> int:
        with self._lock:
            return self.completed[message_id]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()  # paced answers stop at their next pause
        self._server.shutdown()
        self._server.server_close()

    # -- the handler's side ----------------------------------------------------------

    def _connected(self) -> bool:
        with self._lock:
            self.connections += 1
            return self.connections <= self.slow_connections

    def _data_started(self) -> None:
        with self._lock:
            self.data_started += 1

    def _completed(self, message_id: str) -> None:
        with self._lock:
            self.completed[message_id] += 1

    def _answer(self, out: BufferedIOBase, paced: bool, text: str) -> None:
        paced = paced or self._slow_for_all.is_set()
        reply = f"{text}\r\n".encode()
        pieces = [reply] if not paced or self.pace == "answer" else [bytes([b]) for b in reply]
        for piece in pieces:
            if paced and self._stopping.wait(self.pause_s):
                raise ConnectionAbortedError("server stopping")
            out.write(piece)
            out.flush()
