"""The whole desired state of a relay: `RelayConfig`, version 1 of the config format."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.config.model.base import DomainPattern, F, Model, Network
from engine.config.model.dlp import DLP, Direction
from engine.config.model.encryption import Encryption
from engine.config.model.system import System
from engine.config.model.transport import TLS, Delivery, EnforcedTLSRule, Route, TLSLevel


class Expect(Model):
    direction: Direction | None = F(None, "Expected direction", "outbound")
    action: Literal["encrypt", "block", "quarantine", "permit"] | None = F(None, "Expected action", "encrypt")
    method: Literal["tls", "advanced", "third_party", "secure_portal", "none"] | None = F(
        None, "Expected encryption method", "tls"
    )
    policies: list[str] | None = F(None, "Expected matched policies, in any order", ["payment-cards"])
    route: str | None = F(None, "Expected route name", "default")
    tls: TLSLevel | None = F(None, "Expected TLS level", "mandatory")


class PolicyTest(Model):
    """A sample message and the decision the admin expects: `validate` runs it."""

    name: str = F(..., "Test name", "card number is encrypted")
    message: str = F(..., "Path of an .eml file (relative to the config)", "tests/messages/card.eml")
    expect: Expect = F(..., "The expected decision", {"direction": "outbound", "action": "encrypt"})


GroupName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]


class RelayConfig(Model):
    """A sealrelay config, format version 1."""

    version: Literal[1] = F(..., "Version of the config format", 1)
    system: System = F(..., "Identity, listeners and local resources", {"fqdn": "mail.example.com"})
    ip_groups: dict[GroupName, list[Network]] = F(
        {},
        "Named lists of IP addresses and CIDR networks. Two names are special: `internal_servers` "
        "(peers allowed to relay mail to external domains, like Postfix's mynetworks) and "
        "`encryption_gateway` (mail from there counts as already encrypted)",
        {"internal_servers": ["10.0.0.0/8"]},
    )
    domain_groups: dict[GroupName, list[DomainPattern]] = F(
        {},
        "Named lists of domains (`*.example.com` matches subdomains)",
        {"partners": ["partner.example"]},
    )
    tls: TLS = F(TLS(), "The relay's certificate and peer verification", {"ca_bundle": "system"})
    enforced_tls: list[EnforcedTLSRule] = F(
        [],
        "Connections that must meet a TLS level",
        [{"name": "banks", "direction": "inbound", "match": {"ip_group": "banks"}}],
    )
    routes: list[Route] = F(
        [],
        "Next hops by recipient (first match wins; default: MX)",
        [{"name": "default", "recipients": "any", "next_hop": "mx"}],
    )
    delivery: Delivery = F(Delivery(), "Retries, lifetime, delay warnings and NDRs", {"retry_interval": "15m"})
    encryption: Encryption = F(Encryption(), "How mail that must be encrypted is protected", {"method": "tls"})
    dlp: DLP = F(DLP(), "Data loss protection policies", {"mode": "enforce"})
    tests: list[PolicyTest] = F(
        [],
        "Policy tests run by `validate`",
        [{"name": "card", "message": "tests/messages/card.eml", "expect": {"action": "encrypt"}}],
    )
