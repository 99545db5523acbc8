"""Executors: how a scenario's VUs come and go on this shard, one module each.

- ``ramping-vus`` (:mod:`.ramping_vus`): linear ramps between targets.
- ``constant-vus`` (:mod:`.constant_vus`): a fixed number of VUs for a duration.
- ``connection-ramp`` (:mod:`.connection_ramp`): one long-lived connection per VU, opened at
  an even pace up to a target, then held.
- ``constant-arrival-rate`` (:mod:`.constant_arrival_rate`): iterations on a schedule, whatever
  the target's latency.

Each module holds its executor's config, per-shard profile and driver (:mod:`.base` has what
they share). Adding an executor is adding its module and listing it below: the order is the
one the plan's messages name them in.
"""

from loadgate.engine.executors import (
    connection_ramp,
    constant_arrival_rate,
    constant_vus,
    ramping_vus,
)
from loadgate.engine.executors.base import register

register(
    ramping_vus.EXECUTOR,
    constant_vus.EXECUTOR,
    connection_ramp.EXECUTOR,
    constant_arrival_rate.EXECUTOR,
)
