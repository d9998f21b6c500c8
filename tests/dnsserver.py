"""A tiny DNS server for tests: answers from a dict zone over UDP and TCP on loopback.

    server = DNSServer({("partner.example", "MX"): [(10, "mx1.partner.example")],
                        ("mx1.partner.example", "A"): ["127.0.0.1"]}).start()
    resolver = Resolver([server.host], port=server.port, timeout=1.0)
    ...
    server.stop()

or, in a test, the `dns_server` fixture (an empty zone to fill in). Zone keys are
`(name, type)`, names case-insensitive with or without the final dot; values are rdata in
zone-file text (`"127.0.0.1"`, `"10 mx1.partner.example"`, relative names are taken as
absolute) or, for MX, `(preference, exchange)` tuples. The zone may be changed while the
server runs.

It behaves like the recursive server a stub resolver talks to: CNAMEs inside the zone are
followed; a name that exists with other types (or has names below it) gets an empty answer,
any other name NXDOMAIN. A UDP answer larger than the client's EDNS buffer (512 bytes
without EDNS) is sent empty with the TC bit, so the client must retry over TCP. Names in
`servfail` get SERVFAIL; queries for names in `drop` get no answer at all (a timeout).
Every query is recorded in `queries` as `(name, type, "udp" | "tcp")`.

The sockets are bound in `start()`, so the server takes queries as soon as it returns; one
background thread serves them until `stop()` wakes it.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

Zone = dict[tuple[str, str], list[Any]]

_TTL = 60
_MAX_CNAME_CHAIN = 8


class Query(NamedTuple):
    name: str
    type: str
    transport: str


class DNSServer:
    """A DNS server on `host` (127.0.0.1 or ::1) and a free port, UDP and TCP on the same port."""

    def __init__(self, zone: Zone | None = None, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("the test DNS server listens on loopback only")
        self.host = host
        self.port = 0
        self.zone: Zone = dict(zone or {})
        self.servfail: set[str] = set()
        self.drop: set[str] = set()
        self.queries: list[Query] = []
        self.errors: list[BaseException] = []
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

    def start(self) -> DNSServer:
        """Bind UDP and TCP on one free port and start serving; returns self."""
        udp, tcp = self._bind()
        wake_read, self._wake = socket.socketpair()
        self._sockets = [udp, tcp, wake_read, self._wake]
        self._thread = threading.Thread(target=self._serve, args=(udp, tcp, wake_read), name="test-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every socket."""
        if self._thread is None:
            return
        self._wake.send(b"x")
        self._thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()
        self._thread = None

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def queried(self, name: str, type_: str | None = None, transport: str | None = None) -> bool:
        """Whether a query for `name` (of `type_`, over `transport`) has arrived."""
        key = _key(name)
        return any(q.name == key and type_ in (None, q.type) and transport in (None, q.transport) for q in self.queries)

    # -- sockets -----------------------------------------------------------------------

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on the same free port (another process may hold the TCP
        side of the port the kernel picked for UDP: then pick again)."""
        for _ in range(50):
            udp = socket.socket(self._family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(self._family, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self.port = port
            return udp, tcp
        raise OSError("no free port for both UDP and TCP")

    def _serve(self, udp: socket.socket, tcp: socket.socket, wake: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(udp, selectors.EVENT_READ, "udp")
        selector.register(tcp, selectors.EVENT_READ, "accept")
        selector.register(wake, selectors.EVENT_READ, "wake")
        buffers: dict[socket.socket, bytearray] = {}
        try:
            while True:
                for key, _ in selector.select():
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if key.data == "wake":
                        return
                    try:
                        if key.data == "udp":
                            self._on_udp(sock)
                        elif key.data == "accept":
                            conn, _ = sock.accept()
                            conn.settimeout(5)
                            buffers[conn] = bytearray()
                            selector.register(conn, selectors.EVENT_READ, "tcp")
                        elif not self._on_tcp(sock, buffers[sock]):
                            selector.unregister(sock)
                            del buffers[sock]
                            sock.close()
                    except Exception as exc:  # keep serving; the test can inspect `errors`
                        self.errors.append(exc)
        finally:
            for conn in buffers:
                conn.close()
            selector.close()

    def _on_udp(self, sock: socket.socket) -> None:
        wire, peer = sock.recvfrom(65535)
        query = dns.message.from_wire(wire)
        response = self._respond(query, "udp")
        if response is None:
            return
        limit = max(512, query.payload) if query.edns >= 0 else 512
        try:
            data = response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response = self._respond(query, "udp", truncated=True)
            assert response is not None
            data = response.to_wire(max_size=limit)
        sock.sendto(data, peer)

    def _on_tcp(self, conn: socket.socket, buffer: bytearray) -> bool:
        """Read what arrived and answer every complete query; False once the peer closed."""
        chunk = conn.recv(65535)
        if not chunk:
            return False
        buffer.extend(chunk)
        while len(buffer) >= 2:
            (length,) = struct.unpack("!H", buffer[:2])
            if len(buffer) < 2 + length:
                break
            wire = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            response = self._respond(dns.message.from_wire(wire), "tcp")
            if response is not None:
                data = response.to_wire(max_size=65535)
                conn.sendall(struct.pack("!H", len(data)) + data)
        return True

    # -- answers -----------------------------------------------------------------------

    def _respond(
        self, query: dns.message.Message, transport: str, truncated: bool = False
    ) -> dns.message.Message | None:
        question = query.question[0]
        key = _key(question.name.to_text())
        rdtype = question.rdtype
        if not truncated:
            self.queries.append(Query(key, dns.rdatatype.to_text(rdtype), transport))
        if key in {_key(name) for name in self.drop}:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        if key in {_key(name) for name in self.servfail}:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if truncated:
            response.flags |= dns.flags.TC
            return response

        zone = {(_key(name), type_.upper()): values for (name, type_), values in list(self.zone.items())}
        name = question.name
        for _ in range(_MAX_CNAME_CHAIN):
            key = _key(name.to_text())
            cname = zone.get((key, "CNAME"))
            if cname and rdtype != dns.rdatatype.CNAME:
                rrset = _rrset(name, "CNAME", cname)
                response.answer.append(rrset)
                name = rrset[0].target
                continue
            values = zone.get((key, dns.rdatatype.to_text(rdtype)))
            if values:
                response.answer.append(_rrset(name, dns.rdatatype.to_text(rdtype), values))
            elif not any(known == key or known.endswith("." + key) for known, _ in zone):
                response.set_rcode(dns.rcode.NXDOMAIN)
            break
        return response


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _rrset(name: dns.name.Name, type_: str, values: list[Any]) -> dns.rrset.RRset:
    texts = [f"{value[0]} {value[1]}" if isinstance(value, tuple) else str(value) for value in values]
    return dns.rrset.from_text_list(name, _TTL, "IN", type_, texts, origin=dns.name.root, relativize=False)


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    """A running `DNSServer` on 127.0.0.1 with an empty zone; fill `dns_server.zone` in the test."""
    server = DNSServer().start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors, f"the test DNS server failed: {server.errors!r}"
