"""How ``make test`` spreads the suite over its pytest-xdist workers (``--dist loadgroup``).

Every worker has its own temporary directory, S3 server and free ports, so tests share nothing
but the CPU. That they do share: a gate run judges whether its load generator could keep up (a
lagging event loop makes the stage ``invalid``), and a healthy stage once read p95 557 ms
against its 500 ms limit when four whole gate runs and the light modules shared a slower 2-core
machine (a fixed single-core loop 1.5-1.8 s there, 1.2-1.4 s on the machine of 2 December
2026). So the modules that run the whole gate (``tests/e2e``, ``tests/deployment``, and
``GATE_MODULES``, which compare the verdicts of measured runs) go into ``HEAVY_GROUPS`` groups,
each run by one worker module after module (a module's fixtures, such as its Airflow
deployment, are made once): at most that many gate runs share the machine. The other workers
take every other module whole, the slow tiers first (the longest start early; the short ones
fill the end).

The groups are balanced by what each heavy module costs (``HEAVY_COSTS``, seconds measured on
this machine; a module not listed counts as ``DEFAULT_COST``): the longest first, each to the
group with the least so far.

How many: the suite needs 13 to 15 CPU-minutes at the machine's speed of 2 December, 19 to 24
at that of 3 December (most of it Airflow: ``airflow dags test``, a process for each of the ~16
tasks a gate run starts, the scheduler and the API server; and the engines' load; the README
has the census), so on two cores it cannot end much before half that however it is spread.
The suite is bound by the CPU, not by the heavy chains: on 3 December each chain ended 590 to
670 s into a 716-s suite (its first healthy run took 150 to 220 s; test_rest_trigger.py's, 100 s
alone), the light modules filling the rest with both cores busy.
Measured on 2 December 2026 (one run each): three groups on four processes, each chain about
450 s, the suite 480 s; four groups on five processes, each chain about 330 s, the suite 409 s,
the CPU busy about 90% of the run. Under a CPU quota of 1.5 cores (a machine a quarter
slower): four groups on five processes 536 s, three on four 589 s (``make test`` 8.9 and 9.8
minutes), every test passing in each. The fifth process takes light modules from the start,
the others when their group is done.

Why a scheduler of our own rather than ``xdist_group`` marks: xdist 3.8 groups by rewriting an
item's ``_nodeid``, which pytest 9 no longer reads (the node id is ``_id``), so the marks group
nothing and every heavy test went to whichever worker was free, each setting up its module's
fixtures again. This scheduler groups by module path, which the controller knows.
"""

from __future__ import annotations

from typing import Any

HEAVY_GROUPS = 4  # whole gate runs at once
HEAVY_DIRS = ("tests/e2e/", "tests/deployment/")
GATE_MODULES = (
    "tests/loadgate/test_gate.py",
    "tests/loadgate/test_gate_regressions.py",
    "tests/loadgate/test_report_browser.py",  # its healthy run must pass
)
HEAVY_MARKS = ("e2e", "deployment")  # every test so marked lives in HEAVY_DIRS
DEFAULT_COST = 200.0
HEAVY_COSTS = {  # seconds, each module in a whole `make test` here (4 groups, 5 processes)
    "tests/deployment/test_rest_trigger.py": 306.0,
    "tests/e2e/test_release_gate.py": 243.0,
    "tests/e2e/test_release_gate_kubernetes.py": 228.0,
    "tests/deployment/test_parallel_pods.py": 126.0,
    "tests/loadgate/test_gate.py": 92.0,
    "tests/deployment/test_trigger_form.py": 81.0,
    "tests/loadgate/test_gate_regressions.py": 80.0,
    "tests/e2e/test_demo.py": 105.0,  # 74 s, and the bad-release demo since (32 s alone)
    "tests/e2e/test_plan_dag.py": 65.0,
    "tests/loadgate/test_report_browser.py": 44.0,
    "tests/deployment/test_report_tab_base_path.py": 17.0,  # one test alone
}


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def is_heavy(module: str) -> bool:
    return module.startswith(HEAVY_DIRS) or module in GATE_MODULES


def heavy_groups(modules: set[str]) -> dict[str, int]:
    """Each heavy module's group: the costliest first, each to the least loaded group."""
    loads = [0.0] * HEAVY_GROUPS
    groups: dict[str, int] = {}
    for module in sorted(modules, key=lambda m: (-HEAVY_COSTS.get(m, DEFAULT_COST), m)):
        group = loads.index(min(loads))
        groups[module] = group
        loads[group] += HEAVY_COSTS.get(module, DEFAULT_COST)
    return groups


def run_order(nodeids: list[str], slow: set[str]) -> list[str]:
    """The order the workers collect (the controller hands out scopes in it): the heavy groups
    first, the costliest group first; then the slow tests; then the rest, each stably."""
    heavy = heavy_groups({module_of(n) for n in nodeids if is_heavy(module_of(n))})
    loads = [0.0] * HEAVY_GROUPS
    for module, group in heavy.items():
        loads[group] += HEAVY_COSTS.get(module, DEFAULT_COST)

    def key(nodeid: str) -> tuple[int, float, int]:
        group = heavy.get(module_of(nodeid))
        if group is not None:
            return (0, -loads[group], group)
        return (1 if nodeid in slow else 2, 0.0, 0)

    return sorted(nodeids, key=key)


def make_scheduler(config: Any, log: Any) -> Any:
    """``--dist loadgroup``: the heavy modules in their groups, every other module a scope of
    its own; scopes handed out in the collection's order (``run_order``)."""
    from xdist.scheduler import LoadScopeScheduling

    class GateRunScheduling(LoadScopeScheduling):
        groups: dict[str, int] | None = None

        def _split_scope(self, nodeid: str) -> str:
            module = module_of(nodeid)
            if not is_heavy(module):
                return module
            if self.groups is None:  # the collection is complete when scopes are asked for
                modules = {module_of(n) for n in self.collection or []}
                self.groups = heavy_groups({m for m in modules if is_heavy(m)})
            return f"gate-runs-{self.groups.get(module, 0)}"

    config.option.loadscopereorder = False  # keep run_order's order
    return GateRunScheduling(config, log)
