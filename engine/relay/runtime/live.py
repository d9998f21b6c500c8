"""The live config: a validated `RelayConfig` plus everything derived from it, built once.

Caddy's rule: provision the new config completely — groups compiled, TLS contexts made,
the certificate on disk — before the switch, so the switch itself is one reference
assignment that cannot fail. A `Live` is immutable; sessions and deliveries keep the one
they started with, so a swap never changes the rules under a message in flight.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.certificates.store import ensure_certificate, load_pem, load_pfx
from engine.config.model import EnforcedTLSRule, RelayConfig
from engine.config.model.transport import NextHopHost, PfxSource, Route
from engine.config.secrets import resolve
from engine.fsutil import private_dir
from engine.memo import Kept
from engine.plan.diff import document
from engine.policy import rules
from engine.policy.groups import DomainSet, IPSet
from engine.policy.rules import TRUSTED_GROUP, gateway_group

if TYPE_CHECKING:  # the methods deliver through transfer, which needs Live: built when provisioning
    from engine.relay.methods.base import Chain
from engine.relay.dlp.policy import Policies
from engine.relay.tls.dane import Requirement
from engine.relay.tls.levels import TLSLevel, client_context, server_context

PER_DOMAIN_LEVELS = (TLSLevel.MTA_STS, TLSLevel.DANE)  # levels that mean what a domain's DNS says


@dataclass(frozen=True)
class TLSPolicy:
    """What the relay demands of one connection, and which settings demanded it."""

    level: TLSLevel
    min_protocol: str = "TLSv1.2"
    min_bits: int = 128
    sources: tuple[str, ...] = ()
    # the MX host's validated TLSA records the peer's chain must match (`dane.check`), set
    # when a setting asks for `dane` and the host has usable ones; with level `dane` they
    # alone authenticate the peer, with `secure` (another setting's) the CA chain must too
    dane: Requirement | None = None

    def tighten(self, level: str, min_protocol: str, min_bits: int, source: str) -> TLSPolicy:
        new_level = TLSLevel.strictest(self.level, level)
        proto = rules.strongest_protocol(self.min_protocol, min_protocol)
        return TLSPolicy(new_level, proto, max(self.min_bits, min_bits), (*self.sources, source), self.dane)

    def __str__(self) -> str:
        return f"{self.level.value} (>= {self.min_protocol}, >= {self.min_bits}-bit)"


@dataclass(frozen=True)
class CompiledRoute:
    name: str
    domains: DomainSet | None  # None: every recipient
    next_hop: NextHopHost | None  # None: the recipient domain's MX
    tls: TLSLevel
    route: Route | None


ENVELOPES_KEPT = 1024  # envelopes (sender, recipients, peer) whose direction and DLP facts a Live keeps


@dataclass(frozen=True)
class Live:
    """One config version, provisioned. Build with `provision`."""

    version: int
    config: RelayConfig
    base_dir: Path
    data_dir: Path
    ip_groups: dict[str, IPSet]
    domain_groups: dict[str, DomainSet]
    internal: DomainSet
    trusted: IPSet
    gateway: IPSet
    routes: tuple[CompiledRoute, ...]
    policies: Policies
    server_tls: ssl.SSLContext | None
    certificate_dir: Path | None
    methods: Chain  # the encryption methods of this version (engine.relay.methods.build_chain)
    _client_contexts: dict[tuple[str, str, int], ssl.SSLContext | None]
    # what DLP's judgement makes of an envelope (engine.relay.dlp.decide), by envelope
    envelopes: Kept[tuple, tuple] = field(default_factory=lambda: Kept(ENVELOPES_KEPT), compare=False, repr=False)

    # -- classification -----------------------------------------------------------------

    def is_internal(self, domain: str) -> bool:
        return self.internal.contains(domain)

    def may_relay(self, peer_ip: str) -> bool:
        """Whether a peer may send to external recipients (else: relay access denied)."""
        return self.trusted.contains(peer_ip) or self.gateway.contains(peer_ip)

    # -- TLS policy -------------------------------------------------------------------------

    def inbound_policy(self, peer_ip: str, sender_domain: str) -> TLSPolicy | None:
        """The enforced-TLS demand on an inbound peer, or None when no rule matches it."""
        policy = None
        for rule in self._enforced("inbound", peer_ip, sender_domain):
            policy = (policy or TLSPolicy(TLSLevel.NONE)).tighten(
                rule.level, rule.min_protocol, rule.min_cipher_bits, f"enforced_tls.{rule.name}"
            )
        return policy

    def outbound_policy(
        self,
        route: CompiledRoute,
        domain: str,
        hop_ip: str,
        floor=None,
        resolved: Mapping[TLSLevel, tuple[TLSLevel, str]] | None = None,
        dane: Requirement | None = None,
    ) -> TLSPolicy:
        """What delivery to `domain` via `hop_ip` must achieve: the route, the enforced-TLS
        rules, and the `floor` a method's sealed copy demands (methods.base.TLSFloor).

        `resolved`: what the per-domain levels (`mta-sts`, `dane`) stand for at this hop and
        the policy that says so (`mtasts.verdict`, `dane.verdict`); each setting asking for
        one asks for that level instead, so the strictest of the real levels wins. A level
        not resolved stays (enforced as `secure`). `dane`: the TLSA records the chain must
        match when `dane` resolved to level `dane`."""

        def real(level: str) -> str:
            return resolved[level][0] if resolved and level in resolved else level

        policy = TLSPolicy(
            TLSLevel.parse(real(route.tls)),
            sources=(f"routes.{route.name}" if route.route else "tls.outbound_default",),
        )
        for rule in self._enforced("outbound", hop_ip, domain):
            level = real(rule.level)
            policy = policy.tighten(level, rule.min_protocol, rule.min_cipher_bits, f"enforced_tls.{rule.name}")
        if floor is not None:
            policy = policy.tighten(real(floor.level), floor.min_protocol, floor.min_bits, floor.source)
        sources = tuple(source for _, source in (resolved or {}).values() if source)
        uses_dane = dane is not None and policy.level.rank == TLSLevel.DANE.rank
        if sources or uses_dane:
            kept = dane if uses_dane else None
            policy = TLSPolicy(policy.level, policy.min_protocol, policy.min_bits, (*policy.sources, *sources), kept)
        return policy

    def per_domain_levels(self, route: CompiledRoute, domain: str, hop_ip: str, floor=None) -> frozenset[TLSLevel]:
        """Which per-domain levels (`mta-sts`, `dane`) the settings behind `outbound_policy`
        ask for: each must be looked up for the domain or MX host before delivery."""
        asked = {floor.level} if floor is not None else set()
        if self._per_domain_configured:  # most configs: no rule lookup on every hop
            asked.update((route.tls, *(rule.level for rule in self._enforced("outbound", hop_ip, domain))))
        return frozenset(level for level in PER_DOMAIN_LEVELS if level in asked)

    @functools.cached_property
    def _per_domain_configured(self) -> bool:
        """Whether any route, enforced-TLS rule or the default names `mta-sts` or `dane`."""
        config = self.config
        levels = {config.tls.outbound_default, *(r.tls for r in config.routes), *(r.level for r in config.enforced_tls)}
        return any(level in levels for level in PER_DOMAIN_LEVELS)

    def client_context(self, policy: TLSPolicy) -> ssl.SSLContext | None:
        """The context for `policy`'s handshake. At level `dane` with TLSA records the chain
        is checked against them after the handshake (`dane.check`), not against a CA."""
        level = TLSLevel.MANDATORY if policy.level is TLSLevel.DANE and policy.dane else policy.level.enforced
        key = (level.value, policy.min_protocol, policy.min_bits)
        context = self._client_contexts.get(key)
        if context is None and key not in self._client_contexts:
            context = _client(self.config, self.base_dir, *key)  # a combination not foreseen
        return context

    def _enforced(self, direction: str, ip: str, domain: str) -> list[EnforcedTLSRule]:
        """The enforced-TLS rules for an `inbound` or `outbound` connection (`rules.enforced_rules`)."""
        return rules.enforced_rules(self.config.enforced_tls, direction, ip, domain, self.ip_groups, self.domain_groups)

    # -- routing ------------------------------------------------------------------------

    def route_for(self, domain: str) -> CompiledRoute:
        """The route mail to `domain` takes (first match wins; the last route takes any)."""
        return rules.route_for(self.routes, domain)


def provision(
    config: RelayConfig, *, base_dir: Path, version: int, tls: bool = True, previous: Live | None = None
) -> Live:
    """Build everything the relay derives from `config`. Raises on what cannot be built
    (an unreadable certificate, a missing secret): then the old config stays in force.

    `tls=False` builds only the policy side (groups, routes, DLP) and touches no file: what
    `simulate` and `explain` need. `previous`, the version running now: what is derived
    from sections that did not change (the groups; the DLP policies, given the same groups)
    is taken from it rather than built again (`_unchanged`).
    """
    data_dir = (base_dir / config.system.data_dir).resolve()
    same = _unchanged(config, previous, data_dir) if tls else frozenset()
    if "groups" in same:
        ip_groups, domain_groups = previous.ip_groups, previous.domain_groups
    else:
        ip_groups = {name: IPSet.of(entries) for name, entries in config.ip_groups.items()}
        domain_groups = {name: DomainSet.of(entries) for name, entries in config.domain_groups.items()}
    cert_dir = None
    if tls:
        private_dir(data_dir)
        cert_dir = _certificate(config, base_dir, data_dir)
    return Live(
        version=version,
        config=config,
        base_dir=base_dir,
        data_dir=data_dir,
        ip_groups=ip_groups,
        domain_groups=domain_groups,
        internal=DomainSet.of(config.system.internal_domains),
        trusted=ip_groups.get(TRUSTED_GROUP, IPSet(())),
        gateway=ip_groups.get(gateway_group(config), IPSet(())),
        routes=_routes(config, domain_groups),
        policies=previous.policies
        if "dlp" in same
        else Policies(config, ip_groups, domain_groups, cache_dir=data_dir / "dlp" if tls else None),
        server_tls=_server_tls(cert_dir, config.tls.server_ciphers) if cert_dir else None,
        certificate_dir=cert_dir,
        methods=_methods(config, base_dir),
        _client_contexts=_client_contexts(config, base_dir) if tls else {},
    )


def _unchanged(config: RelayConfig, previous: Live | None, data_dir: Path) -> frozenset[str]:
    """What `previous` derived that `config` would derive alike: `groups` when ip_groups and
    domain_groups are equal, and `dlp` when the dlp section is equal too (the policies read
    the groups). Compared on the canonical JSON both configs have already (`document`).
    Only a version provisioned with its files (`tls`) on the same data directory qualifies:
    its DLP database lives there."""
    if previous is None or previous.data_dir != data_dir or previous.certificate_dir is None:
        return frozenset()
    new, old = document(config).data, document(previous.config).data
    if any(new.get(key) != old.get(key) for key in ("ip_groups", "domain_groups")):
        return frozenset()
    return frozenset({"groups", "dlp"} if new.get("dlp") == old.get("dlp") else {"groups"})


def _certificate(config: RelayConfig, base_dir: Path, data_dir: Path) -> Path:
    source = config.tls.certificate
    if hasattr(source, "self_signed"):
        return ensure_certificate(data_dir, config.system.fqdn, source.self_signed.key, source.self_signed.valid_days)
    if isinstance(source, PfxSource):
        path = base_dir / source.pfx.path
        bundle = load_pfx(path.read_bytes(), resolve(source.pfx.password, base_dir))
    else:
        pem = source.pem
        password = resolve(pem.key_password, base_dir) if pem.key_password else None
        bundle = load_pem((base_dir / pem.certificate).read_bytes(), (base_dir / pem.key).read_bytes(), password)
    target = data_dir / "tls" / f"imported-{bundle.describe().fingerprint_sha256.replace(':', '')[:16].lower()}"
    if not (target / "cert.pem").exists():
        bundle.to_pem_files(target)
    return target


_SERVER: dict[tuple, ssl.SSLContext] = {}
_SERVER_LOCK = threading.Lock()


def _server_tls(cert_dir: Path, ciphers: str) -> ssl.SSLContext:
    """The listeners' context, shared with earlier versions while the certificate and key
    files are the same (path, inode, size, modification and change times) and so are the
    ciphers: loading the chain took 1 ms of every swap, 4 on a loaded machine. A renewed
    certificate is a new file (written atomically), hence a new context."""
    cert, key = cert_dir / "cert.pem", cert_dir / "key.pem"
    seen = []
    for file in (cert, key):
        st = file.stat()
        seen.append((str(file), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    stamps = tuple(seen)
    with _SERVER_LOCK:  # provisioning runs in worker threads
        found = _SERVER.get((stamps, ciphers))
    if found is not None:
        return found
    context = server_context(cert, key, ciphers=ciphers)
    with _SERVER_LOCK:
        if len(_SERVER) > 16:
            _SERVER.clear()
        _SERVER[(stamps, ciphers)] = context
    return context


def _routes(config: RelayConfig, domain_groups: dict[str, DomainSet]) -> tuple[CompiledRoute, ...]:
    """The routing table (`rules.routing_table`, the implicit default route last), with next hops."""
    return tuple(
        CompiledRoute(
            choice.name,
            choice.domains,
            choice.route.next_hop if choice.route and isinstance(choice.route.next_hop, NextHopHost) else None,
            TLSLevel.parse(choice.tls),
            choice.route,
        )
        for choice in rules.routing_table(config.routes, domain_groups, config.tls.outbound_default)
    )


def ca_bundle_of(config: RelayConfig, base_dir: Path) -> str:
    """`tls.ca_bundle` as the TLS code takes it: "system", or the file's path (relative to the config)."""
    bundle = config.tls.ca_bundle
    return bundle if bundle == "system" else str(Path(base_dir) / bundle)


_CONTEXTS: dict[tuple, ssl.SSLContext | None] = {}
_CONTEXTS_LOCK = threading.Lock()


def _client(config: RelayConfig, base_dir: Path, level: str, proto: str, bits: int) -> ssl.SSLContext | None:
    """A client context, shared with earlier config versions when nothing it depends on
    changed: loading a CA bundle takes ~50 ms, and a swap should take a few. A CA file is
    identified by its path, size and modification time, so an edited bundle is reloaded."""
    ca = ca_bundle_of(config, base_dir)
    stamp = None
    if ca != "system":
        try:
            st = Path(ca).stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
    key = (level, proto, bits, ca, stamp)
    with _CONTEXTS_LOCK:  # provisioning runs in worker threads, lookups in the event loop
        if key in _CONTEXTS:
            return _CONTEXTS[key]
    context = client_context(level, ca_bundle=ca, min_protocol=proto, min_cipher_bits=bits)
    with _CONTEXTS_LOCK:
        if len(_CONTEXTS) > 256:
            _CONTEXTS.clear()
        _CONTEXTS[key] = context
    return context


def _client_contexts(config: RelayConfig, base_dir: Path) -> dict[tuple[str, str, int], ssl.SSLContext | None]:
    """Contexts for every combination the config can produce, built before the switch."""
    levels = {"none", "opportunistic", config.tls.outbound_default, config.encryption.tls.level}
    levels |= {"secure", config.tls.mta_sts.fallback}  # what `mta-sts` stands for per domain
    levels |= {"mandatory", config.tls.dane.fallback} - {"refuse"}  # and `dane` (a TLSA-checked `mandatory`)
    levels |= {r.tls for r in config.routes if r.tls} | {r.level for r in config.enforced_tls}
    protocols = {"TLSv1.2", config.encryption.tls.min_protocol} | {r.min_protocol for r in config.enforced_tls}
    bits = {128, config.encryption.tls.min_cipher_bits} | {r.min_cipher_bits for r in config.enforced_tls}
    out = {}
    for level in levels:
        enforced = TLSLevel.parse(level).enforced.value
        for proto in protocols:
            for b in bits:
                out[(enforced, proto, b)] = _client(config, base_dir, enforced, proto, b)
    return out


def _methods(config: RelayConfig, base_dir: Path) -> Chain:
    from engine.relay.methods import build_chain

    return build_chain(config, base_dir)
