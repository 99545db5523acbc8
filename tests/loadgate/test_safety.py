"""The allowlist decides where load may go, before any request is sent."""

from __future__ import annotations

import pytest

from loadgate.safety import TargetNotAllowed, check_target, is_loopback


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://127.8.9.10/x", "http://[::1]:9000/", "http://localhost:1"],
)
def test_loopback_is_always_allowed(url: str) -> None:
    assert is_loopback(check_target(url))


@pytest.mark.parametrize(
    ("url", "entry"),
    [
        ("https://api.example.com/v1", "api.example.com"),
        ("https://eu.api.example.com", "*.api.example.com"),
        ("http://10.20.3.4:8080", "10.20.0.0/16"),
        ("https://api.example.com/v1/x", "https://api.example.com/v1/"),
    ],
)
def test_allowlist_entries(url: str, entry: str) -> None:
    check_target(url, ["unrelated.example.org", entry])


@pytest.mark.parametrize(
    ("url", "allowlist"),
    [
        ("https://api.example.com", []),
        ("https://api.example.com.evil.net", ["api.example.com"]),
        ("http://10.21.0.1", ["10.20.0.0/16"]),
        ("http://192.168.1.1", ["*.example.com"]),
        ("https://api.example.com/v2", ["https://api.example.com/v1/"]),
        ("http://localhost.evil.net", []),
    ],
)
def test_everything_else_is_refused(url: str, allowlist: list[str]) -> None:
    with pytest.raises(TargetNotAllowed, match="not on the allowlist"):
        check_target(url, allowlist)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1", "127.0.0.1:8080", "http://", "http://h:port"])
def test_malformed_targets_get_a_clear_error(url: str) -> None:
    with pytest.raises(ValueError, match="target URL"):
        check_target(url)
