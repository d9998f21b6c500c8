"""Fixtures for relay tests: a relay on loopback built from a YAML snippet, and sinks."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trustme

from engine.relay.server import Relay, load_live
from tests.relay.peers import free_port

HEAD = """version: 1
system:
  fqdn: relay.test.example
  internal_domains: [example.com]
  listeners:
    - {{name: mx, address: 127.0.0.1, port: {port}}}
  data_dir: ./var
ip_groups:
  internal_servers: [127.0.0.0/8]
delivery:
  retry_interval: 1s
  max_retry_interval: 2s
  max_queue_lifetime: 1h
  delay_warning_after: null
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write HEAD (with a free listener port) plus `extra` YAML; return the file."""

    def write(extra: str = "", head: str = HEAD) -> Path:
        path = tmp_path / "relay.yaml"
        path.write_text(head.format(port=free_port()) + textwrap.dedent(extra), encoding="utf-8")
        return path

    return write


@pytest.fixture
async def start_relay() -> AsyncIterator[Callable]:
    """Start a relay from a config file in this test's event loop; stopped afterwards."""
    relays: list[Relay] = []

    async def start(path: Path, **kwargs) -> Relay:
        relay = Relay(load_live(path), **kwargs)
        await relay.start()
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        await relay.stop()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()
