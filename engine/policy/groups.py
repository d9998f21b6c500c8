"""Named groups compiled for fast membership tests: IP networks and domain patterns.

The one definition of what a group entry matches, for the relay (which peers and domains a
rule covers) and the downgrade guard (whether a removed entry is still covered by the rest).
Domain entries: `example.com` matches that domain exactly (case and a trailing dot ignored);
`*.example.com` matches every subdomain at any depth but not `example.com` itself. Any other
entry, `.example.com` included, is compared exactly and so matches no real domain.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from engine.memo import Kept

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_ANSWERS_KEPT = 4096  # addresses whose membership an IPSet keeps (as parse_ip's cache)


@dataclass(frozen=True)
class IPSet:
    """A set of networks; `contains` takes an address as text (a peer's IP)."""

    networks: tuple[IPNetwork, ...]
    # answers by address: asked per command and per message, for the same peers all day
    _answers: Kept[str, bool] = field(default_factory=lambda: Kept(_ANSWERS_KEPT), compare=False, repr=False)

    @classmethod
    def of(cls, entries: Iterable[str]) -> IPSet:
        return cls(tuple(ipaddress.ip_network(e, strict=False) for e in entries))

    def contains(self, address: str | None) -> bool:
        if not address:
            return False
        found = self._answers.get(address)
        if found is None:
            ip = parse_ip(address)
            found = self._answers.keep(
                address, ip is not None and any(ip in net for net in self.networks if net.version == ip.version)
            )
        return found

    def covers(self, entry: str) -> bool:
        """Whether every address of `entry` (an address or network) is already in the set,
        in one network or several (two /25 cover their /24)."""
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
        same = [other for other in self.networks if other.version == net.version]
        # Merged, the networks are the largest aligned blocks of the set: a block inside the set
        # lies inside one of them.
        return any(net.subnet_of(block) for block in ipaddress.collapse_addresses(same))


@lru_cache(maxsize=4096)
def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer address as an IP (IPv4-mapped IPv6 as IPv4), None if it is not one. Cached:
    the same peers come back all day."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class DomainSet:
    """Exact domains and `*.suffix` wildcards (a wildcard matches subdomains, not the suffix)."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]

    @classmethod
    def of(cls, entries: Iterable[str]) -> DomainSet:
        exact, suffixes = set(), []
        for entry in entries:
            name, suffix = _pattern(entry)
            if suffix is None:
                exact.add(name)
            else:
                suffixes.append(suffix)
        return cls(frozenset(exact), tuple(suffixes))

    def contains(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return domain in self.exact or any(domain.endswith(s) for s in self.suffixes)

    def covers(self, entry: str) -> bool:
        """Whether every domain `entry` matches is already in the set (a subdomain under a
        wildcard, a narrower wildcard under a wider one, the same entry in another case)."""
        name, suffix = _pattern(entry)
        if suffix is None:
            return self.contains(name)
        return any(suffix.endswith(s) for s in self.suffixes)


def _pattern(entry: str) -> tuple[str, str | None]:
    """(the entry normalised, the suffix a wildcard matches or None for an exact entry)."""
    entry = entry.lower().rstrip(".")
    return entry, (entry[1:] if entry.startswith("*.") else None)  # "*.bank.example" -> ".bank.example"


def domain_of(address: str) -> str:
    """The domain of an address (lower case); "" for the null sender or a bare local part."""
    return address.rpartition("@")[2].lower().strip("[]") if "@" in address else ""
