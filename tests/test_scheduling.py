"""The suite's own scheduling (tests/support/scheduling.py): heavy modules balanced over the
groups by cost, collected first, every other module whole."""

from __future__ import annotations

from tests.support import scheduling
from tests.support.scheduling import heavy_groups, is_heavy, module_of, run_order


def test_heavy_modules_are_the_gate_tiers_and_the_gate_comparisons() -> None:
    assert is_heavy("tests/e2e/test_release_gate.py")
    assert is_heavy("tests/deployment/test_rest_trigger.py")
    assert is_heavy("tests/loadgate/test_gate.py")
    assert not is_heavy("tests/loadgate/test_gate_client_args.py")
    assert module_of("tests/e2e/test_a.py::test_x[a::b]") == "tests/e2e/test_a.py"


def test_groups_are_balanced_by_cost_costliest_first(monkeypatch) -> None:
    monkeypatch.setattr(scheduling, "HEAVY_GROUPS", 2)
    costs = {"tests/e2e/a.py": 500.0, "tests/e2e/b.py": 300.0, "tests/e2e/c.py": 250.0}
    monkeypatch.setattr(scheduling, "HEAVY_COSTS", costs)
    groups = heavy_groups({*costs, "tests/e2e/unlisted.py"})
    # a (500) alone; b (300) + c (250) together; the unlisted one (default 120) with a
    assert groups["tests/e2e/a.py"] != groups["tests/e2e/b.py"]
    assert groups["tests/e2e/b.py"] == groups["tests/e2e/c.py"]
    assert groups["tests/e2e/unlisted.py"] == groups["tests/e2e/a.py"]


def test_run_order_puts_heavy_groups_first_then_the_slow_tests(monkeypatch) -> None:
    monkeypatch.setattr(scheduling, "HEAVY_GROUPS", 2)
    monkeypatch.setattr(scheduling, "HEAVY_COSTS", {"tests/e2e/big.py": 900.0})
    nodeids = [
        "tests/loadgate/test_fast.py::test_1",
        "tests/loadgate/test_slow.py::test_1",
        "tests/e2e/small.py::test_1",
        "tests/e2e/big.py::test_1",
        "tests/e2e/big.py::test_2",
    ]
    order = run_order(nodeids, slow={"tests/loadgate/test_slow.py::test_1"})
    assert order == [
        "tests/e2e/big.py::test_1",
        "tests/e2e/big.py::test_2",
        "tests/e2e/small.py::test_1",
        "tests/loadgate/test_slow.py::test_1",
        "tests/loadgate/test_fast.py::test_1",
    ]
