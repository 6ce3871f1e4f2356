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
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from types import TracebackType
from typing import Self

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
