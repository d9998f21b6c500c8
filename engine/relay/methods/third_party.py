"""The third-party encryption gateway (the seed's "Third-party application message encryption").

Flagged mail is handed over SMTP to the configured encryption servers, tried in order,
with the `encrypt` x-header added (any copy of the three configured headers the sender put
in is removed first). The gateway encrypts and sends the message back to the relay from an
address in the encrypted IP group, stamped with the `success` or `failure` header; the
relay then delivers it as already encrypted, or holds it in the quarantine when the gateway
says it failed (`gateway_result`, which intake's decision asks). Connections use `encryption.third_party.tls`
and, when configured, SMTP AUTH (over TLS only).
"""

from __future__ import annotations

import email
from dataclasses import replace

from engine.relay.delivery.resolve import Hop, next_hops, resolver_for
from engine.relay.delivery.transfer import transfer
from engine.relay.methods.base import HandedOff, Protection
from engine.relay.queue import Entry
from engine.relay.runtime.live import TLSPolicy
from engine.relay.tls.levels import TLSLevel


def header_parts(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


def strip_headers(content: bytes, names: set[str]) -> bytes:
    """Remove the named headers (with their continuation lines) from the header section."""
    head, sep, body = content.partition(b"\r\n\r\n")
    lowered = {n.lower().encode() for n in names}
    kept, skipping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = b":" in line and name in lowered
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def gateway_result(live, content: bytes) -> str | None:
    """What the third-party gateway said about mail it sends back: "success", "failure", or
    "none" when it said neither (None when no gateway is configured). Fails closed: any copy
    of the failure header, folded or with more text after the value, counts as failure."""
    tp = live.config.encryption.third_party
    if tp is None:
        return None
    head = email.message_from_bytes(content.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")

    def said(configured: str) -> bool:
        name, _, value = configured.partition(":")
        want = value.strip().lower()
        return any(" ".join(str(v).split()).lower().startswith(want) for v in head.get_all(name.strip()) or [])

    if said(tp.headers.failure):
        return "failure"
    return "success" if said(tp.headers.success) else "none"


class ThirdPartyGateway:
    name = "third_party"

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        tp = live.config.encryption.third_party
        if tp is None:
            raise RuntimeError("encryption.third_party is not configured")
        names = {header_parts(h)[0] for h in (tp.headers.encrypt, tp.headers.success, tp.headers.failure)}
        content = tp.headers.encrypt.encode("ascii") + b"\r\n" + strip_headers(entry.body, names)
        handed = replace(entry, body=content)
        policy = TLSPolicy(TLSLevel.parse(tp.tls), sources=("encryption.third_party.tls",))
        reasons = []
        for server in tp.servers:
            for hop in await _hops(live, server):
                attempt = await transfer(live, hop, policy, handed, recipients, None, auth=tp.auth)
                if attempt.site_failure is not None:
                    reasons.append(attempt.site_failure.reason)
                    continue
                # each recipient once: the ones the gateway took are done, its refusals are
                # reported per recipient (a permanent one bounces), never handed over again
                refused = {r: result for r, result in attempt.results.items() if not isinstance(result, str)}
                taken = tuple(r for r in recipients if r not in refused)
                detail = f"handed to the encryption gateway {hop} ({attempt.tls})"
                return Protection(handed=(HandedOff(taken, detail),) if taken else (), refused=refused)
        raise RuntimeError("no encryption server took the message: " + "; ".join(reasons))


async def _hops(live, server) -> list[Hop]:
    return await next_hops(resolver_for(live.config.system.dns), server.host, server.port, server.mx_lookup)
