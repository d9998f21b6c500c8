"""Intake's decryption step: inbound S/MIME opened with the keys the relay holds, and stamped.

Runs in `Intake.receive` after the content checks and before DLP decides, when
`encryption.advanced.decrypt_inbound` is on (whatever the method; the keys are
`encryption.smime.keys`). It applies to mail whose direction is inbound or internal and
that arrived over SMTP; outbound mail is never touched (its external copy must stay as the
sender encrypted it), nor mail written in the secure portal.

Every such message leaves with exactly one `decryption_header`, the relay's own (copies the
sender wrote are removed first):

- `success`: decrypted with the key of one internal recipient (the first whose certificate
  matches a RecipientInfo); the decrypted message goes to all recipients, who were all
  meant to read it, and DLP judges the decrypted content;
- `failed (<reason>)`: encrypted, but no held key opens it, or it is damaged or uses an
  algorithm not supported; the message goes on exactly as received;
- `not-encrypted`: not S/MIME encrypted.

Decryption never rejects or drops a message: any unexpected error is `failed (internal
error: <type>)`. The work (a parse, an RSA decryption, an AES pass, key files read) runs
in DLP's scanner pool, never on the event loop; its size is bounded by
`system.message_size_limit`, which the edge enforced before intake sees the message.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from engine.certificates.smime_keys import HeldKey, KeyFileError, held_key
from engine.policy.groups import domain_of
from engine.relay.decrypt.envelope import Undecryptable, find, open_envelope, rebuild
from engine.relay.dlp.decide import SCANNERS, direction_of
from engine.relay.methods.third_party import strip_headers
from engine.relay.runtime.live import Live
from engine.relay.smtp.message import Message

log = logging.getLogger(__name__)

SUCCESS = "success"
NOT_ENCRYPTED = "not-encrypted"


async def decrypt_inbound(live: Live, message: Message) -> Message:
    """`message` decrypted and stamped when the step applies to it; else `message` itself."""
    enc = live.config.encryption
    if enc.advanced is None or not enc.advanced.decrypt_inbound or enc.smime is None or enc.smime.keys is None:
        return message
    if message.origin != "smtp":
        return message
    if direction_of(live, message.sender, message.recipients, message.peer_ip) == "outbound":
        return message
    header = enc.advanced.decryption_header
    internal = [r for r in message.recipients if live.is_internal(domain_of(r))]
    try:
        content, status = await SCANNERS.run(
            decrypted, message.content, header, live.base_dir / enc.smime.keys, internal
        )
    except Exception as exc:  # noqa: BLE001 - the pool itself failed: the message still goes on
        log.exception("inbound decryption did not run")
        status = failed(f"internal error: {type(exc).__name__}")
        content = stamp(message.content, header, status)
    if status != NOT_ENCRYPTED:
        log.info("inbound S/MIME from <%s> to %d recipient(s): %s", message.sender, len(message.recipients), status)
    return replace(message, content=content)


def decrypted(content: bytes, header: str, keys: Path, recipients: list[str]) -> tuple[bytes, str]:
    """The content to queue and the status stamped on it (blocking: run it in a worker).

    `recipients` are the message's internal recipients, whose keys are tried in order."""
    try:
        envelope = find(content)
        if envelope is None:
            return stamp(content, header, NOT_ENCRYPTED), NOT_ENCRYPTED
        entity = open_envelope(envelope, held_keys(keys, recipients), recipients)
        return stamp(rebuild(content, entity), header, SUCCESS), SUCCESS
    except Undecryptable as exc:
        status = failed(exc.reason)
    except Exception as exc:  # noqa: BLE001 - never out of intake: the message goes on as received
        log.exception("inbound decryption failed unexpectedly")
        status = failed(f"internal error: {type(exc).__name__}")
    return stamp(content, header, status), status


def held_keys(directory: Path, recipients: list[str]) -> list[HeldKey]:
    """The usable keys held for `recipients`; a key file that cannot be used is logged and
    skipped (the message then reads `no key for …`, the log says which file and why)."""
    keys = []
    for address in dict.fromkeys(r.lower() for r in recipients):
        try:
            held = held_key(directory, address)
        except KeyFileError as exc:
            log.warning("S/MIME key for %s not used: %s", address, exc)
            continue
        if held is not None:
            keys.append(held)
    return keys


def failed(reason: str, most: int = 240) -> str:
    """`failed (<reason>)` on one line of printable ASCII, the reason cut at `most`
    characters (a header line must stay well under SMTP's 998)."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in reason)
    return f"failed ({text if len(text) <= most else text[: most - 3] + '...'})"


def stamp(content: bytes, header: str, status: str) -> bytes:
    """`content` without any `header` field it had, and the relay's own on top."""
    return f"{header}: {status}\r\n".encode("ascii", "replace") + strip_headers(content, {header})
