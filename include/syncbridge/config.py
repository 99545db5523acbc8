"""Service configuration (filled from the command line, see cli.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import psutil

from .auth import DEFAULT_KDF_COST
from .faults import Faults


def default_memory_limit() -> int:
    return psutil.virtual_memory().total


def default_cpu_limit() -> float:
    return float(len(os.sched_getaffinity(0)))


@dataclass
class Config:
    db_path: str
    host: str = "127.0.0.1"
    port: int = 8080
    release: str = "v1"
    previous_release: str | None = None
    faults: Faults = field(default_factory=Faults)
    admin_token: str | None = None
    log_file: str | None = None
    log_level: str = "info"
    access_log: bool = True
    port_file: str | None = None
    kdf_cost: int = DEFAULT_KDF_COST
    token_ttl: float = 900.0
    refresh_ttl: float = 7 * 86400.0
    pool_size: int = 8
    pool_timeout: float = 5.0
    memory_limit_bytes: int = field(default_factory=default_memory_limit)
    cpu_limit_cores: float = field(default_factory=default_cpu_limit)
    max_body_bytes: int = 1024 * 1024
    max_ws_message_bytes: int = 256 * 1024
    ws_auth_timeout: float = 10.0
    shutdown_timeout: float = 10.0
    backlog: int = 4096
