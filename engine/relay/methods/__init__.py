"""Encryption methods behind one seam (`engine.relay.methods.base.Method`), one module each.

`build_chain` turns a config's `encryption` section into the `Chain` of its version: S/MIME
first when configured, then the configured method, and the backup method for sealed copies
whose TLS could not be had. A method the relay does not implement is `Unavailable`: its
recipients wait in the queue with a clear reason, never sent without protection.
"""

from __future__ import annotations

from pathlib import Path

from engine.relay.methods.advanced import Advanced
from engine.relay.methods.base import Chain, Method, Unavailable
from engine.relay.methods.portal import SecurePortal
from engine.relay.methods.smime import SMIME
from engine.relay.methods.third_party import ThirdPartyGateway
from engine.relay.methods.tls import TLSOnly, floor_of

__all__ = ["build_chain", "method_named"]


def method_named(name: str, config) -> Method:
    """The method the config calls `name` (tls, third_party, advanced, secure_portal)."""
    if name == "tls":
        return TLSOnly(floor_of(config))
    if name == "third_party":
        return ThirdPartyGateway()
    if name == "secure_portal":
        return SecurePortal()
    if name == "advanced":
        return Advanced()
    return Unavailable(name)


def build_chain(config, base_dir: Path) -> Chain:
    enc = config.encryption
    steps: list[Method] = []
    if enc.smime is not None and enc.smime.certificates is not None:  # `keys` alone: inbound only
        floor = floor_of(config) if enc.method == "tls" else None
        steps.append(SMIME(base_dir / enc.smime.certificates, floor))
    steps.append(method_named(enc.method, config))
    backup = method_named(enc.backup, config) if enc.method == "tls" and enc.backup != "none" else None
    return Chain(tuple(steps), backup)
