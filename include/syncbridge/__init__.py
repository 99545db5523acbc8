"""The reference HarmonyFlow SyncBridge service: the embedded default target.

A real service (aiohttp on uvloop, SQLite behind a bounded pool, scrypt, JWT) that the load
tests can find real bottlenecks in, with fault injection to play a bad release.

- ``cli``: ``syncbridge serve`` (options and defaults); ``config``: the settings
- ``app``: routes, handlers, middleware (metrics, faults, errors, access log), start/stop
- ``ws``: the ``/ws`` protocol (auth, heartbeat, state_update broadcast)
- ``storage``: the pool and every query; ``auth``: passwords and tokens
- ``faults``: the fault set and the faults that act on their own (memory, crash, OOM)
- ``metrics``: the Prometheus series (names are a contract); ``logs``: JSON lines
- ``launcher``: start the real service as a subprocess (tests, demos)
"""
