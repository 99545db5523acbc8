"""Where load may go: the target allowlist, checked before any request is sent.

Loopback is always allowed, so the embedded default needs no configuration. Anything else must
match an entry of the allowlist:

- a host name (``api.example.com``) or a wildcard pattern (``*.staging.example.com``): the
  target's host, whatever its scheme, port and path;
- an IP network (``10.20.0.0/16``) or one address (``10.0.0.1``): a target given by an IP
  address inside it;
- a URL prefix (``https://api.example.com/v1/``): the same scheme, the same host and the same
  port (``:80`` for http and ``:443`` for https when none is written), and a path that starts
  with the entry's path segment by segment (``/v1`` allows ``/v1`` and ``/v1/x``, not ``/v10``).

Names are not resolved: a name is allowed by name only. A target URL is ``http(s)://host[:port]
[/path]``: one carrying credentials (``user:password@``) is refused whatever the allowlist says,
as is a path with ``.``/``..`` segments, a backslash, a query, a fragment or a host that is
neither a DNS name nor an IP address. Error messages never repeat credentials.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit


class TargetNotAllowed(ValueError):
    """The target is not on the allowlist; no load is sent to it."""


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
DEFAULT_PORTS = {"http": 80, "https": 443}

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HOST_PATTERN = re.compile(r"[a-z0-9_.*?-]+")
_USERINFO = re.compile(r"^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?([^/?#]*@)")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: safe for a message or a log."""
    return _USERINFO.sub(lambda m: f"{m.group(1) or ''}***@", url, count=1)


def _ip(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host.lower() in LOOPBACK_NAMES if ip is None else ip.is_loopback


@dataclass(frozen=True)
class Target:
    """A target URL taken apart: the parts the allowlist compares."""

    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int  # the default port of the scheme when the URL gives none
    segments: tuple[str, ...]  # the path's segments, percent-decoded, without empty ones

    @property
    def ip(self) -> IP | None:
        return _ip(self.host)


def _split(url: str, what: str) -> SplitResult:
    """urlsplit with the checks every URL here gets (credentials first, so that no later
    message repeats them)."""
    text = url.strip()
    shown = redact_url(text)
    if _USERINFO.match(text):
        raise ValueError(
            f"{what} must not carry credentials (user:password@), got {shown!r}: loadgate "
            "never sends credentials in a URL"
        )
    if _CONTROL.search(text) or "\\" in text:
        raise ValueError(f"{what} must not contain spaces, control characters or '\\': {shown!r}")
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as exc:  # "Invalid IPv6 URL" and the like
        raise ValueError(f"{what} is not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme.lower() not in DEFAULT_PORTS or not host:
        raise ValueError(f"{what} must be http(s)://host[:port][/path], got {shown!r}")
    return parts


def _port(parts: SplitResult, url: str, what: str) -> int:
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{what} has an invalid port: {redact_url(url.strip())!r}")
    return port if port is not None else DEFAULT_PORTS[parts.scheme.lower()]


def _host(parts: SplitResult, url: str, what: str) -> str:
    host = (parts.hostname or "").lower()
    if _ip(host) is None and not _HOST_NAME.fullmatch(host):
        raise ValueError(
            f"{what} has a host that is neither a DNS name nor an IP address: "
            f"{redact_url(url.strip())!r}"
        )
    return host


def _segments(path: str, url: str, what: str) -> tuple[str, ...]:
    out = []
    for raw in path.split("/"):
        segment = unquote(raw)
        if segment in (".", "..") or "/" in segment or "\\" in segment:
            raise ValueError(
                f"{what} must not have '.' or '..' segments or encoded slashes in its path: "
                f"{redact_url(url.strip())!r}"
            )
        if segment:
            out.append(segment)
    return tuple(out)


def target_of(url: str) -> Target:
    """A target URL taken apart, or a clear ValueError for anything that is not one."""
    what = "target URL"
    parts = _split(url, what)
    if parts.query or parts.fragment or url.strip().endswith(("?", "#")):
        raise ValueError(
            f"target URL must not have a query or fragment: {redact_url(url.strip())!r}"
        )
    return Target(
        scheme=parts.scheme.lower(),
        host=_host(parts, url, what),
        port=_port(parts, url, what),
        segments=_segments(parts.path, url, what),
    )


def parse_target(url: str) -> tuple[str, str]:
    """(scheme, host) of a target URL, or a clear error for anything that is not one."""
    target = target_of(url)
    return target.scheme, target.host


def _bad_entry(entry: str) -> ValueError:
    return ValueError(
        f"allowlist entry {redact_url(entry)!r} is not a host name, a *.suffix, an IP network "
        "or an http(s):// URL prefix"
    )


def _url_entry(entry: str) -> Target:
    what = "allowlist URL prefix"
    try:
        parts = _split(entry, what)
        if parts.query or parts.fragment:
            raise ValueError(f"{what} must not have a query or fragment: {entry!r}")
        return Target(
            scheme=parts.scheme.lower(),
            host=_host(parts, entry, what),
            port=_port(parts, entry, what),
            segments=_segments(parts.path, entry, what),
        )
    except ValueError as exc:
        raise ValueError(f"allowlist entry {redact_url(entry)!r}: {exc}") from None


def _same_host(target: Target, entry: Target) -> bool:
    a, b = target.ip, entry.ip
    if a is not None or b is not None:
        return a is not None and b is not None and a == b
    return target.host == entry.host


Entry = Target | ipaddress.IPv4Network | ipaddress.IPv6Network | str


def allowlist_entry(entry: str) -> Entry | None:
    """One allowlist entry as what it allows: a URL prefix (a :class:`Target`), an IP network,
    or a host name pattern (lower case); None for a blank entry; a clear ValueError for
    anything else (``api.example.com:8443``, ``example.com/v1``, ``ftp://…``)."""
    entry = entry.strip()
    if not entry:
        return None
    if "://" in entry:
        return _url_entry(entry)
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    if not _HOST_PATTERN.fullmatch(entry.lower()):
        raise _bad_entry(entry)
    return entry.lower()


def _matches(target: Target, allowed: Entry) -> bool:
    if isinstance(allowed, Target):
        return (
            target.scheme == allowed.scheme
            and target.port == allowed.port
            and _same_host(target, allowed)
            and target.segments[: len(allowed.segments)] == allowed.segments
        )
    if isinstance(allowed, ipaddress.IPv4Network | ipaddress.IPv6Network):
        ip = target.ip
        return ip is not None and ip in allowed
    return fnmatch.fnmatchcase(target.host, allowed)


def check_target(url: str, allowlist: Iterable[str] = ()) -> str:
    """Return the host of ``url`` if load may be sent to it; raise TargetNotAllowed otherwise.

    Every refusal is a ValueError (TargetNotAllowed when the URL is well formed but not
    allowed) whose message names the URL without its credentials; a malformed allowlist entry
    is a ValueError naming the entry, whatever the target."""
    target = target_of(url)
    entries = [e for e in (allowlist_entry(entry) for entry in allowlist) if e is not None]
    if is_loopback(target.host) or any(_matches(target, entry) for entry in entries):
        return target.host
    raise TargetNotAllowed(
        f"target {redact_url(url.strip())!r} is not on the allowlist (loopback is always "
        "allowed; operators add the host, a *.suffix, a network or a URL prefix to the "
        "profile's allowlist)"
    )
