"""The example's profile: the reference SyncBridge service on loopback (``make demo``).

Registered by the entry point group ``loadgate.profiles`` (pyproject.toml); a deployment's
``loadgate_profiles`` Variable may replace it by name.
"""

from __future__ import annotations

from typing import Any

PROFILE = "syncbridge"
PLAN = "harmonyflow-10k"


def syncbridge() -> dict[str, Any]:
    """The ``syncbridge`` profile's settings: the shipped plan against the service on
    loopback; everything else the defaults."""
    return {
        "description": "The reference SyncBridge service, on loopback (the embedded default)",
        "plan": PLAN,
        "default_target": "http://127.0.0.1:8080",
        "rollback": {"type": "syncbridge"},
    }
