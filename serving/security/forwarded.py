"""Who is calling and from where, as far as the server can tell: the client address and a proxy's user.

Behind a reverse proxy the TCP peer is the proxy, so the real client address is in ``X-Forwarded-For``, and a
single-sign-on proxy (oauth2-proxy and the like) names the signed-in person in ``X-Forwarded-User`` /
``X-Forwarded-Email``. Anyone can send those headers, so they are believed only when the direct peer is one of
the operator's ``trusted_proxies``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_IP_CHARS = 64
MAX_USER_CHARS = 300


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Caller:
    """The client address and, from a trusted single-sign-on proxy, the person."""

    ip: str | None
    proxy_user: str | None


class TrustedProxies:
    """The operator's trusted proxies and the rules for reading their headers."""

    def __init__(self, networks: list[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusts(self, address: str | None) -> bool:
        """Whether ``address`` (an IP, or anything else, e.g. a Unix socket name) is a trusted proxy."""
        if not self.networks or address is None:
            return False
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def caller(self, peer: str | None, forwarded_for: str | None, user: str | None, email: str | None) -> Caller:
        """The client of a request whose TCP peer is ``peer``, given its forwarding headers.

        ``X-Forwarded-For`` is read right to left, skipping trusted proxies: the first address a trusted proxy
        did not itself add is the client (the left-most entries are whatever the client claimed).
        """
        if not self.trusts(peer):
            return Caller(peer[:MAX_IP_CHARS] if peer else None, None)
        client = peer
        hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
        for hop in reversed(hops):
            if _ip(hop) is None:
                break  # garbage from the client side: stop at the last address we can vouch for
            client = str(_ip(hop))
            if not self.trusts(hop):
                break
        person = (user or "").strip() or (email or "").strip() or None
        return Caller(client[:MAX_IP_CHARS] if client else None, person[:MAX_USER_CHARS] if person else None)
