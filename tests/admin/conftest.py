"""Fixtures: the real admin app over a FakeControl, served by real uvicorn on 127.0.0.1 in the test's loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from engine.admin.api import make_app, serve_admin, stop_admin
from engine.admin.audit import Audit
from engine.admin.client import RelayClient
from engine.admin.token import ensure_token
from tests.admin.fake_control import FakeControl


@dataclass
class Served:
    url: str
    token: str
    data_dir: Path
    audit: Audit
    fake: FakeControl
    server: uvicorn.Server
    task: asyncio.Task

    def client(self, token: str | None = None) -> RelayClient:
        return RelayClient(self.url, self.token if token is None else token, timeout=10)

    def raw(self) -> httpx.AsyncClient:
        """An HTTP client with no token, for testing what the API says to anyone."""
        return httpx.AsyncClient(base_url=self.url, trust_env=False, timeout=10)


async def wait_ready(url: str, timeout: float = 10.0) -> None:
    """Poll /healthz until it answers 200 (readiness, not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(trust_env=False, timeout=1) as http:
        while True:
            try:
                if (await http.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout}s")
            await asyncio.sleep(0.01)


async def start(fake: FakeControl, data_dir: Path, wrap: Callable | None = None, **app_options) -> Served:
    """Serve the admin app (optionally wrapped by an ASGI middleware `wrap`) and wait until ready."""
    token = ensure_token(data_dir)
    audit = Audit.in_dir(data_dir)
    app = make_app(fake, token, audit, **app_options)
    if wrap is not None:
        app = wrap(app)
    server, task = await serve_admin(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.config.port}"
    await wait_ready(url)
    return Served(url, token, data_dir, audit, fake, server, task)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def fake() -> FakeControl:
    return FakeControl()


@pytest.fixture
async def relay(fake: FakeControl, data_dir: Path) -> AsyncIterator[Served]:
    served = await start(fake, data_dir)
    try:
        yield served
    finally:
        await stop_admin(served.server, served.task)
