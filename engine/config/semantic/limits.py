"""`system.limits` hang together: a timeout that lets a session start, limits that can be reached."""

from __future__ import annotations

from collections.abc import Iterator

from engine.config.diagnostics import Diagnostic, error, warning
from engine.config.semantic import Context, check

RFC_IDLE_TIMEOUT = 300  # RFC 5321 4.5.3.2.7: a server should wait at least 5 minutes for a command


@check
def limits(ctx: Context) -> Iterator[Diagnostic]:
    s = ctx.config.system
    lim = s.limits
    base = ("system", "limits")
    if lim.idle_timeout == 0:
        yield error((*base, "idle_timeout"), "an idle timeout of 0 closes every connection at once", "write 5m")
    elif lim.idle_timeout < RFC_IDLE_TIMEOUT:
        yield warning(
            (*base, "idle_timeout"),
            f"an idle timeout of {lim.idle_timeout} is shorter than the 5 minutes RFC 5321 4.5.3.2.7 asks for: "
            "slow but legitimate clients may be cut off",
        )
    if lim.max_header_size == 0:
        yield error((*base, "max_header_size"), "a header size limit of 0 refuses every message", "write 256KiB")
    if lim.max_connections_per_client > lim.max_connections:
        yield warning(
            (*base, "max_connections_per_client"),
            f"{lim.max_connections_per_client} connections per client is more than the "
            f"{lim.max_connections} allowed in total, so one client can take every connection",
            see=((*base, "max_connections"),),
        )
