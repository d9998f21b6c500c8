"""Hot reload and apply: the new config serves after one swap; nothing is refused or lost."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiosmtplib
import pytest

from engine.admin.client import DowngradeRefused, Invalid, RelayClient, StaleBase
from engine.admin.contract import ApplyRequest
from engine.relay.runtime.service import Service
from tests.relay.peers import Sink, eventually, free_port
from tests.relay.test_edge import route_to
from tests.relay.test_relay_flow import message


@pytest.fixture
async def service_for():
    services: list[Service] = []

    async def start(path: Path, watch: bool = False) -> Service:
        service = Service(path, watch=watch)
        await service.start()
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop()


def admin_line() -> str:
    return f"  admin: {{address: 127.0.0.1, port: {free_port()}}}\n  metrics: {{address: 127.0.0.1, port: {free_port()}}}\n"


def client(service: Service) -> RelayClient:
    token = (service.relay.live.data_dir / "admin.token").read_text().strip()
    return RelayClient(f"http://127.0.0.1:{service.admin_port}", token, timeout=10)


async def send(service: Service, port_name: str = "mx") -> str:
    _, reply = await aiosmtplib.send(
        message(), hostname="127.0.0.1", port=service.relay.ports()[port_name], timeout=10, start_tls=False
    )
    return reply.split()[-1]


def rewrite(path: Path, old: str, new: str) -> None:
    """Save as editors do: write a temporary file, then rename it over the config."""
    text = path.read_text()
    assert old in text
    tmp = path.with_name(".relay.yaml.swp")
    tmp.write_text(text.replace(old, new))
    os.replace(tmp, path)


async def test_watch_reloads_on_save_and_keeps_the_last_good_config(write_config, service_for) -> None:
    with Sink() as first, Sink() as second:
        config = write_config(route_to(first.port), system=admin_line())
        service = await service_for(config, watch=True)
        await send(service)
        await first.received(1)
        rewrite(config, f"port: {first.port}}}", f"port: {second.port}}}")

        async def reloaded():
            return service.relay.live.version == 2

        await eventually(reloaded, what="the edit to be applied")
        await send(service)
        await second.received(1)
        rewrite(config, "tls: none", "tls: sometimes")  # invalid: refused, version 2 keeps serving

        async def refused():
            s = service.control.status()
            return s.last_reload and not s.last_reload.ok

        await eventually(refused, what="the invalid edit to be refused")
        status = service.control.status()
        assert (
            status.version == 2
            and "relay.yaml:" in status.last_reload.error
            and "sometimes" in status.last_reload.error
        )
        await send(service)
        await second.received(2)
        records = await asyncio.to_thread(lambda: client(service).audit(10))
        assert [r.result for r in records][-2:] == ["applied", "refused"]


async def test_apply_through_the_admin_api(write_config, service_for) -> None:
    with Sink() as first, Sink() as second:
        config = write_config(route_to(first.port), system=admin_line())
        service = await service_for(config)
        api = client(service)
        running = await asyncio.to_thread(api.fetch_running)
        assert running.version == 1
        desired = running.config | {
            "routes": [
                {
                    "name": "sink",
                    "recipients": "any",
                    "next_hop": {"host": "127.0.0.1", "port": second.port},
                    "tls": "none",
                }
            ]
        }
        result = await asyncio.to_thread(api.apply, ApplyRequest(desired, base_version=1, commit="abc123"))
        assert result.ok and result.changed and result.version == 2
        await send(service)
        await second.received(1)
        again = await asyncio.to_thread(api.apply, ApplyRequest(desired, base_version=2))
        assert again.ok and not again.changed and again.version == 2  # idempotent
        with pytest.raises(StaleBase):
            await asyncio.to_thread(api.apply, ApplyRequest(desired, base_version=1))
        broken = desired | {"delivery": {"retry_interval": "soon"}}
        with pytest.raises(Invalid) as invalid:
            await asyncio.to_thread(api.apply, ApplyRequest(broken, base_version=2))
        assert invalid.value.diagnostics[0]["path"] == "delivery.retry_interval"
        weaker = desired | {
            "routes": [{**desired["routes"][0], "tls": "none"}],
            "tls": {**desired.get("tls", {}), "outbound_default": "none"},
        }
        with pytest.raises(DowngradeRefused):
            await asyncio.to_thread(api.apply, ApplyRequest(weaker, base_version=2))
        done = await asyncio.to_thread(
            api.apply,
            ApplyRequest(weaker, base_version=2, allow_downgrade=True, reason="partner TLS broken, ticket 42"),
        )
        assert done.ok and done.version == 3
        audit = await asyncio.to_thread(api.audit, 10)
        assert audit[-1].reason == "partner TLS broken, ticket 42" and audit[-1].allow_downgrade
        assert (audit[0].who, audit[0].source, audit[0].result) == ("start", "start", "applied")  # the first start
        assert all(r.who.startswith("token:") and r.source == "api" for r in audit[1:])


async def test_listener_move_keeps_accepting(write_config, service_for) -> None:
    with Sink() as sink:
        config = write_config(route_to(sink.port), system=admin_line())
        service = await service_for(config)
        api = client(service)
        old_port = service.relay.ports()["mx"]
        reader, writer = await asyncio.open_connection("127.0.0.1", old_port)  # a session open across the swap
        await reader.readline()
        running = await asyncio.to_thread(api.fetch_running)
        new_port = free_port()
        listeners = [{**running.config["system"]["listeners"][0], "port": new_port}]
        desired = running.config | {"system": running.config["system"] | {"listeners": listeners}}
        result = await asyncio.to_thread(api.apply, ApplyRequest(desired, base_version=running.version))
        assert result.ok and service.relay.ports()["mx"] == new_port
        await send(service)  # the new port accepts
        writer.write(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        await writer.drain()
        for _ in range(20):
            line = await reader.readline()
            if line.startswith(b"354"):
                break
        writer.write(b"Subject: across the swap\r\n\r\nhi\r\n.\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"250")  # the old session finished normally
        writer.close()
        await sink.received(2)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", old_port)


async def test_failed_build_leaves_the_old_config_serving(write_config, service_for) -> None:
    with Sink() as sink:
        config = write_config(route_to(sink.port), system=admin_line())
        service = await service_for(config)
        api = client(service)
        running = await asyncio.to_thread(api.fetch_running)
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # a port someone else holds
        taken = blocker.sockets[0].getsockname()[1]
        listeners = running.config["system"]["listeners"] + [
            {"name": "extra", "address": "127.0.0.1", "port": taken, "starttls": "offered"}
        ]
        desired = running.config | {"system": running.config["system"] | {"listeners": listeners}}
        from engine.admin.client import ApplyFailed

        with pytest.raises(ApplyFailed):
            await asyncio.to_thread(api.apply, ApplyRequest(desired, base_version=running.version))
        blocker.close()
        status = await asyncio.to_thread(api.status)
        assert status.version == 1 and status.last_reload and not status.last_reload.ok
        assert "Address already in use" in status.last_reload.error or "in use" in status.last_reload.error
        await send(service)
        await sink.received(1)


async def test_a_new_certificate_is_presented_from_the_next_connection(write_config, service_for, ca, tmp_path) -> None:
    import ssl

    leaf = ca.issue_cert("relay.test.example", common_name="relay.test.example")
    cert_file, key_file = tmp_path / "new.crt", tmp_path / "new.key"
    cert_file.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_file))
    with Sink() as sink:
        config = write_config(route_to(sink.port), system=admin_line())
        service = await service_for(config)
        port = service.relay.ports()["mx"]

        async def presented() -> str:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=10)
            await client.connect()
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            await client.starttls(tls_context=context)
            der = client.get_transport_info("ssl_object").getpeercert(binary_form=True)
            await client.quit()
            from cryptography import x509

            return x509.load_der_x509_certificate(der).issuer.rfc4514_string()

        before = await presented()
        api = client(service)
        running = await asyncio.to_thread(api.fetch_running)
        desired = running.config | {
            "tls": running.config["tls"]
            | {"certificate": {"pem": {"certificate": str(cert_file), "key": str(key_file)}}}
        }
        result = await asyncio.to_thread(api.apply, ApplyRequest(desired, base_version=running.version))
        assert result.ok and result.changed
        after = await presented()
        assert before != after and "trustme" in after.lower()  # now issued by the test CA, no longer self-signed


async def test_the_running_config_names_its_git_commit(write_config, service_for) -> None:
    import subprocess

    config = write_config(route_to(1), system=admin_line())
    repo = config.parent
    for args in (
        ["init", "-q"],
        ["add", "relay.yaml"],
        ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "config"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()
    service = await service_for(config)
    running = await asyncio.to_thread(client(service).fetch_running)
    assert running.commit == head
