"""A real relay with the secure portal, for the portal's end-to-end and browser tests.

`PortalRelay` writes a config, runs `sealrelay serve` as a child process (the way an
admin runs it), and gives the test two aiosmtpd mailboxes: `internal` (every address at
example.com, the organisation's own mail server) and `outside` (partner.test, where
external recipients read their notifications and one-time codes). Mail is sent to the
relay over SMTP; nothing here reaches into the relay's memory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import textwrap
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from tests.relay.peers import Sink, free_port, wait_for

CONFIG = """\
version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners:
    - {{name: mx, address: 127.0.0.1, port: {smtp}}}
  data_dir: ./var
  admin: {{address: 127.0.0.1, port: {admin}}}
  metrics: {{address: 127.0.0.1, port: {metrics}}}
  portal: {{address: 127.0.0.1, port: {portal}}}
ip_groups:
  internal_servers: [127.0.0.0/8]
routes:
  - name: internal
    recipients: {{domains: [example.com]}}
    next_hop: {{host: 127.0.0.1, port: {internal}}}
    tls: none
  - name: outside
    recipients: any
    next_hop: {{host: 127.0.0.1, port: {outside}}}
    tls: none
delivery:
  retry_interval: 1s
  max_retry_interval: 2s
  max_queue_lifetime: 1h
  delay_warning_after: null
encryption:
  method: {method}
{advanced}  secure_portal:
    url: https://127.0.0.1:{portal}
    mfa: {mfa}
    retention: {retention}
{database}    permissions:
      reply_all: {{allowed: {reply_all}, recipients: internal}}
      forward: {{allowed: {forward}, recipients: {forward_to}}}
      compose: {{allowed: {compose}, recipients: {compose_to}}}
      attach_file: {{allowed: {attach}}}
dlp:
  action_plans:
    - {{name: portal, email: encrypt}}
    - {{name: stop, email: block}}
  policies:
    - name: forbidden
      rules:
        - name: word
          conditions:
            any:
              - phrases: [project-nightshade]
          action_plan: stop
    - name: confidential
      rules:
        - name: marked
          conditions:
            any:
              - phrases: [confidential]
          action_plan: portal
"""


class PortalRelay:
    def __init__(
        self,
        *,
        mfa: str = "optional",
        retention: str = "90d",
        reply_all: bool = True,
        forward: bool = False,
        forward_to: str = "internal",
        compose: bool = True,
        compose_to: str = "internal",
        attach: bool = True,
        database: str | None = None,
        master_key: Path | None = None,
        directory: Path | None = None,
        method: str = "secure_portal",
        delivery: str = "offline",
        max_envelope: str = "10MB",
    ) -> None:
        """`method`: secure_portal, advanced, or "tls+advanced" (mandatory TLS, the advanced
        method as its backup); `delivery` and `max_envelope` are the advanced method's."""
        self.dir = Path(directory or tempfile.mkdtemp(prefix="sealrelay-portal-"))
        self._own_dir = directory is None
        self.ports = {k: free_port() for k in ("smtp", "admin", "metrics", "portal")}
        self.internal = Sink()
        self.outside = Sink()
        db = f"    database: {database}\n" if database else ""
        if master_key is not None:  # relays sharing one database share the key
            db += f"    master_key: {{file: {master_key}}}\n"
        advanced = ""
        if "advanced" in method:
            advanced = (
                "  advanced:\n"
                f"    portal_url: https://127.0.0.1:{self.ports['portal']}\n"
                f"    delivery: {delivery}\n"
                f"    max_envelope_size: {max_envelope}\n"
            )
        if method == "tls+advanced":
            advanced = "  backup: advanced\n" + advanced
            method = "tls"
        self.config = self.dir / "relay.yaml"
        self.config.write_text(
            CONFIG.format(
                **self.ports,
                internal=self.internal.port,
                outside=self.outside.port,
                mfa=mfa,
                method=method,
                advanced=advanced,
                retention=retention,
                database=db,
                reply_all=str(reply_all).lower(),
                forward=str(forward).lower(),
                forward_to=forward_to,
                compose=str(compose).lower(),
                compose_to=compose_to,
                attach=str(attach).lower(),
            )
        )
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "serve.log"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.ports['portal']}"

    def __enter__(self) -> PortalRelay:
        self.internal.__enter__()
        self.outside.__enter__()
        self.start()
        return self

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli.app", "serve", str(self.config)],
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(lambda: self._listening("portal") or self._died(), 30, f"the portal to listen\n{self.logs()}")
        if self.proc.poll() is not None:
            raise AssertionError(f"sealrelay serve exited:\n{self.logs()}")
        wait_for(lambda: self._listening("smtp"), 10, "the SMTP listener")

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _listening(self, name: str) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.ports[name])) == 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.internal.__exit__()
        self.outside.__exit__()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- mail ------------------------------------------------------------------------------

    def send(
        self, sender: str, recipients: list[str], subject: str, body: str, attachments: dict[str, bytes] | None = None
    ) -> None:
        from email.message import EmailMessage

        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(recipients), subject
        msg.set_content(body)
        for name, data in (attachments or {}).items():
            msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as client:
            client.send_message(msg, from_addr=sender, to_addrs=recipients)

    def mail_to(self, sink: Sink, address: str, subject_has: str, count: int = 1, timeout: float = 15):
        """The messages `address` got at `sink` whose subject holds `subject_has` (waits for `count`)."""

        def found():
            out = []
            for item in sink.messages:
                msg = message_from_bytes(item.content, policy=default)
                if address in item.recipients and subject_has in str(msg["subject"]):
                    out.append(msg)
            return out if len(out) >= count else None

        return wait_for(found, timeout, f"{count} mail(s) to {address} with {subject_has!r}\n{self.logs()[-3000:]}")

    def link_for(self, address: str) -> str:
        """The portal link in the latest notification `address` got."""
        notice = self.mail_to(self.outside, address, "secure message")[-1]
        return re.search(r"https://\S+/m/[A-Za-z0-9_-]+", notice.get_content()).group(0)

    def code_for(self, address: str, count: int = 1) -> str:
        """The one-time code in the `count`-th code mail `address` got."""
        sink = self.internal if address.endswith("@example.com") else self.outside
        mail = self.mail_to(sink, address, "Your secure portal code", count)[count - 1]
        return re.search(r"code: (\d{6,})", str(mail["subject"])).group(1)


def dedent(text: str) -> str:
    return textwrap.dedent(text)
