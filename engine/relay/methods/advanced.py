"""The `advanced` method: each outside recipient gets a notice with the message attached as
an envelope that decrypts itself in the browser (engine.portal.envelope).

Per recipient, one fresh message key; it is held by the relay's portal (for opening online
after a one-time code or sign-in, revocable, audited) and, with `advanced.delivery: offline`,
also wrapped to the key pair the recipient made at the portal (opens offline with their
password; cannot be withdrawn once delivered). The notice goes out at once, never held for
registration, as a sealed copy under the route's own TLS policy: the content is protected
whatever the transport. That is also what makes it the backup for mandatory TLS.

The portal must be running in this relay (keys are held there): without it the method
raises and the recipients wait in the queue, never sent in clear. Internal recipients go
by their route, as with the portal method.
"""

from __future__ import annotations

import asyncio
import textwrap

from engine.policy.groups import domain_of
from engine.relay.methods.base import Protection, Sealed
from engine.relay.queue import Entry

ENVELOPE_NAME = "secure-message.html"

DEFAULT_BODY = """\
{{ sender }} sent you a secure message{% if subject %}: "{{ subject }}"{% endif %}.

It is in the attached file secure-message.html. Save the attachment and open it in a web
browser (on a phone: open the attachment, then choose your browser). It decrypts there, in
your browser: the message is not on any web site.

If you made a key at the secure portal, the file opens with that key's password, even
offline. Otherwise the file sends you to the portal, which mails you a one-time code:
{{ link }}
"""

SAYS = {
    "offline": (
        "Once delivered, this message can be opened with your key's password for good: the "
        "sender cannot withdraw it. Opening it online works until {expires}."
    ),
    "revocable": (
        "This message opens only through the portal, until {expires}; the sender's "
        "organisation can withdraw it before then, and every opening is recorded."
    ),
}


class Advanced:
    name = "advanced"

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        from engine.portal.service import running

        internal = tuple(r for r in recipients if live.is_internal(domain_of(r)))
        outside = [r for r in recipients if r not in internal]
        sealed = [Sealed(internal, None, note="internal recipient: by its route")] if internal else []
        if outside:
            service = running(live.data_dir)
            if service is None:
                raise RuntimeError("the secure portal, which holds the message keys, is not running in this relay")
            # one hop off the loop for the whole message: parsing, sealing and the store
            notices = await asyncio.to_thread(seal_all, service, live, entry, outside)
            sealed += [Sealed((r,), None, content=notices[r], note="advanced envelope") for r in outside]
        return Protection(sealed=tuple(sealed))


def seal_all(service, live, entry: Entry, recipients: list[str]) -> dict[str, bytes]:
    """The notice with its envelope for each recipient; their keys held at the portal.

    The message is parsed once; each recipient gets their own key and envelope (their own
    slots, security phrase and held key: one recipient's released key opens nothing else).
    The held keys are written in one transaction before any notice leaves: a notice whose
    key the portal does not hold is never sent."""
    from datetime import UTC, datetime

    from engine.portal import crypto, envelope, mail
    from engine.relay.decision import of_meta

    adv = live.config.encryption.advanced
    mode = of_meta(entry.meta).delivery or adv.delivery  # a DLP action plan may ask for revocable
    store = service.store
    readable = mail.read(entry.body)
    body = envelope.payload(readable)
    accounts = store.accounts(recipients) if recipients else {}
    expires = store.clock() + adv.expire_after
    when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d")
    portal_url = service.settings.url
    held, events, notices = [], [], {}
    for rcpt in recipients:
        account = accounts.get(rcpt.lower())
        own_key = None
        if mode == "offline" and account is not None and account.public_key and account.private_key:
            own_key = envelope.RecipientKey(account.public_key, account.private_key)
        key_id = crypto.random_id()
        sealed = envelope.seal(
            body,
            portal_url=portal_url,
            held=key_id,
            recipient=own_key,
            phrase=account.phrase if account else None,
            max_inline=int(adv.max_envelope_size),
        )
        data_id = None
        if sealed.data is not None:
            data_id = crypto.random_id()
            store.put_data(data_id, sealed.data)
        held.append((key_id, rcpt, sealed.key, expires, data_id))
        link = f"{portal_url.rstrip('/')}/k/{key_id}"
        subject, text = service.render(
            live, adv.notification, DEFAULT_BODY, rcpt, readable.head, link, expires, adv.expire_after
        )
        delivery = "offline" if own_key is not None else "revocable"
        text = text.rstrip("\n") + "\n\n" + textwrap.fill(SAYS[delivery].format(expires=when), 76) + "\n"
        notices[rcpt] = service.mail_with(live, rcpt, subject, text, (ENVELOPE_NAME, sealed.html))
        events.append(("envelope_sealed", rcpt, key_id, f"queue {entry.id}, {delivery}"))
    store.hold_keys(held)
    store.audit_many(events)
    return notices
