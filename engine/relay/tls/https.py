"""One HTTPS exchange with a host at an address the relay resolved itself (httpx).

MTA-STS fetches a policy from `mta-sts.<domain>` and TLS-RPT posts reports to a domain's
`https:` rua. Both connect to an address from the relay's own resolver (the tests' DNS
server maps names to loopback), verify the certificate for the host name (SNI and the
`Host` header carry it), follow no redirect, and read a bounded answer.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass

import httpx


class AnswerTooLarge(Exception):
    """The answer's body passed the limit the caller set; `status` is what the answer said."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes")
        self.status = status


@dataclass(frozen=True)
class Answer:
    status: int
    media_type: str  # the Content-Type without parameters, lower case ("" when missing)
    body: bytes  # at most the caller's limit


async def exchange(
    method: str,
    host: str,
    address: str,
    port: int,
    target: str,
    context: ssl.SSLContext,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    limit: int,
    timeout: float = 60.0,
) -> Answer:
    """`method` `target` on `host` at `address`:`port`; the answer, its body read up to
    `limit` bytes (AnswerTooLarge beyond). Redirects are answers, not followed."""
    literal = f"[{address}]" if isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address) else address
    sent = {"Host": host, "User-Agent": "sealrelay", **(headers or {})}
    async with httpx.AsyncClient(verify=context, follow_redirects=False, timeout=timeout, trust_env=False) as client:
        request = client.build_request(
            method, f"https://{literal}:{port}{target}", headers=sent, content=body, extensions={"sni_hostname": host}
        )
        response = await client.send(request, stream=True)
        try:
            data = bytearray()
            async for chunk in response.aiter_bytes():  # decoded as it arrives: the limit bounds what it inflates to
                data += chunk
                if len(data) > limit:
                    raise AnswerTooLarge(response.status_code, limit)
        finally:
            await response.aclose()
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return Answer(response.status_code, media, bytes(data))
