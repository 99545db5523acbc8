"""Locust FastHttpUser peer for the client benchmark (LG_PATTERN=closed|seed)."""

import itertools
import os
import random

import gevent
from locust import FastHttpUser, constant, task

SEED = os.environ.get("LG_PATTERN", "closed") == "seed"
_ids = itertools.count()


class SessionUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.path = f"/api/v1/sessions/{next(_ids)}"
        if SEED:
            gevent.sleep(random.random() * 3)

    @task
    def get_session(self) -> None:
        self.client.get(self.path, name="/api/v1/sessions/[id]")
        if SEED:
            gevent.sleep(random.random() * 3)
