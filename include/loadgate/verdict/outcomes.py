"""The outcomes a gate (and so a run) can reach, from best to worst.

- ``pass``: every criterion met, with enough evidence.
- ``inconclusive``: too little evidence to decide (a confidence interval straddles its
  threshold, or a must-have criterion gathered too few samples). The gate does not guess: the
  stage is run once more and decided on the pooled evidence; still inconclusive after that, the
  release stays and the run says so.
- ``investigate``: a criterion of the investigate or acceptance level is breached, or a
  regression against the baseline release is shown.
- ``invalid``: the test cannot vouch for its own numbers (the generator saturated, an
  open-model stage dropped iterations, a shard's results are missing, the offered load fell
  short of the plan's); never a pass, and it fails the run.
- ``error``: the stage produced no usable results (no shard wrote any, an engine error).
- ``rollback``: an immediate-rollback criterion is breached: the release is rolled back.

``dry_run`` is a run's verdict when nothing was sent. Verdicts are ``StrEnum`` members, so
they compare equal to, and serialize as, their plain names in the run's JSON records.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Verdict(StrEnum):
    PASS = "pass"
    INCONCLUSIVE = "inconclusive"
    INVESTIGATE = "investigate"
    INVALID = "invalid"
    ERROR = "error"
    ROLLBACK = "rollback"
    DRY_RUN = "dry_run"

    @property
    def severity(self) -> int:
        return SEVERITY.index(self)

    @property
    def fails_run(self) -> bool:
        """A deploy pipeline waiting on the DAG run sees it fail."""
        return self in (Verdict.ROLLBACK, Verdict.ERROR, Verdict.INVALID)

    @property
    def stops_later_stages(self) -> bool:
        """No further load is sent after such a gate (an invalid stage says nothing against
        the next one: its load is its own)."""
        return self in (Verdict.ROLLBACK, Verdict.ERROR)


SEVERITY = (
    Verdict.DRY_RUN,
    Verdict.PASS,
    Verdict.INCONCLUSIVE,
    Verdict.INVESTIGATE,
    Verdict.INVALID,
    Verdict.ERROR,
    Verdict.ROLLBACK,
)


def worst(verdicts: Iterable[Verdict | str]) -> Verdict:
    """The worst of several verdicts (``pass`` when there are none)."""
    return max((Verdict(v) for v in verdicts), key=lambda v: v.severity, default=Verdict.PASS)
