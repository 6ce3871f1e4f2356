"""What the benchmark scripts share: a private redis-server, an SMTP sink, percentiles, JSON.

Each script in ``bench/`` is run as ``python bench/<name>.py`` and puts the
repository root on ``sys.path`` before importing this module as
``bench._support``.

The SMTP sink is postfix's ``smtp-sink``, a small C server that accepts and
discards mail, so the sink is never what a benchmark measures. Where it is
missing, :func:`smtp_sink_binary` installs Debian's ``postfix`` package (as
root, with apt-get, unconfigured and stopped); where that cannot be done, the
benchmarks fall back to ``bench/_aiosmtpd_sink.py`` (Python, in its own
process) and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def redis_server(address: str | None = None) -> Iterator[redis.Redis]:
    """A decoding client on ``address``, or on a private redis-server on a free local port.

    The private server keeps nothing on disk (no RDB, no AOF) and is stopped on exit.
    """
    if address:
        host, _, given = address.rpartition(":")
        yield redis.Redis(host=host, port=int(given), decode_responses=True)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    data = tempfile.mkdtemp(prefix="mail-bench-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            data,
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait()
        shutil.rmtree(data, ignore_errors=True)


def address_of(client: redis.Redis) -> str:
    """``host:port`` of the server ``client`` talks to (for ``MAIL_REDIS_ADDR``)."""
    kwargs = client.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", help="use this Redis (host:port) instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def write_json(path: Path | None, figures: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- the SMTP sink

SMTP_SINK_PATHS = ("/usr/sbin/smtp-sink", "/usr/local/sbin/smtp-sink")
SINK_USER = "nobody"  # smtp-sink drops root privileges to this user (its -u option)
SINK_BACKLOG = "1000"
SinkKind = Literal["auto", "smtp-sink", "aiosmtpd"]
SINK_KINDS: tuple[SinkKind, ...] = ("auto", "smtp-sink", "aiosmtpd")
_COUNTER = re.compile(rb"mesg=(\d+)")
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*<([^>@\s]+)@", re.IGNORECASE | re.MULTILINE)


def smtp_sink_binary(install: bool = True) -> str | None:
    """Path of postfix's ``smtp-sink``; installs ``postfix`` first when it can and may."""
    found = _find_smtp_sink()
    if found or not install:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    install_postfix()
    return _find_smtp_sink()


def _find_smtp_sink() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    return next((path for path in SMTP_SINK_PATHS if os.access(path, os.X_OK)), None)


def install_postfix() -> bool:
    """``apt-get install postfix`` (for smtp-sink), unconfigured, with no daemon left running.

    Debconf is told "No configuration", so the package writes no main.cf and
    starts no mail server; if a postfix master runs afterwards anyway (and did
    not before), it is stopped, so nothing answers on port 25.
    """
    print("installing postfix (for smtp-sink, the benchmarks' SMTP sink) with apt-get", flush=True)
    already_running = _postfix_running()
    environment = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["debconf-set-selections"],
        input="postfix postfix/main_mailer_type select No configuration\n",
        text=True,
        env=environment,
        check=False,
    )
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"]

    def attempt() -> bool:
        done = subprocess.run(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
        )
        if done.returncode != 0:
            print(done.stderr.decode(errors="replace").strip(), file=sys.stderr, flush=True)
        return done.returncode == 0

    installed = attempt()
    if not installed:  # a fresh image has no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], env=environment, check=False)
        installed = attempt()
    if not already_running and _postfix_running():
        subprocess.run(["postfix", "stop"], capture_output=True, check=False)
    if _listening(25):
        print("note: something listens on port 25; the benchmarks do not use it", flush=True)
    return installed


def _postfix_running() -> bool:
    if shutil.which("postfix") is None:
        return False
    status = subprocess.run(["postfix", "status"], capture_output=True, check=False)
    return status.returncode == 0


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class SmtpSink:
    """A running SMTP sink: its address, a count of accepted messages, their arrival times.

    The count comes from the sink's running counters on its stdout (``smtp-sink
    -c``, which prints ``mesg=N`` as each message's final "." is answered),
    read by a thread that stamps each change with ``time.perf_counter()``.
    With a dump directory, each message is also written to its own file there
    (``smtp-sink -d``); the file's last write is the message's end of data, so
    its mtime is the message's arrival (on the kernel's coarse clock, a few
    milliseconds at most behind ``time.time()``).
    """

    def __init__(
        self, kind: str, process: subprocess.Popen[bytes], port: int, dump_dir: Path | None
    ) -> None:
        self.kind = kind
        self.process = process
        self.host = "127.0.0.1"
        self.port = port
        self.dump_dir = dump_dir
        self._count = 0
        self._changes: list[tuple[int, float]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="smtp-sink-counter", daemon=True)
        self._reader.start()

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def count(self) -> int:
        """Messages accepted so far."""
        with self._changed:
            return self._count

    def _read(self) -> None:
        stream: IO[bytes] | None = self.process.stdout
        assert stream is not None
        pending = b""
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            stamp = time.perf_counter()
            pending += chunk
            *complete, pending = re.split(rb"[\r\n]", pending)
            counts = [int(found.group(1)) for line in complete if (found := _COUNTER.search(line))]
            if counts:
                with self._changed:
                    self._count = max(self._count, *counts)
                    self._changes.append((self._count, stamp))
                    self._changed.notify_all()

    def wait_for(self, total: int, timeout: float) -> float | None:
        """``time.perf_counter()`` when the count first reached ``total``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._count < total:
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    return None
                self._changed.wait(min(left, 1.0))
            return next(stamp for count, stamp in self._changes if count >= total)

    def arrivals(self) -> dict[str, float]:
        """Message-ID local part (the delivery id) → arrival (epoch seconds), from the dump."""
        if self.dump_dir is None:
            raise RuntimeError("this sink keeps no dump; start it with dump=True")
        found: dict[str, float] = {}
        for path in self.dump_dir.iterdir():
            if not path.is_file():
                continue
            header = path.read_bytes()[:16384]
            match = _MESSAGE_ID.search(header)
            if match:
                arrived = path.stat().st_mtime_ns / 1e9
                key = match.group(1).decode("ascii", errors="replace")
                found[key] = min(arrived, found.get(key, arrived))
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)


def add_sink_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sink",
        choices=SINK_KINDS,
        default="auto",
        help="smtp-sink (postfix's C sink), aiosmtpd (the Python fallback), or auto: "
        "smtp-sink, installed with apt-get when missing and run as root, else aiosmtpd",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="never install postfix for smtp-sink"
    )


@contextmanager
def smtp_sink(
    kind: SinkKind = "auto", *, dump: bool = False, install: bool = True
) -> Iterator[SmtpSink]:
    """An SMTP sink on a free port of 127.0.0.1, stopped on exit (see :class:`SmtpSink`)."""
    binary = smtp_sink_binary(install) if kind in ("auto", "smtp-sink") else None
    if kind == "smtp-sink" and binary is None:
        sys.exit("smtp-sink is not installed (Debian: apt-get install postfix)")
    if binary is None and kind == "auto":
        print(
            "warning: postfix's smtp-sink is not available (install Debian's postfix package, "
            "or run as root so the benchmark installs it); using the slower Python sink "
            "bench/_aiosmtpd_sink.py",
            flush=True,
        )
    dump_dir = Path(tempfile.mkdtemp(prefix="mail-bench-sink-")) if dump else None
    port = free_port()
    if binary is not None:
        command = [binary, "-c"]
        if os.geteuid() == 0:
            command += ["-u", SINK_USER]  # smtp-sink refuses to run as root without it
        if dump_dir is not None:
            dump_dir.chmod(0o777)  # written by SINK_USER
            command += ["-d", f"{dump_dir}/%H%M%S."]
        command += [f"127.0.0.1:{port}", SINK_BACKLOG]
        name = "smtp-sink"
    else:
        command = [sys.executable, str(ROOT / "bench" / "_aiosmtpd_sink.py"), str(port)]
        if dump_dir is not None:
            command += ["--dump-dir", str(dump_dir)]
        name = "aiosmtpd"
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    sink = SmtpSink(name, process, port, dump_dir)
    try:
        _wait_until_listening(sink)
        yield sink
    finally:
        sink.stop()
        if dump_dir is not None:
            shutil.rmtree(dump_dir, ignore_errors=True)


def _wait_until_listening(sink: SmtpSink, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink.process.poll() is not None:
            sys.exit(f"the SMTP sink ({sink.kind}) exited with code {sink.process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex((sink.host, sink.port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"the SMTP sink ({sink.kind}) did not listen on {sink.addr} within {timeout:.0f}s")
