"""`method: tls`: flagged mail is delivered as it is, but only over TLS at `encryption.tls`.

The content is not changed; the protection is the transport: every sealed copy carries the
floor (level, protocol, cipher strength) that `transfer` enforces before MAIL FROM. When
that TLS cannot be had, delivery hands the recipients to the chain's backup method, or they
wait in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.relay.methods.base import Protection, Sealed, TLSFloor
from engine.relay.queue import Entry


def floor_of(config) -> TLSFloor:
    tls = config.encryption.tls
    return TLSFloor(tls.level, tls.min_protocol, tls.min_cipher_bits, "encryption.tls")


@dataclass(frozen=True)
class TLSOnly:
    floor: TLSFloor
    name: str = "tls"

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        return Protection(sealed=(Sealed(tuple(recipients), self.floor),))
