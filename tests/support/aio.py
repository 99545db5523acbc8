"""Running one async test body on uvloop, bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import uvloop


def run(coro: Awaitable[None], timeout_s: float = 15.0) -> None:
    """Run one test body on uvloop; it fails if it takes more than ``timeout_s``."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout_s):
            await coro

    uvloop.run(bounded())
