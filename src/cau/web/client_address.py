"""Which address a request comes from, for sign-in throttling and the audit trail.

By default the peer of the TCP connection, and nothing a client writes: an `X-Forwarded-For`
header is a claim anyone can make, and trusting it would let one client pose as many (escaping
the per-address limit) or as a victim (spending the victim's). Behind a reverse proxy every peer
is the proxy; its operator names it (`cau serve --trusted-proxy ADDRESS|NETWORK`) and then, for
requests from it, the client is the right-most `X-Forwarded-For` entry that is not itself a trusted
proxy: entries to its left were written by whoever the proxy was talking to, and may be forged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import Request

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"


def parse_trusted_proxies(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or networks (`10.0.0.5`, `10.1.0.0/16`, `::1`); ValueError names a bad one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IP address or network (e.g. 10.0.0.5 or 10.1.0.0/16)"
            ) from None
    return tuple(out)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: str, proxies: tuple[IPNetwork, ...]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in net for net in proxies)


def client_address(request: Request, trusted_proxies: tuple[IPNetwork, ...] = ()) -> str:
    peer = request.client.host if request.client else UNKNOWN
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    hops = [h.strip() for value in request.headers.getlist("x-forwarded-for") for h in value.split(",")]
    for hop in reversed(hops):
        if _trusted(hop, trusted_proxies):
            continue
        ip = _ip(hop)
        # A hop that is not an address (a proxy's "unknown", garbage) cannot be told apart from
        # another: count it as the proxy itself rather than as a name the client chose.
        return str(ip) if ip is not None else peer
    return peer
