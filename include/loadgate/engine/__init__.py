"""The load engine: VUs on asyncio (uvloop), executors, one-second windows, results.

The lowest layer above the base modules: it knows no plan, scenario, criterion or run.
Where things are: ``executors`` (how VUs come and go: one module per executor, its config,
profile and driver), ``vu`` (what a scenario function gets), ``http``/``ws`` (the protocol
clients), ``window`` (live recording) and ``results``/``upload`` (the files, local or on a
store), ``aggregate``/``merge``/``seconds`` (reading results back, across shards),
``histogram`` (HDR encoding and merging), ``health`` (the generator's own lag, CPU and
memory), ``abort`` (the stage's abort marker), ``shard`` and ``durations`` (the units a plan
is written in), ``exitcodes``. What runs one stage on one shard is :mod:`loadgate.runner`.
"""
