"""Two relays, one portal: a shared PostgreSQL database and one master key. A message
stored through one relay is read, and its reader's session and codes work, through the
other; a relay with another key refuses the store instead of failing message by message."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.portal.harness import PortalRelay
from tests.relay.peers import wait_for


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_a_message_stored_through_one_relay_is_read_through_the_other(fresh_pg_url: str, tmp_path: Path) -> None:
    key = tmp_path / "portal.key"
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    key.chmod(0o600)
    with (
        PortalRelay(database=fresh_pg_url, master_key=key) as first,
        PortalRelay(database=fresh_pg_url, master_key=key) as second,
    ):
        first.send("alice@example.com", ["rosa@partner.test"], "Shared", "confidential: one portal, two relays")
        link = first.link_for("rosa@partner.test")
        msg_id = link.rsplit("/m/", 1)[1]
        with httpx.Client(verify=False, base_url=second.url) as http:  # the other relay's portal
            landing = http.get(f"/m/{msg_id}")
            asked = http.post(f"/m/{msg_id}/code", data={"csrf": csrf_of(landing.text)})
            assert asked.headers["location"] == "/login/code/enter"
            page = http.get("/login/code/enter")
            # the code went out through the second relay's queue to the same mailbox server
            code = re.search(
                r"code: (\d+)", str(second.mail_to(second.outside, "rosa@partner.test", "portal code")[0]["subject"])
            ).group(1)
            opened = http.post("/login/code/enter", data={"csrf": csrf_of(page.text), "code": code})
            assert opened.headers["location"] == f"/message/{msg_id}"
            message = http.get(opened.headers["location"])
            assert message.status_code == 200 and "one portal, two relays" in message.text
            # the session lives in the database: the first relay's portal knows it too
            cookie = http.cookies.get("__Host-sealrelay-portal")
        with httpx.Client(verify=False, base_url=first.url, cookies={"__Host-sealrelay-portal": cookie}) as other:
            assert "one portal, two relays" in other.get(f"/message/{msg_id}").text

        wrong = tmp_path / "other.key"
        wrong.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
        stranger = PortalRelay(database=fresh_pg_url, master_key=wrong)
        stranger.internal.__enter__()
        stranger.outside.__enter__()
        try:  # started by hand: its portal never listens, which is what start() waits for
            with stranger.log.open("ab") as out:
                stranger.proc = subprocess.Popen(
                    [sys.executable, "-m", "engine.cli.app", "serve", str(stranger.config)],
                    cwd=stranger.dir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            wait_for(lambda: "could not open its store" in stranger.logs(), 30, "the refusal in the log")
            assert (
                "the portal key is not the one this portal's messages were sealed with "
                "(relays that share a portal database must share encryption.secure_portal.master_key)"
            ) in stranger.logs()
        finally:
            stranger.__exit__(None, None, None)
