"""What the benchmark scripts share: a private redis-server, percentiles, JSON figures.

Each script in ``bench/`` is run as ``python bench/<name>.py`` and puts the
repository root on ``sys.path`` before importing this module as
``bench._support``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
