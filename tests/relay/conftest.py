"""Fixtures for relay tests: a relay on loopback built from a YAML snippet, and sinks."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engine.relay.runtime.relay import Relay, load_live
from tests.relay.peers import free_port

HEAD = """version: 1
system:
  fqdn: relay.test.example
  internal_domains: [example.com]
  listeners:
    - {name: mx, address: 127.0.0.1, port: PORT}
  data_dir: ./var
SYSTEM
ip_groups:
  internal_servers: [127.0.0.0/8]
GROUPS
delivery:
  retry_interval: 1s
  max_retry_interval: 2s
  max_queue_lifetime: 1h
  delay_warning_after: null
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write HEAD (with a free listener port) plus `extra` YAML; return the file.

    `system` adds lines to the system block, `groups` adds IP groups, `delivery` replaces
    the delivery block (all indented as in the file).
    """

    def write(extra: str = "", *, system: str = "", groups: str = "", delivery: str | None = None) -> Path:
        text = HEAD.replace("PORT", str(free_port()))
        text = text.replace("SYSTEM\n", system).replace("GROUPS\n", groups)
        if delivery is not None:
            text = text[: text.index("delivery:")] + textwrap.dedent(delivery)
        path = tmp_path / "relay.yaml"
        path.write_text(text + textwrap.dedent(extra), encoding="utf-8")
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
