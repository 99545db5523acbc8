"""The load engine: VUs on asyncio (uvloop), executors, one-second windows, live abort.

Where things are: ``runner`` (one stage on one shard, ``loadgate run-stage``), ``executors``
(how VUs come and go), ``vu`` (what a scenario function gets), ``http``/``ws`` (the protocol
clients), ``window`` (live recording) and ``results`` (the files), ``aggregate``/``merge``/
``summary`` (reading results back, across shards), ``histogram`` (HDR encoding and merging),
``health`` (the generator's own lag, CPU and memory), ``abort`` (the stage's abort marker),
``exitcodes``.
"""
