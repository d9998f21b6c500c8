"""What the relay and the portal's web app share: one `PortalService` per relay process.

- `protect` (the `secure_portal` method, on the relay's loop): each recipient gets a copy
  stored in the portal and a notification queued in its place. Storing is idempotent per
  queue entry and recipient, and a notification is queued once its copy is stored, so a
  delivery retried after a crash neither loses nor doubles either.
- `send_code` (web app): a one-time code by mail, rate limited per address.
- `submit` (web app): a reply or a new message enters the relay's own pipeline (intake:
  DLP, the durable queue), from the web app's thread onto the relay's loop.
- `sweep`: retention, run periodically by the portal component.

The running services are found by data directory (`running`): the method asks for the
one of its relay; when there is none (the portal is not started) the recipients wait in
the queue, never sent in clear.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from engine.config.secrets import resolve
from engine.portal import mail
from engine.portal.crypto import PortalKey
from engine.portal.db import open_database
from engine.portal.store import Store

log = logging.getLogger(__name__)

CODE_DIGITS = 8
CODE_MIN_INTERVAL = 60.0  # seconds between two codes to one address
CODE_HOURLY = 5  # codes to one address per hour
SUBMIT_TIMEOUT = 60.0

DEFAULT_BODY = """\
{{ sender }} sent you a secure message{% if subject %}: "{{ subject }}"{% endif %}.
{% if attachment_count %}It has {{ attachment_count }} attachment{{ "s" if attachment_count != 1 else "" }}.
{% endif %}
Read it in the secure portal:
{{ link }}

The first time, the portal sends a one-time code to this address to confirm it is you;
then you may set a password. The message can be read until {{ expires }}.

This notice comes from the secure messaging portal at {{ portal_url }}.
The portal never asks for a password by email.
"""

CODE_BODY = """\
Your one-time code for the secure messaging portal is:

    {code}

It is valid for {minutes} minutes and works once.

It was asked for at {portal_url} by a browser at {ip}, on {when} (UTC).
If you did not ask for it, ignore this mail: nobody can use the code without this mailbox.
"""

_RUNNING: dict[Path, PortalService] = {}
_RUNNING_LOCK = threading.Lock()


def running(data_dir: Path) -> PortalService | None:
    with _RUNNING_LOCK:
        return _RUNNING.get(data_dir)


@dataclass
class Wiring:
    """The relay parts a portal service works with (the queue, intake, the relay's loop)."""

    loop: asyncio.AbstractEventLoop
    enqueue: Callable  # async (sender, recipients, content, meta) -> queue id
    submit: Callable  # async (live, Message) -> Verdict
    live: Callable  # () -> the current Live


def open_store(portal, base_dir: Path, data_dir: Path, clock=time.time) -> Store:
    """The store `portal` (an `encryption.secure_portal` block) names: SQLite in `data_dir`
    unless a database is set; the portal key from the config, else from `data_dir`."""
    password = resolve(portal.database_password, base_dir) if portal.database_password else None
    if portal.master_key:
        key = PortalKey.from_text(resolve(portal.master_key, base_dir))
    else:
        key = PortalKey.in_dir(data_dir / "portal")
    db = open_database(portal.database, data_dir, password)
    blob_dir = None if portal.database else data_dir / "portal" / "blobs"
    try:
        return Store(db, key, blob_dir, clock)
    except Exception:
        db.close()
        raise


class PortalService:
    def __init__(self, store: Store, wiring: Wiring, data_dir: Path) -> None:
        self.store = store
        self.wiring = wiring
        self.data_dir = data_dir
        self._env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self._compiled: dict[str, object] = {}
        # a made-up phrase for unknown addresses: stable for this portal, not guessable
        self.decoy_secret = store.key.token("", "decoy-phrase").encode()
        self._settings = _settings(wiring.live())

    @property
    def settings(self):
        """`encryption.secure_portal` of the running config (or the last one that had it:
        a config without the portal stops new mail reaching it, not the reading of old)."""
        current = portal_settings(self.wiring.live().config)
        if current is not None:
            self._settings = current
        return self._settings

    def register(self) -> None:
        with _RUNNING_LOCK:
            _RUNNING[self.data_dir] = self

    def unregister(self) -> None:
        with _RUNNING_LOCK:
            if _RUNNING.get(self.data_dir) is self:
                del _RUNNING[self.data_dir]

    # -- the method ------------------------------------------------------------------------

    async def protect(self, live, entry, recipients: list[str]) -> dict[str, str]:
        """Store a copy for each recipient and queue its notification; {recipient: portal id}."""
        portal = _settings(live)
        readable = await asyncio.to_thread(mail.read, entry.body)
        expires = self.store.clock() + portal.retention
        out = {}
        for rcpt in recipients:
            msg_id, _ = await asyncio.to_thread(
                functools.partial(
                    self.store.put,
                    rcpt,
                    "inbox",
                    entry.body,
                    readable.head,
                    expires=expires,
                    origin=f"{entry.id}/{rcpt}",
                    text=mail.searchable(readable),
                )
            )
            if not await asyncio.to_thread(self.store.notified, msg_id):
                notice = self.notification(live, rcpt, readable.head, msg_id, expires)
                await self.wiring.enqueue(
                    self.sender(live),
                    [rcpt],
                    notice,
                    {"kind": "portal-notice", "about": entry.id, "config_version": live.version},
                )
                await asyncio.to_thread(self.store.set_notified, msg_id)
                await asyncio.to_thread(
                    self.store.audit, "stored", address=rcpt, message_id=msg_id, detail=f"queue {entry.id}"
                )
            out[rcpt] = msg_id
        return out

    def notification(self, live, recipient: str, head, msg_id: str, expires: float) -> bytes:
        portal = _settings(live)
        link = f"{portal.url.rstrip('/')}/m/{msg_id}"
        subject, body = self.render(
            live, portal.notification, DEFAULT_BODY, recipient, head, link, expires, portal.retention
        )
        return self._mail(live, recipient, subject, body)

    def render(
        self, live, note, default_body: str, recipient: str, head, link: str, expires: float, kept_for: int
    ) -> tuple[str, str]:
        """A notification's subject and body from `note` (a `Notification` block): its
        template file, inline body, or `default_body`. A template that fails at render time
        (validate checks them, but a file can change) falls back to the built-in text."""
        portal = _settings(live)
        values = {
            "sender": head.sender,
            "recipient": recipient,
            "subject": head.subject,
            "attachment_count": len(head.attachments),
            "expires": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d"),
            "retention": days(kept_for),
            "link": link,
            "portal_url": portal.url,
        }
        try:
            subject = self._template(note.subject).render(values)
            if note.template:
                source = (live.base_dir / note.template).read_text(encoding="utf-8")
            else:
                source = note.body or default_body
            body = self._template(source).render(values)
        except (TemplateError, OSError) as exc:  # a broken template still tells the recipient
            log.error("a notification template failed (%s); the built-in one is used", exc)
            subject = f"You have a secure message from {head.sender}"
            body = self._env.from_string(default_body).render(values)
        return " ".join(subject.split())[:200], body

    def _template(self, source: str):
        """A compiled template (compiling costs ~1 ms; a notice is rendered per recipient)."""
        found = self._compiled.get(source)
        if found is None:
            if len(self._compiled) > 64:
                self._compiled.clear()
            found = self._compiled[source] = self._env.from_string(source)
        return found

    def sender(self, live) -> str:
        settings = portal_settings(live.config) or self.settings
        return settings.notification.sender or f"postmaster@{live.config.system.fqdn}"

    def mail_with(self, live, recipient: str, subject: str, body: str, attachment: tuple[str, bytes]) -> bytes:
        """A notice from the portal with an HTML file attached (the advanced method's
        envelope), written out directly: the `email` package's generator re-folds and
        re-encodes a 100 KB attachment line by line (~10 ms), and the envelope is ASCII with
        short lines already, so it travels as it is (7bit)."""
        name, html = attachment
        boundary = "=_sealrelay_" + secrets.token_hex(12)
        head = "".join(
            f"{k}: {v}\r\n"
            for k, v in (
                ("From", self.sender(live)),
                ("To", recipient),
                ("Subject", _header_text(subject)),
                ("Date", formatdate(time.time())),
                ("Message-ID", make_msgid(domain=live.config.system.fqdn)),
                ("Auto-Submitted", "auto-generated"),
                ("MIME-Version", "1.0"),
                ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
            )
        )
        text = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
        return b"".join(
            (
                head.encode("ascii"),
                f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n".encode(),
                text,
                f"--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\n"
                f'Content-Disposition: attachment; filename="{name}"\r\n'
                "Content-Transfer-Encoding: 7bit\r\n\r\n".encode(),
                html if b"\r\n" in html else html.replace(b"\n", b"\r\n"),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )

    def _mail(
        self, live, recipient: str, subject: str, body: str, attachment: tuple[str, bytes] | None = None
    ) -> bytes:
        msg = EmailMessage(policy=SMTP)
        msg["From"] = self.sender(live)
        msg["To"] = recipient
        msg["Subject"] = subject
        msg["Date"] = formatdate(time.time())
        msg["Message-ID"] = make_msgid(domain=live.config.system.fqdn)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        if attachment is not None:  # the advanced envelope: ASCII with short lines, sent as it is
            name, html = attachment
            msg.add_attachment(html.decode("ascii"), subtype="html", filename=name, cte="7bit")
        return msg.as_bytes()

    # -- codes -----------------------------------------------------------------------------

    def send_code(self, address: str, scope: str, ip: str, *, deliver: bool = True) -> str:
        """Mail a one-time code to `address` (web thread). "sent", or "wait" when the rate
        limit says not yet (the caller answers alike either way where that would leak).
        With `deliver` false (an address the portal does not know) the code is made and kept
        all the same, never mailed: a guess at it then answers as a guess at a real one."""
        live = self.wiring.live()
        key = f"code:{address.lower()}"
        count, last = self.store.recent(key, 3600)
        now = self.store.clock()
        if count >= CODE_HOURLY or (last is not None and now - last < CODE_MIN_INTERVAL):
            return "wait"
        self.store.note(key)
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        portal = self.settings
        self.store.new_code(address, scope, code, portal.code_lifetime)
        if not deliver:
            return "sent"
        body = CODE_BODY.format(
            code=code,
            minutes=portal.code_lifetime // 60,
            portal_url=portal.url,
            ip=ip,
            when=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M"),
        )
        notice = self._mail(live, address, f"Your secure portal code: {code}", body)
        self.call(
            self.wiring.enqueue(
                self.sender(live), [address], notice, {"kind": "portal-code", "config_version": live.version}
            )
        )
        self.store.audit("code_sent", address=address, ip=ip, detail=scope)
        return "sent"

    # -- mail written in the portal ---------------------------------------------------------

    def submit(self, sender: str, recipients: list[str], content: bytes, ip: str):
        """Hand a message written in the portal to the relay's intake; its Verdict."""
        from engine.relay.smtp.message import Message

        live = self.wiring.live()
        message = Message(
            sender=sender,
            recipients=tuple(recipients),
            content=content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
            peer_ip=ip,
            helo="secure-portal",
            listener="portal",
            received_at=time.time(),
            origin="portal",
        )
        return self.call(self.wiring.submit(live, message))

    def call(self, coro):
        """Run `coro` on the relay's loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.wiring.loop).result(SUBMIT_TIMEOUT)

    # -- retention -------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        portal = self.settings
        swept = self.store.sweep()
        swept["sessions"] = self.store.expire_sessions(portal.session_idle, portal.session_lifetime)
        if swept["messages"]:
            self.store.audit("retention", detail=f"{swept['messages']} messages deleted")
        return swept


def portal_settings(config):
    """The portal's settings: `encryption.secure_portal`, or, for a relay that uses the portal
    only for the advanced method (key release, offline keys), its defaults at
    `encryption.advanced.portal_url`. None: this config needs no portal."""
    enc = config.encryption
    if enc.secure_portal is not None:
        return enc.secure_portal
    if enc.advanced is not None and "advanced" in (enc.method, enc.backup):
        from engine.config.model.encryption import SecurePortal

        return SecurePortal(url=enc.advanced.portal_url)
    return None


def _header_text(value: str) -> str:
    """A header value as ASCII (RFC 2047 when it is not)."""
    if value.isascii():
        return value
    from email.header import Header

    return Header(value, "utf-8").encode()


def _settings(live):
    portal = portal_settings(live.config)
    if portal is None:
        raise RuntimeError("this config has no secure portal (encryption.secure_portal or the advanced method)")
    return portal


def days(seconds: int) -> str:
    """A retention period as people say it: "90 days", "12 hours"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
