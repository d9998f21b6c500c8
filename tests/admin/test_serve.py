"""serve_admin: uvicorn inside the caller's loop, bound where told, leaving signal handlers alone."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from engine.admin.api import make_app, serve_admin, stop_admin
from engine.admin.audit import Audit
from tests.admin.conftest import wait_ready
from tests.admin.fake_control import FakeControl


async def test_serving_leaves_signal_handlers_alone(tmp_path: Path) -> None:
    marker_calls = []

    def marker(signum, frame):  # pragma: no cover - never delivered
        marker_calls.append(signum)

    before = {sig: signal.signal(sig, marker) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server, task = await serve_admin(make_app(FakeControl(), "t", Audit.in_dir(tmp_path)), "127.0.0.1", 0)
        assert signal.getsignal(signal.SIGINT) is marker and signal.getsignal(signal.SIGTERM) is marker
        await wait_ready(f"http://127.0.0.1:{server.config.port}")
        await stop_admin(server, task)
        assert signal.getsignal(signal.SIGINT) is marker and signal.getsignal(signal.SIGTERM) is marker
        assert task.done() and task.exception() is None
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


async def test_binds_only_the_given_address(tmp_path: Path) -> None:
    server, task = await serve_admin(make_app(FakeControl(), "t", Audit.in_dir(tmp_path)), "127.0.0.1", 0)
    try:
        [listening] = [sock for srv in server.servers for sock in srv.sockets]
        assert listening.getsockname()[0] == "127.0.0.1"
        assert listening.getsockname()[1] == server.config.port != 0
    finally:
        await stop_admin(server, task)


async def test_an_address_in_use_raises_at_once(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            await serve_admin(make_app(FakeControl(), "t", Audit.in_dir(tmp_path)), "127.0.0.1", port)
