"""Listeners, groups, routes, enforced TLS and delivery timings hang together."""

from __future__ import annotations

import functools
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from engine.config.diagnostics import Diagnostic, error, warning
from engine.config.model import RelayConfig
from engine.config.model.base import is_ip
from engine.config.model.transport import DomainGroupMatch, NextHopHost
from engine.config.semantic import Context, check

_INBOUND_LEVELS = ("opportunistic", "mandatory", "verify")
_OLD_PROTOCOLS = ("TLSv1", "TLSv1.1")


@check
def system(ctx: Context) -> Iterator[Diagnostic]:
    s = ctx.config.system
    if "." not in s.fqdn.strip("."):
        yield error(
            ("system", "fqdn"),
            f"`{s.fqdn}` is not fully qualified",
            "write the full name, like mail.example.com",
        )
    ports = {(lst.address, lst.port): ("system", "listeners", i, "port") for i, lst in enumerate(s.listeners)}
    for name in ("admin", "portal", "metrics"):
        endpoint = getattr(s, name)
        clash = ports.get((endpoint.address, endpoint.port))
        if clash:
            whose = "an SMTP listener" if clash[1] == "listeners" else f"system.{clash[1]}"
            yield error(
                ("system", name, "port"),
                f"port {endpoint.port} is already used by {whose}",
                see=(clash,),
            )
        ports[(endpoint.address, endpoint.port)] = ("system", name, "port")
    seen: set[str] = set()
    for i, domain in enumerate(s.internal_domains):
        if domain.lower() in seen:
            yield warning(("system", "internal_domains", i), f"`{domain}` is listed twice")
        seen.add(domain.lower())


@check
def routes(ctx: Context) -> Iterator[Diagnostic]:
    catch_all = None
    for i, route in enumerate(ctx.config.routes):
        hop = route.next_hop
        if isinstance(hop, NextHopHost) and hop.mx_lookup and is_ip(hop.host):
            yield error(
                ("routes", i, "next_hop", "mx_lookup"),
                f"MX lookup needs a host name, and `{hop.host}` is an IP address",
                "remove `mx_lookup`, or give a host name",
            )
        if catch_all is not None:
            yield warning(
                ("routes", i, "name"),
                f"route `{route.name}` is never used: route `{ctx.config.routes[catch_all].name}` above matches every recipient",
                "routes are tried in order: move the `recipients: any` route last",
            )
        elif route.recipients == "any":
            catch_all = i


@check
def enforced_tls(ctx: Context) -> Iterator[Diagnostic]:
    for i, rule in enumerate(ctx.config.enforced_tls):
        if rule.direction in ("inbound", "both") and rule.level not in _INBOUND_LEVELS:
            yield error(
                ("enforced_tls", i, "level"),
                f"level `{rule.level}` cannot be required of inbound peers",
                "inbound rules take `opportunistic`, `mandatory` or `verify` (a trusted client certificate)",
            )
        if rule.direction in ("inbound", "both") and isinstance(rule.match, DomainGroupMatch):
            yield warning(
                ("enforced_tls", i, "match"),
                "an inbound peer is matched by the sender domain it claims, which it chooses itself",
                "match inbound peers by `ip_group`",
            )
        if rule.min_protocol in _OLD_PROTOCOLS:
            yield warning(
                ("enforced_tls", i, "min_protocol"),
                f"{rule.min_protocol} is deprecated (RFC 8996)",
                "use TLSv1.2",
            )
    if ctx.config.encryption.tls.min_protocol in _OLD_PROTOCOLS:
        yield warning(
            ("encryption", "tls", "min_protocol"),
            f"{ctx.config.encryption.tls.min_protocol} is deprecated (RFC 8996)",
            "use TLSv1.2",
        )


@check
def delivery(ctx: Context) -> Iterator[Diagnostic]:
    d = ctx.config.delivery
    if d.retry_interval > d.max_retry_interval:
        yield error(
            ("delivery", "retry_interval"),
            f"retry_interval ({d.retry_interval}) is longer than max_retry_interval ({d.max_retry_interval})",
        )
    if d.retry_interval >= d.max_queue_lifetime:
        yield error(
            ("delivery", "max_queue_lifetime"),
            f"max_queue_lifetime ({d.max_queue_lifetime}) leaves no time for a retry (retry_interval is {d.retry_interval})",
        )
    if d.delay_warning_after is not None and d.delay_warning_after >= d.max_queue_lifetime:
        yield warning(
            ("delivery", "delay_warning_after"),
            f"no delay warning is ever sent: messages expire after {d.max_queue_lifetime}",
            "make it shorter than max_queue_lifetime, or set it to null",
        )
    concurrency = d.destination_concurrency
    if concurrency.initial > concurrency.limit:
        yield error(
            ("delivery", "destination_concurrency", "initial"),
            f"initial ({concurrency.initial}) is above limit ({concurrency.limit})",
            "a destination starts at `initial` and grows up to `limit`",
        )
    for stage, seconds in d.timeouts:
        if seconds == 0:
            yield error(("delivery", "timeouts", stage), "a timeout of 0s fails every delivery", "give at least 1s")
    if d.connect_timeout is not None:
        yield warning(
            ("delivery", "connect_timeout"),
            "deprecated: `connect_timeout` is `timeouts.connect` now (it still works)",
            f"write `timeouts: {{connect: {d.connect_timeout}}}` instead",
        )
    if d.command_timeout is not None:
        yield warning(
            ("delivery", "command_timeout"),
            "deprecated: `command_timeout` sets every command stage of `timeouts` not set there (it still works)",
            "write `timeouts:` with the stages you mean (greeting, helo, starttls, mail, rcpt, data, data_done)",
        )


_LEVEL_KEYS = ("tls", "level", "outbound_default", "fallback")


@functools.cache
def _levelless_sections() -> frozenset[str]:
    """The sections whose models name no level key and hold no mapping of the user's keys:
    no `dane` level can be written there, and the walk below skips them (`dlp`, nearly all
    of a large config: dumping and walking it took 7 ms of every apply)."""

    def types(annotation: Any) -> Iterator[Any]:
        yield annotation
        for arg in typing.get_args(annotation):
            yield from types(arg)

    def may_hold(annotation: Any, seen: set[type]) -> bool:
        for tp in types(annotation):
            if tp is Any or tp is dict or typing.get_origin(tp) is dict:
                return True
            if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
                seen.add(tp)
                for name, field in tp.model_fields.items():
                    if (field.alias or name) in _LEVEL_KEYS or may_hold(field.annotation, seen):
                        return True
        return False

    return frozenset(name for name, field in RelayConfig.model_fields.items() if not may_hold(field.annotation, set()))


@check
def dane_without_dnssec(ctx: Context) -> Iterator[Diagnostic]:
    """`dane` reads TLSA records only through a resolver declared validating
    (`system.dns.dnssec`); without one every MX host gets `tls.dane.fallback`. Say so where
    the level is used, rather than let it validate silently."""
    dns = ctx.config.system.dns
    if dns is not None and dns.dnssec:
        return

    def walk(value: object, path: tuple) -> Iterator[tuple]:
        if isinstance(value, dict):
            for key, item in value.items():
                if item == "dane" and key in _LEVEL_KEYS:
                    yield (*path, key)
                yield from walk(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, (*path, index))

    fallback = ctx.config.tls.dane.fallback
    for path in walk(ctx.config.model_dump(mode="json", by_alias=True, exclude=_levelless_sections()), ()):
        yield warning(
            path,
            f"`dane` needs a DNSSEC-validating resolver and `system.dns.dnssec` is off: TLSA records are "
            f"not read, and every MX host gets `tls.dane.fallback` ({fallback})",
            "name a validating resolver in `system.dns` with `dnssec: true` (docs/tls.md)",
        )
