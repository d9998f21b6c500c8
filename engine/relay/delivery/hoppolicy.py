"""Each hop's TLS policy where a setting asks for a per-domain level (`mta-sts`, `dane`).

`Live.outbound_policy` knows what the config demands; `mta-sts` and `dane` stand for what the
recipient domain's DNS says, so they are decided per hop here: the domain's MTA-STS policy
(`mtasts.verdict`, looked up once per delivery) and the MX host's TLSA records (`dane.verdict`,
looked up once per host and port). The delivery loop (`deliver`) and `plan --probe` (`probe`)
both ask `HopPolicies.for_hop`, so a probe meets a peer exactly as delivery would.

A hop either gets a policy, or a refusal: the failure (deferred, nothing sent), with the
TLS-RPT result type and short reason it counts as. `described` is the TLS-RPT policy of a hop
DANE decided (its TLSA records); `tlsa` the answer DANE was decided on, for the probe's report.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.relay.delivery.failures import Failure, because
from engine.relay.delivery.resolve import Hop
from engine.relay.runtime.decisionlog import emit
from engine.relay.runtime.live import Live, TLSPolicy
from engine.relay.tls import dane, mtasts, tlsrpt
from engine.relay.tls.levels import TLSLevel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HopPolicy:
    """What one hop must achieve, or why it gets nothing (`refusal`)."""

    policy: TLSPolicy
    refusal: Failure | None = None
    result: str = ""  # the refusal's TLS-RPT result type
    reason: str = ""  # and its short reason (failure-reason-code)
    described: dict | None = None  # TLS-RPT's policy object when DANE decided (None: MTA-STS's or none)
    tlsa: dane.Lookup | None = None  # the TLSA answer `dane` was decided on (None: not asked, or refused before)


class HopPolicies:
    """The per-domain levels of one delivery to `domain` along `route`, hop by hop."""

    def __init__(
        self,
        live: Live,
        route,
        domain: str,
        floor,
        resolver: dane.TLSAResolver,
        mta_sts: Callable[[], Awaitable[mtasts.Lookup]],
    ) -> None:
        self.live, self.route, self.domain, self.floor = live, route, domain, floor
        self._resolver = resolver
        self._mta_sts = mta_sts
        self.sts: mtasts.Lookup | None = None  # the domain's MTA-STS lookup, once asked
        self._tlsa: dict[tuple[str, int], dane.Lookup] = {}

    async def for_hop(self, hop: Hop) -> HopPolicy:
        live, route, domain = self.live, self.route, self.domain
        asked = live.per_domain_levels(route, domain, hop.address, self.floor)
        if not asked:
            return HopPolicy(live.outbound_policy(route, domain, hop.address, self.floor))
        resolved: dict[TLSLevel, tuple[TLSLevel, str]] = {}
        requirement = described = found = None
        if TLSLevel.MTA_STS in asked:
            sts = self.sts = self.sts or await self._mta_sts()
            said = mtasts.verdict(sts, hop.host, TLSLevel.parse(live.config.tls.mta_sts.fallback))
            if said.level is None:
                failure = because("tls", f"{said.reason}; not sent ({sts.note})").located(hop)
                return self._refused(hop, failure, "validation-failure", said.reason, None)
            if said.reason:
                log.warning("%s: %s; delivered anyway, as testing mode asks", hop, said.reason)
                emit("mta-sts", domain=domain, mode="testing", host=hop.host, would_fail=said.reason)
            resolved[TLSLevel.MTA_STS] = (said.level, said.source)
        if TLSLevel.DANE in asked:
            found = await self._tlsa_of(hop)
            said = dane.verdict(found, domain, dane.fallback_of(live.config.tls.dane.fallback), hop_secure=hop.secure)
            if found.state in ("usable", "unusable") and hop.secure:
                described = tlsrpt.tlsa_policy(hop.host, found.records)
            if said.level is None:  # a broken answer (DANE is never skipped), or `refuse` without records
                failed = found.state == "failed"
                why = "not sent (DANE cannot be skipped)" if failed else "not sent"
                failure = because("tls", f"{said.reason}; {why}").located(hop)
                result = "dnssec-invalid" if failed else "dane-required"
                return self._refused(hop, failure, result, said.reason, described, found)
            resolved[TLSLevel.DANE] = (said.level, said.source)
            requirement = said.requirement
        policy = live.outbound_policy(route, domain, hop.address, self.floor, resolved, requirement)
        return HopPolicy(policy, described=described, tlsa=found)

    async def _tlsa_of(self, hop: Hop) -> dane.Lookup:
        """The MX host's TLSA records, asked once per host and port, and only for a hop DNSSEC
        validated (for any other, DANE does not apply whatever the records say)."""
        if not hop.secure:
            return dane.Lookup(hop.host, hop.port, "none")
        key = (hop.host, hop.port)
        if key not in self._tlsa:
            self._tlsa[key] = await dane.lookup(self._resolver, hop.host, hop.port)
        return self._tlsa[key]

    def _refused(
        self, hop: Hop, failure: Failure, result: str, reason: str, described: dict | None, tlsa=None
    ) -> HopPolicy:
        policy = self.live.outbound_policy(self.route, self.domain, hop.address, self.floor)
        return HopPolicy(policy, failure, result, reason, described, tlsa)
