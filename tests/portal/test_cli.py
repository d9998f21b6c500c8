"""`sealrelay portal audit | revoke | sweep` on a portal store, as an operator runs them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from engine.cli.app import app
from engine.config.load import load_config
from engine.portal.service import open_store
from engine.portal.store import Head

CONFIG = """\
version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
  data_dir: ./var
encryption:
  method: secure_portal
  secure_portal: {url: 'https://portal.example.com'}
"""
HEAD = Head("alice@example.com", ("bob@partner.test",), (), "Hello", 0.0, (), "")


def store_of(path: Path):
    config = load_config(path).config
    return open_store(config.encryption.secure_portal, path.parent, path.parent / "var")


def test_audit_lists_events_and_revoke_makes_a_held_key_unusable(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG)
    store = store_of(path)
    store.audit("code_sent", address="bob@partner.test", ip="127.0.0.1", detail="login")
    store.audit("open", address="bob@partner.test", message_id="m1", ip="127.0.0.1")
    held = store.hold_key("bob@partner.test", bytes(32), time.time() + 3600)
    store.close()
    runner = CliRunner()

    text = runner.invoke(app, ["portal", "audit", "-c", str(path), "--event", "open"])
    assert text.exit_code == 0, text.output
    [line] = text.output.splitlines()
    assert line.split("  ")[1:] == ["open", "bob@partner.test", "m1", "127.0.0.1"]

    as_json = runner.invoke(app, ["portal", "audit", "-c", str(path), "--format", "json"])
    assert [e["event"] for e in json.loads(as_json.output)] == ["code_sent", "open"]

    revoked = runner.invoke(app, ["portal", "revoke", held, "-c", str(path)])
    assert (revoked.exit_code, revoked.output) == (0, f"revoked {held}\n")
    store = store_of(path)
    try:
        key = store.held_key(held)
        assert key.revoked and key.key is None
        assert store.audit_events(event="revoked")[0]["message_id"] == held
    finally:
        store.close()
    again = runner.invoke(app, ["portal", "revoke", held, "-c", str(path)])
    assert again.exit_code == 1 and "no such key or message" in again.output


def test_revoke_deletes_a_portal_message_and_sweep_reports_what_it_deleted(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG)
    store = store_of(path)
    gone, _ = store.put("bob@partner.test", "inbox", b"Subject: a\r\n\r\nold\r\n", HEAD, expires=time.time() - 1)
    kept, _ = store.put("bob@partner.test", "inbox", b"Subject: b\r\n\r\nnew\r\n", HEAD, expires=time.time() + 3600)
    revoked, _ = store.put("bob@partner.test", "inbox", b"Subject: c\r\n\r\nx\r\n", HEAD, expires=time.time() + 3600)
    store.close()
    runner = CliRunner()
    assert runner.invoke(app, ["portal", "revoke", revoked, "-c", str(path)]).exit_code == 0
    swept = runner.invoke(app, ["portal", "sweep", "-c", str(path)])
    assert swept.exit_code == 0 and swept.output.startswith("1 messages, ")
    store = store_of(path)
    try:
        assert store.get("bob@partner.test", gone) is None and store.get("bob@partner.test", revoked) is None
        assert store.get("bob@partner.test", kept) is not None
        assert store.blob_count() == 1
    finally:
        store.close()


def test_a_config_without_a_portal_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        CONFIG.replace(
            "encryption:\n  method: secure_portal\n  secure_portal: {url: 'https://portal.example.com'}\n", ""
        )
    )
    result = CliRunner().invoke(app, ["portal", "audit", "-c", str(path)])
    assert result.exit_code == 1
    assert result.output == f"{path}: no encryption.secure_portal: this relay has no portal\n"


def test_ids_never_look_like_an_option() -> None:
    from engine.portal.crypto import random_id

    ids = [random_id() for _ in range(2000)]  # one in 64 would start with "-" otherwise
    assert all(i[0] != "-" and len(i) == 32 for i in ids) and len(set(ids)) == len(ids)
