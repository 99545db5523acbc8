"""The ``command`` rollback action: ``{"type": "command", "command": [program, args...]}``.

The program runs on the worker with the worker's environment, the ``env`` it is given, and
``LOADGATE_RELEASE`` (the release being rolled back) and ``LOADGATE_RUN_ID``; its exit status
0 is a rollback. Its output is recorded scrubbed of every secret, then cut to its tail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Literal

from pydantic import Field, model_validator

from loadgate.actions.base import ActionConfig, Call, RollbackError, scrub_text

OUTPUT_TAIL = 2000


class Config(ActionConfig):
    type: Literal["command"] = "command"
    command: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs(self) -> Config:
        if not self.command:
            raise ValueError("a command rollback needs 'command': [program, args...]")
        return self


def validate(
    config: Config, target_url: str, secret: str | None = None, apps_api: Any = None
) -> str:
    program = config.command[0]
    found = shutil.which(program)
    if not found:
        raise RollbackError(f"rollback command {program!r} is not an executable on PATH")
    return f"command {found} is executable"


def execute(config: Config, call: Call, outcome: dict[str, Any]) -> bool:
    proc = subprocess.run(
        config.command,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=config.timeout_s,
        env={
            **os.environ,
            **call.env,
            "LOADGATE_RELEASE": call.release or "",
            "LOADGATE_RUN_ID": call.run_id,
        },
        check=False,
    )
    outcome["exit_code"] = proc.returncode
    # scrubbed whole, then cut: a secret at the cut is never left half-shown
    outcome["output_tail"] = scrub_text(proc.stdout + proc.stderr, call.secrets)[-OUTPUT_TAIL:]
    return proc.returncode == 0
