"""The `secure_portal` method: mail stays on the relay, the recipient gets a notification.

Each recipient's copy is stored encrypted in the portal and a notification queued in its
place (engine.portal.service.PortalService.protect); the recipient is then handed off.
Without a running portal in this relay process (not started, or its database down) the
method raises, so the recipients wait in the queue with the reason: never sent in clear.

Internal recipients of the same message (`system.internal_domains`) are not the portal's:
the message never leaves the organisation for them, so it goes out as queued, by their
route and its TLS policy, as it would to them under any method's hand-off.
"""

from __future__ import annotations

from engine.policy.groups import domain_of
from engine.relay.methods.base import HandedOff, Protection, Sealed
from engine.relay.queue import Entry


class SecurePortal:
    name = "secure_portal"

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        from engine.portal.service import running

        internal = tuple(r for r in recipients if live.is_internal(domain_of(r)))
        outside = [r for r in recipients if r not in internal]
        sealed = (Sealed(internal, None, note="internal recipient: by its route"),) if internal else ()
        if not outside:
            return Protection(sealed=sealed)
        service = running(live.data_dir)
        if service is None:
            raise RuntimeError("the secure portal is not running in this relay (it starts with `serve`)")
        stored = await service.protect(live, entry, outside)
        return Protection(
            sealed=sealed,
            handed=tuple(
                HandedOff((rcpt,), f"stored in the secure portal as {msg_id[:8]}…, notification queued")
                for rcpt, msg_id in stored.items()
            ),
        )
