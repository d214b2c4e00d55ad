"""Which destinations may receive identity: the egress allow list, and how a destination is read.

    is_allowed("http://billing.svc:8080/x", settings.egress_allow)            # True
    is_allowed("api.openai.com", settings.egress_allow)                        # False
    is_allowed("ipv4:127.0.0.1:1,8.8.8.8:1", settings.egress_allow)            # False

Entries are exact host names, ``*.suffix`` patterns, addresses, CIDRs, and ``<single-label>``
(a host name without dots, such as a Compose or Kubernetes service name).

A destination (a URL, ``host:port``, a host, or a gRPC target) is judged by EVERY host it may
reach, each read the way the resolver and the client libraries read it, never by its spelling:

* numbers are addresses as ``inet_aton`` reads them (``2130706433``, ``0x7f000001``,
  ``0177.1``, ``127.1`` are all 127.0.0.1): a host whose last label is a number is an IPv4
  address or nothing;
* IDNA dots (U+3002, U+FF0E, U+FF61) are dots and non-ASCII hosts are judged in every IDNA
  form a client library sends (IDNA 2003 and UTS 46), fullwidth digits included;
* one trailing dot is the same name (but a single label with one is a top-level name, not a
  local service); percent-encoded hosts are decoded, the userinfo of a URL is ignored,
  brackets and zone ids are removed from IPv6 literals, an IPv4-mapped IPv6 address is the
  IPv4 address, and case is ignored;
* a gRPC target names its hosts as gRPC's resolvers do: ``ipv4:``/``ipv6:`` lists (every
  address), ``dns:[//server/]host[:port]``, ``unix:`` sockets (this machine: ``localhost``),
  and anything without a known scheme is a ``dns:///`` target.

Anything that cannot be read with certainty (an empty label, a number out of range, a
character no resolver accepts, a second ``@``, a backslash, an unknown gRPC resolver such as
``xds:``) is not allowed: identity fails closed. Decisions are cached per destination and
allow list, so on the request path the check is a dict lookup.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import NamedTuple
from urllib.parse import unquote

from otel_identity import _config

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SINGLE_LABEL = "<single-label>"
# What a local gRPC socket is judged as: it reaches this machine, as a loopback address does.
LOCAL_SOCKET = "localhost"

_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_LABEL = re.compile(r"[a-z0-9_-]+\Z")
_NUMBER = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)\Z")
_PORT = re.compile(r"[0-9]*\Z")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# Characters that never belong in a destination (control characters, space, backslash):
# different readers skip, stop at or translate them, so the reading is not certain.
_NEVER = re.compile(r"[\x00-\x20\x7f\\]")
# gRPC resolvers whose addresses come from elsewhere (a control plane, a VM socket): their
# targets name no host to judge.
_GRPC_UNJUDGED = frozenset({"xds", "google-c2p", "vsock", "fake", "sockaddr"})
_GRPC_LOCAL = frozenset({"unix", "unix-abstract"})
_GRPC_SCHEMES = frozenset({"dns", "ipv4", "ipv6"}) | _GRPC_LOCAL | _GRPC_UNJUDGED
# What server.address says for a destination that cannot be read (its text may hold a password).
UNREADABLE = "<unreadable>"


class Host(NamedTuple):
    """One host as the resolver reads it: an address, or a lower-case name without its
    trailing dot (``absolute`` says it had one)."""

    name: str
    address: Address | None = None
    absolute: bool = False


# --- reading hosts --------------------------------------------------------------------------


def _inet_aton(labels: list[str]) -> ipaddress.IPv4Address | None:
    """``labels`` as ``inet_aton`` reads them (1-4 numbers: hex, octal, decimal), or None."""
    if not 1 <= len(labels) <= 4:
        return None
    numbers: list[int] = []
    for label in labels:
        if label.startswith("0x"):
            digits, base = label[2:] or "0", 16
        elif len(label) > 1 and label.startswith("0"):
            digits, base = label[1:], 8
        else:
            digits, base = label, 10
        try:
            numbers.append(int(digits, base))
        except ValueError:
            return None  # "08", "0xg": not a number to the resolver either
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ip_host(address: Address) -> Host:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # the kernel sends it to the IPv4 address
    return Host(str(address), address)


def _ipv6(text: str) -> Host | None:
    """An IPv6 literal (brackets removed), its zone id (``%eth0``, ``%25eth0``) ignored."""
    try:
        return _ip_host(ipaddress.IPv6Address(text.split("%", 1)[0]))
    except ValueError:
        return None


def _ascii_host(host: str) -> Host | None:
    """An ASCII host, lower case, as the resolver reads it."""
    labels = host.split(".")
    absolute = len(labels) > 1 and labels[-1] == ""
    if absolute:
        labels.pop()
    if _NUMBER.match(labels[-1]):
        # A name that ends in a number is an address to the resolver, or nothing it can reach.
        address = _inet_aton(labels)
        return None if address is None else Host(str(address), address)
    if not all(_LABEL.match(label) for label in labels):
        return None
    return Host(".".join(labels), None, absolute)


def _idna_forms(host: str) -> list[str] | None:
    """Every ASCII form a client library may send a non-ASCII host as (None: one fails)."""
    forms: list[str] = []
    try:
        forms.append(host.encode("idna").decode("ascii"))  # IDNA 2003: stdlib, urllib, asyncio
    except UnicodeError:
        return None
    try:
        import idna  # UTS 46, as requests, urllib3 and httpx encode
    except ImportError:
        return forms
    try:
        forms.append(idna.encode(host, uts46=True).decode("ascii"))
    except (idna.IDNAError, UnicodeError, ValueError):
        return None
    return forms


def read_host(host: str) -> tuple[Host, ...] | None:
    """Every reading of one host (several only for non-ASCII names); None when unreadable."""
    if not host or _NEVER.search(host):
        return None
    if host.startswith("["):
        found = _ipv6(host[1:-1]) if host.endswith("]") else None
        return None if found is None else (found,)
    if ":" in host:
        found = _ipv6(host)
        return None if found is None else (found,)
    if "%" in host:  # percent-encoded: the libraries that decode it connect to the decoded host
        decoded = _decoded(host)
        if decoded is None or "%" in decoded or _NEVER.search(decoded):
            return None
        return read_host(decoded)
    return _name_readings(host.translate(_IDNA_DOTS))


def _name_readings(host: str) -> tuple[Host, ...] | None:
    """The readings of a host name (its IDNA forms, for a non-ASCII one); None if any of
    them is unreadable."""
    forms = [host] if host.isascii() else _idna_forms(host)
    if forms is None:
        return None
    readings: list[Host] = []
    for form in forms:
        reading = _ascii_host(form.lower())
        if reading is None:
            return None
        if reading not in readings:
            readings.append(reading)
    return tuple(readings)


def _valid_percents(text: str) -> bool:
    return re.fullmatch(r"(?:[^%]|%[0-9A-Fa-f]{2})*", text) is not None


def _decoded(text: str) -> str | None:
    """``text`` percent-decoded as UTF-8, or None when it is not valid percent-encoding."""
    if not _valid_percents(text):
        return None
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None


def _host_port(text: str) -> str | None:
    """The host of ``host[:port]`` or ``[v6][:port]``, or None when the port is not a port."""
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :] if end >= 0 else ":x"
        if rest and not (rest.startswith(":") and _PORT.match(rest[1:])):
            return None
        return text[: end + 1]
    if text.count(":") > 1:
        return text  # a bare IPv6 address: no port
    host, _, port = text.partition(":")
    return host if _PORT.match(port) else None


def _url_hosts(rest: str) -> tuple[Host, ...] | None:
    """The host of a URL's authority (``rest`` follows ``scheme://``)."""
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if 0 <= found < end:
            end = found
    authority = rest[:end]
    if authority.count("@") > 1 or _NEVER.search(authority):
        return None  # readers disagree on which @ ends the userinfo, or drop what we see
    host = _host_port(authority.rpartition("@")[2])
    return None if host is None else read_host(host)


def _grpc_path(rest: str) -> str | None:
    """The path of a gRPC target URI (``rest`` follows ``scheme:``), percent-decoded."""
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        rest = "" if slash < 0 else rest[slash:]
    for stop in "?#":
        rest = rest.split(stop, 1)[0]
    decoded = _decoded(rest)
    return None if decoded is None else decoded.lstrip("/")


def _grpc_hosts(scheme: str, rest: str) -> tuple[Host, ...] | None:
    """Every host a gRPC target with a known resolver scheme may reach."""
    if scheme in _GRPC_LOCAL:
        return (Host(LOCAL_SOCKET),)
    if scheme in _GRPC_UNJUDGED:
        return None
    path = _grpc_path(rest)
    if not path:
        return None
    if scheme == "dns":
        host = _host_port(path)
        return None if host is None else read_host(host)
    hosts: list[Host] = []
    for item in path.split(","):  # ipv4: / ipv6: address lists: every address counts
        host = _host_port(item)
        found = None if host is None else read_host(host)
        if found is None or any(h.address is None for h in found):
            return None
        hosts.extend(found)
    return tuple(hosts)


def hosts_of(destination: str) -> tuple[Host, ...] | None:
    """Every host ``destination`` may reach, as the resolver reads it; None when unreadable."""
    text = destination.strip()
    match = _SCHEME.match(text)
    if match is not None:
        scheme, rest = match.group(1).lower(), text[match.end() :]
        if rest.startswith("//") and scheme not in _GRPC_SCHEMES:
            return _url_hosts(rest[2:])  # a URL: its path and query never decide the host
    if not text or _NEVER.search(text):
        return None
    if match is not None and scheme in _GRPC_SCHEMES:
        return _grpc_hosts(scheme, rest)
    # "billing.svc:8080", "localhost:50051" (gRPC reads it as dns:///target), or a list of
    # brokers or servers: every one counts.
    hosts: list[Host] = []
    for item in text.split(","):
        host = _host_port(item)
        found = None if host is None else read_host(host)
        if found is None:
            return None
        hosts.extend(found)
    return tuple(hosts)


# --- the allow list -------------------------------------------------------------------------


class AllowList(NamedTuple):
    networks: tuple[Network, ...]
    names: frozenset[str]
    suffixes: tuple[str, ...]
    single_label: bool

    def admits(self, host: Host) -> bool:
        address = host.address
        if address is not None:
            return any(
                address.version == network.version and address in network
                for network in self.networks
            )
        name = host.name
        if name in self.names or name.endswith(self.suffixes):
            return True
        return self.single_label and not host.absolute and "." not in name


@functools.lru_cache(maxsize=64)
def allow_list(entries: tuple[str, ...]) -> AllowList:
    """``entries`` (the ``egress_allow`` setting) read like destinations; unreadable ones
    match nothing."""
    networks: list[Network] = []
    names: set[str] = set()
    suffixes: list[str] = []
    single_label = False
    for raw in entries:
        entry = raw.strip()
        if entry.lower() == SINGLE_LABEL:
            single_label = True
        elif entry.startswith("*."):
            suffixes.extend("." + h.name for h in read_host(entry[2:]) or () if h.address is None)
        elif "/" in entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue
        else:
            for host in read_host(entry) or ():
                if host.address is not None:
                    networks.append(ipaddress.ip_network(host.address))
                else:
                    names.add(host.name)
    return AllowList(tuple(networks), frozenset(names), tuple(suffixes), single_label)


@functools.lru_cache(maxsize=4096)
def judge(destination: str, allow: tuple[str, ...]) -> tuple[bool, str]:
    """Whether identity may go to ``destination``, and the ``server.address`` to report: the
    first host it may reach that is not allowed (or its first host when all are)."""
    hosts = hosts_of(destination)
    if not hosts:
        return False, UNREADABLE
    rules = allow_list(allow)
    for host in hosts:
        if not rules.admits(host):
            return False, host.name
    return True, hosts[0].name


def is_allowed(destination: str, allow: tuple[str, ...]) -> bool:
    """Whether every host ``destination`` may reach is on the allow list ``allow``."""
    return judge(destination, allow)[0]


def host_of(destination: str, allow: tuple[str, ...] | None = None) -> str:
    """What ``server.address`` reports for ``destination``: the first host it may reach that
    is off the allow list (``allow``, else the current ``egress_allow``), or its first host
    when all are on it, as the resolver reads them; ``<unreadable>`` when it cannot be read
    (never the text itself: it may hold credentials)."""
    if allow is None:
        allow = (_config.current or _config.get_settings()).egress_allow
    return judge(destination, allow)[1]
