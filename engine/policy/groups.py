"""Named groups compiled for fast membership tests: IP networks and domain patterns."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class IPSet:
    """A set of networks; `contains` takes an address as text (a peer's IP)."""

    networks: tuple[IPNetwork, ...]

    @classmethod
    def of(cls, entries: Iterable[str]) -> IPSet:
        return cls(tuple(ipaddress.ip_network(e, strict=False) for e in entries))

    def contains(self, address: str | None) -> bool:
        ip = parse_ip(address) if address else None
        return ip is not None and any(ip in net for net in self.networks if net.version == ip.version)


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
            entry = entry.lower().rstrip(".")
            if entry.startswith("*."):
                suffixes.append(entry[1:])  # ".bank.example"
            else:
                exact.add(entry)
        return cls(frozenset(exact), tuple(suffixes))

    def contains(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return domain in self.exact or any(domain.endswith(s) for s in self.suffixes)


def domain_of(address: str) -> str:
    """The domain of an address (lower case); "" for the null sender or a bare local part."""
    return address.rpartition("@")[2].lower().strip("[]") if "@" in address else ""
