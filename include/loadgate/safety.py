"""Where load may go: the target allowlist, checked before any request is sent.

Loopback is always allowed, so the embedded default needs no configuration. Anything else must
match an entry of the allowlist: a host name (``api.example.com``), a wildcard suffix
(``*.staging.example.com``), an IP network (``10.20.0.0/16``) or a URL prefix
(``https://api.example.com/``). Names are not resolved: a name is allowed by name only.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit


class TargetNotAllowed(ValueError):
    """The target is not on the allowlist; no load is sent to it."""


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host.lower() in LOOPBACK_NAMES if ip is None else ip.is_loopback


def parse_target(url: str) -> tuple[str, str]:
    """(scheme, host) of a target URL, or a clear error for anything that is not one."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"target URL must be http(s)://host[:port][/path], got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"target URL has an invalid port: {url!r}") from exc
    return parts.scheme, parts.hostname.lower()


def _matches(url: str, host: str, entry: str) -> bool:
    entry = entry.strip()
    if not entry:
        return False
    if "://" in entry:
        return url.startswith(entry)
    ip = _ip(host)
    if "/" in entry and ip is not None:
        try:
            return ip in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    return fnmatch.fnmatchcase(host, entry.lower())


def check_target(url: str, allowlist: Iterable[str] = ()) -> str:
    """Return the host of ``url`` if load may be sent to it; raise TargetNotAllowed otherwise."""
    _, host = parse_target(url)
    if is_loopback(host) or any(_matches(url, host, entry) for entry in allowlist):
        return host
    raise TargetNotAllowed(
        f"target {url!r} is not on the allowlist (loopback is always allowed; add the host, "
        "a *.suffix, a network or a URL prefix to the loadgate_target_allowlist Variable)"
    )
