"""The allowlist compares scheme, host, port and whole path segments; credentials never pass.

Examples from the review (issue #10), then properties over generated URLs checked against what
an HTTP client would actually connect to (yarl, aiohttp's URL parser, and urllib3's, which
requests uses): nothing outside an entry's scheme, host, port and path segments is accepted,
and every refusal is a ValueError whose message names the problem without the credentials.
"""

from __future__ import annotations

import ipaddress
import string

import pytest
import urllib3.util
import yarl
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loadgate.config.run import RunConfigError, build_run_config
from loadgate.safety import TargetNotAllowed, check_target, is_loopback, redact_url
from tests.support.helpers import reference_run

PASSWORD = "S3cret-pw"  # made up: the messages must not repeat it


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://api.example.com.evil.com/", "https://api.example.com"),
        ("http://api.example.com:9999/", "http://api.example.com"),
        ("http://10.0.0.123/", "http://10.0.0.1"),
        ("https://api.example.com/v10", "https://api.example.com/v1"),
        ("https://api.example.com:8443/v1", "https://api.example.com/v1"),
        ("http://api.example.com/v1", "https://api.example.com/v1"),
    ],
)
def test_url_prefixes_compare_scheme_host_port_and_segments(url: str, entry: str) -> None:
    with pytest.raises(TargetNotAllowed, match="not on the allowlist"):
        check_target(url, [entry])


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://api.example.com@evil.com/", "https://api.example.com"),
        ("https://api.example.com:443@evil.com/v1", "https://api.example.com/v1"),
        (f"http://user:{PASSWORD}@api.example.com/", "api.example.com"),
        (f"http://:{PASSWORD}@127.0.0.1:8080", "127.0.0.1"),
    ],
)
def test_credentials_in_a_target_are_refused_without_repeating_them(url: str, entry: str) -> None:
    for allowlist in ([entry], []):
        with pytest.raises(ValueError, match="must not carry credentials") as err:
            check_target(url, allowlist)
        assert PASSWORD not in str(err.value) and "@evil.com" not in str(err.value).split("***")[0]


def test_a_target_with_credentials_never_reaches_the_run_config() -> None:
    params = reference_run(target_url=f"http://loadgate:{PASSWORD}@127.0.0.1:8080", release="v1")
    with pytest.raises(RunConfigError, match="credentials") as err:
        build_run_config(params, allowlist=[])
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://api.example.com", "https://api.example.com/"),
        ("https://api.example.com:443/v1/x", "https://api.example.com/v1"),
        ("http://API.Example.com:80/v1/", "http://api.example.com/v1/"),
        ("http://10.0.0.1:80/x", "http://10.0.0.1"),
        ("http://[2001:db8::1]/", "http://[2001:db8:0::1]:80/"),
        ("https://api.example.com/v1/a%20b", "https://api.example.com/v1"),
        ("http://10.0.0.1/", "10.0.0.1"),
    ],
)
def test_what_an_entry_allows(url: str, entry: str) -> None:
    check_target(url, [entry])


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://api.example.com/v1/../admin", "'..' segments"),
        ("https://api.example.com/v1/%2e%2e/admin", "'..' segments"),
        ("https://api.example.com/v1%2fadmin", "encoded slashes"),
        ("https://api.example.com\\@evil.com/", "credentials"),
        ("https://api.example.com/v1\\..\\admin", "'\\\\'"),
        ("https://api.exa\tmple.com/", "control characters"),
        ("https://api.example.com/?x=1", "query or fragment"),
        ("https://api.example.com/#x", "query or fragment"),
        ("https://api_example%2ecom/", "neither a DNS name nor an IP address"),
        ("https://api.example.com./", "neither a DNS name nor an IP address"),
        ("http://127.0.0.1:0", "invalid port"),
        ("http://127.0.0.1:65536", "invalid port"),
    ],
)
def test_ambiguous_targets_are_refused_with_a_clear_error(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="target URL") as err:
        check_target(url, ["https://api.example.com/v1", "*.example.com"])
    assert problem.replace("\\\\", "\\") in str(err.value)


@pytest.mark.parametrize(
    "entry", ["api.example.com:8443", "example.com/v1", "ftp://api.example.com", "http://u:p@h/"]
)
def test_a_malformed_allowlist_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match="allowlist entry") as err:
        check_target("http://127.0.0.1:8080", [entry])
    assert ":p@" not in str(err.value)


def test_redact_url() -> None:
    assert redact_url(f"https://u:{PASSWORD}@h:1/x@y") == "https://***@h:1/x@y"
    assert redact_url("https://h/x@y") == "https://h/x@y"


# --- properties -----------------------------------------------------------------------------

HOSTS = [
    "api.example.com",
    "example.com",
    "api.example.com.evil.com",
    "evil.com",
    "apiexample.com",
    "10.0.0.1",
    "10.0.0.12",
    "10.0.0.123",
    "[2001:db8::1]",
    "[2001:db8::12]",
]
SCHEMES = ["http", "https", "HTTP", "ftp", "ws"]
SEGMENT = st.text(alphabet=string.ascii_lowercase[:3] + "._-%2e", min_size=0, max_size=3)
PATH = st.lists(SEGMENT, max_size=3).map(lambda s: "/" + "/".join(s))
PORT = st.sampled_from(["", ":80", ":443", ":8080", ":0", ":99999", ":x"])
USERINFO = st.sampled_from(["", "u@", f"u:{PASSWORD}@", f"api.example.com:{PASSWORD}@", "@"])
NOISE = st.sampled_from(["", "", "", "?q=1", "#f", "\\", "\\@evil.com", "/..", " ", "\n"])


@st.composite
def entries(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(st.sampled_from(["api.example.com", "10.0.0.1", "[2001:db8::1]"]))
    port = draw(st.sampled_from(["", ":80", ":443", ":8080"]))
    path = draw(st.lists(st.sampled_from(["a", "b", "v1"]), max_size=2))
    slash = draw(st.sampled_from(["", "/"]))
    return f"{scheme}://{host}{port}" + "".join("/" + p for p in path) + (slash if path else "")


@st.composite
def targets(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(SCHEMES))
    return (
        f"{scheme}://{draw(USERINFO)}{draw(st.sampled_from(HOSTS))}{draw(PORT)}"
        f"{draw(PATH)}{draw(NOISE)}"
    )


def _client_view(url: str) -> tuple[str, str, int, tuple[str, ...]]:
    """Scheme, host, port and path segments as aiohttp (yarl) will use them; urllib3 (requests)
    must agree on the host and port."""
    u = yarl.URL(url)
    assert u.user is None and u.password is None
    p = urllib3.util.parse_url(url)
    assert (p.host or "").strip("[]").lower() == (u.host or "").lower()
    assert (p.port or {"http": 80, "https": 443}[p.scheme.lower()]) == u.port
    segments = tuple(s for s in url.split("://", 1)[1].split("/")[1:] if s)
    return u.scheme, (u.host or "").lower(), u.port or 0, segments


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def _refused_clearly(exc: ValueError) -> None:
    text = str(exc)
    assert PASSWORD not in text
    assert any(
        phrase in text for phrase in ("target URL", "not on the allowlist", "allowlist entry")
    ), text


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(url=targets(), entry=entries())
@example(url="https://api.example.com@evil.com/", entry="https://api.example.com")
@example(url="https://api.example.com.evil.com/", entry="https://api.example.com")
@example(url="http://api.example.com:9999/", entry="http://api.example.com")
@example(url="http://10.0.0.123/", entry="http://10.0.0.1")
def test_nothing_outside_a_url_prefix_entry_is_accepted(url: str, entry: str) -> None:
    try:
        check_target(url, [entry])
    except ValueError as exc:
        _refused_clearly(exc)
        return
    scheme, host, port, segments = _client_view(url)
    e_scheme, e_host, e_port, e_segments = _client_view(entry)
    assert "@" not in url.split("://", 1)[1].split("/", 1)[0]
    assert scheme == e_scheme and port == e_port and _same_host(host, e_host)
    assert segments[: len(e_segments)] == e_segments
    assert not any(s.lower() in ("..", ".", "%2e", "%2e%2e", ".%2e", "%2e.") for s in segments)


@settings(max_examples=300, deadline=None)
@given(url=targets(), entry=st.sampled_from(["api.example.com", "*.example.com", "10.0.0.0/29"]))
def test_host_and_network_entries_allow_only_their_hosts(url: str, entry: str) -> None:
    try:
        check_target(url, [entry])
    except ValueError as exc:
        _refused_clearly(exc)
        return
    _, host, _, _ = _client_view(url)
    if entry == "10.0.0.0/29":
        assert ipaddress.ip_address(host) in ipaddress.ip_network(entry)
    elif entry == "api.example.com":
        assert host == "api.example.com"
    else:
        assert host.endswith(".example.com")


@settings(max_examples=400, deadline=None)
@given(url=st.text(max_size=40).map(lambda t: "http://" + t))
def test_any_text_is_a_clear_refusal_or_an_allowed_host(url: str) -> None:
    try:
        host = check_target(url, ["api.example.com"])
    except ValueError as exc:
        _refused_clearly(exc)
        return
    _, seen, _, _ = _client_view(url)
    assert seen == host
    assert host == "api.example.com" or is_loopback(host)
