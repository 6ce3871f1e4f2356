"""The fallback SMTP sink: aiosmtpd in its own process, behaving like ``smtp-sink -c [-d]``.

    python bench/_aiosmtpd_sink.py PORT [--dump-dir DIR]

The benchmarks use postfix's C ``smtp-sink``; this one serves only where that
cannot be had (``bench/_support.py`` says so when it falls back). It listens
on 127.0.0.1:PORT, accepts every message, and like ``smtp-sink -c`` prints a
running counter (``sess=0 quit=0 mesg=N`` and a carriage return) as each
message is accepted. With ``--dump-dir``, like ``smtp-sink -d``, each message
is written to its own file there when its data has arrived, so the file's
mtime is its arrival. It runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class SinkHandler:
    def __init__(self, dump_dir: Path | None) -> None:
        self.dump_dir = dump_dir
        self.messages = 0

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.messages += 1
        if self.dump_dir is not None:
            (self.dump_dir / f"{self.messages:08d}.eml").write_bytes(
                envelope.original_content or b""
            )
        sys.stdout.write(f"sess=0 quit=0 mesg={self.messages}\r")
        sys.stdout.flush()
        return "250 2.0.0 Ok: queued"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--dump-dir", type=Path)
    arguments = parser.parse_args()

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    controller = Controller(
        SinkHandler(arguments.dump_dir),
        hostname="127.0.0.1",
        port=arguments.port,
        server_hostname="aiosmtpd-sink.localhost",  # no getfqdn(): it can stall on DNS
        data_size_limit=64 * 1024 * 1024,
        ready_timeout=10.0,
    )
    controller.start()
    try:
        stop.wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
