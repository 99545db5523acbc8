"""The outcomes' order and what each does to the run."""

from __future__ import annotations

import json

import pytest

from loadgate.verdict.outcomes import Verdict, worst


def test_worst_orders_outcomes_from_pass_to_rollback() -> None:
    assert worst([]) == Verdict.PASS
    assert worst(["pass", "inconclusive"]) == Verdict.INCONCLUSIVE
    assert worst(["inconclusive", "investigate", "pass"]) == Verdict.INVESTIGATE
    assert worst(["investigate", "invalid"]) == Verdict.INVALID
    assert worst(["invalid", "error"]) == Verdict.ERROR
    assert worst(["error", "rollback", "pass"]) == Verdict.ROLLBACK


@pytest.mark.parametrize(
    ("verdict", "fails", "stops"),
    [
        ("pass", False, False),
        ("inconclusive", False, False),
        ("investigate", False, False),
        ("invalid", True, False),
        ("error", True, True),
        ("rollback", True, True),
    ],
)
def test_what_each_outcome_does_to_the_run(verdict: str, fails: bool, stops: bool) -> None:
    assert Verdict(verdict).fails_run is fails
    assert Verdict(verdict).stops_later_stages is stops


def test_verdicts_are_their_names_in_json() -> None:
    assert json.dumps({"v": Verdict.INVALID}) == '{"v": "invalid"}'
    assert Verdict.PASS == "pass" and str(Verdict.ROLLBACK) == "rollback"
