"""Which destinations may receive identity: the egress allow list.

    is_allowed("http://billing.svc:8080/x", settings.egress_allow)   # True
    is_allowed("api.openai.com", settings.egress_allow)               # False

Entries are exact host names, ``*.suffix`` patterns, CIDRs, and ``<single-label>`` (a host name
without dots, such as a Compose or Kubernetes service name). Decisions are cached per
destination, so the check costs a dict lookup on the request path.
"""

from __future__ import annotations

import functools
import ipaddress
from urllib.parse import urlsplit


def host_of(destination: str) -> str:
    """The host of a URL, ``host:port``, ``[v6]:port`` or gRPC target (lower case, no dot)."""
    text = destination.strip()
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if text.startswith(("unix:", "unix-abstract:")):
        return "localhost"
    if "://" in text:
        host = urlsplit(text).hostname or ""
    elif text.startswith("["):
        host = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        host = text.split(":", 1)[0]
    else:
        host = text  # a bare host, or a bare IPv6 address
    if "," in host:  # gRPC ipv4:a,b lists: every address must be allowed, the first decides
        host = host.split(",", 1)[0].rsplit(":", 1)[0]
    return host.strip().rstrip(".").lower()


@functools.lru_cache(maxsize=4096)
def is_allowed(destination: str, allow: tuple[str, ...]) -> bool:
    host = host_of(destination)
    if not host:
        return False
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
            host.split("%", 1)[0]
        )
    except ValueError:
        address = None
    for entry in allow:
        entry_l = entry.lower()
        if "/" in entry_l:
            if address is not None:
                network = ipaddress.ip_network(entry_l, strict=False)
                if address.version == network.version and address in network:
                    return True
            continue
        if address is not None:
            if entry_l == host:
                return True
            continue
        if entry_l == "<single-label>":
            if "." not in host:
                return True
        elif entry_l.startswith("*."):
            if host.endswith(entry_l[1:]):
                return True
        elif entry_l == host:
            return True
    return False
