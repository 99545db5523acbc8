"""The one error a bad plan raises: it names the file, the field path and the reason."""

from __future__ import annotations

from collections.abc import Sequence


class PlanError(ValueError):
    """A plan that cannot be used. ``problems`` is a list of (field path, reason)."""

    def __init__(self, file: str, problems: Sequence[tuple[str, str]]) -> None:
        self.file = file
        self.problems = list(problems)
        lines = [
            f"{file}: {path}: {reason}" if path else f"{file}: {reason}"
            for path, reason in self.problems
        ]
        super().__init__("invalid plan\n  " + "\n  ".join(lines) if len(lines) > 1 else lines[0])
