"""REQUIRETLS (RFC 8689): the tag a message carries through the queue, and what it demands.

Receipt (§4.1). The edge offers REQUIRETLS in EHLO only once TLS is up (`RelaySMTP`), on any
listener; a `MAIL FROM:<..> REQUIRETLS` is recorded with the other MAIL parameters in the
queued entry's meta (`mail_params`), so the demand outlives a restart. A `TLS-Required: No`
header field is recorded (`tls_required: "no"`) only for a message whose MAIL command did not
ask for REQUIRETLS: the parameter wins, and the field is then ignored (but relayed as is).

Delivery (§4.2.1). A tagged message goes to a hop only over TLS whose certificate chains to a
CA in `tls.ca_bundle` and names the hop (`secure`, whatever the route or enforced-TLS rules
say: REQUIRETLS only ever tightens, `tighten`), and only when the EHLO after STARTTLS offers
REQUIRETLS; MAIL FROM then carries the parameter onward. To the recipient domain's own MX
hosts, a hop must also be authenticated before it is contacted: its MX and address answers
DNSSEC-validated (`Hop.secure`, with `system.dns.dnssec`), or named by the domain's MTA-STS
policy in enforce mode (`Deliverer._mx_unauthenticated`); a configured next hop is named by the
operator and needs neither. A hop that falls short is skipped for the next one
(`failures.RequireTLSUnmet`, `failures.requiretls_unmet`); when every hop fell short the message
bounces with 5.7.30 (`failures.requiretls_outcome`). Nothing is ever sent in clear. With `dane`
asked for, a hop's TLSA records may authenticate its certificate instead of a CA.

Non-delivery (§5). The DSN about a tagged message carries at most the original's header
section (`dsn_include`) and is tagged itself (`dsn_meta`): it travels under the same rules,
and since its sender is null, one that cannot is dropped rather than returned or sent in clear.

`TLS-Required: No` (§4.2.2) is the sender's request to relax the *recipient domain's*
published policies (MTA-STS, DANE) for this message. A header is not the operator: the
relay's own levels (routes, `enforced_tls`, `tls.outbound_default`, a method's TLS floor)
never get weaker because of it. `tls_optional` reports the request for code that applies a
recipient's published policy to decide on; nothing relaxes today.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from engine.relay.runtime.live import TLSPolicy
from engine.relay.tls.levels import TLSLevel

KEYWORD = "REQUIRETLS"  # the EHLO keyword and the MAIL FROM parameter (no value)
_FIELD = b"tls-required:"


def requested(meta: Mapping[str, Any]) -> bool:
    """Whether the entry was received with `MAIL FROM:<..> REQUIRETLS`."""
    return KEYWORD in meta.get("mail_params", ())


def tls_optional(meta: Mapping[str, Any]) -> bool:
    """Whether the sender asked, by `TLS-Required: No`, to relax the recipient's policies."""
    return meta.get("tls_required") == "no" and not requested(meta)


def receipt_meta(mail_params: Iterable[str], content: bytes) -> dict[str, Any]:
    """What intake records of a received message for REQUIRETLS: the MAIL parameters (when
    there were any) and a `TLS-Required: No` that the parameters do not override."""
    params = [param.upper() for param in mail_params]
    meta: dict[str, Any] = {"mail_params": params} if params else {}
    if KEYWORD not in params and says_no(content):
        meta["tls_required"] = "no"
    return meta


def says_no(content: bytes) -> bool:
    """Whether the header section has a `TLS-Required: No` field (§3; the one value defined)."""
    end = content.find(b"\r\n\r\n")
    head = (content if end < 0 else content[:end]).replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(_FIELD) and line[len(_FIELD) :].strip().lower() == b"no":
            return True
    return False


def tighten(policy: TLSPolicy) -> TLSPolicy:
    """The policy for a tagged message: at least `secure` (chain and host name checked), the
    protocol and cipher floor of `policy` kept, REQUIRETLS named among its sources."""
    return policy.tighten(TLSLevel.SECURE, policy.min_protocol, policy.min_bits, KEYWORD)


def mail_options(meta: Mapping[str, Any]) -> list[str]:
    """The parameters our MAIL FROM carries onward for this entry."""
    return [KEYWORD] if requested(meta) else []


def dsn_include(meta: Mapping[str, Any], include: str) -> str:
    """How much of a tagged original a DSN may return: never more than its header section."""
    return "headers" if requested(meta) and include == "full" else include


def dsn_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The meta that tags a DSN about a tagged original, so it is delivered under REQUIRETLS too."""
    return {"mail_params": [KEYWORD]} if requested(meta) else {}
