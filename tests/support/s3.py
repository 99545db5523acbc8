"""A real S3 API on loopback for the tests: moto's server mode (``ThreadedMotoServer``).

:class:`S3Server` starts the server on 127.0.0.1 on a free port. :meth:`S3Server.env` is the
environment a client needs, the standard boto way (fake keys, a region, ``AWS_ENDPOINT_URL``)
and nothing from the machine (no config or credentials file, no instance metadata); the
``s3`` fixture in ``tests/conftest.py`` puts it in ``os.environ`` (so processes the test starts
inherit it) and makes a fresh bucket for each test.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAKE_KEY_ID = "loadgate-test-key-id"
FAKE_SECRET = "loadgate-test-secret-key"  # moto accepts any


class S3Server:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def env(self, home: str) -> dict[str, str]:
        """What a client of this server needs; ``home`` holds the (absent) AWS config files."""
        return {
            "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_CONFIG_FILE": os.path.join(home, "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=FAKE_KEY_ID,
            aws_secret_access_key=FAKE_SECRET,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        self._server.stop()


@dataclass
class Bucket:
    """One test's bucket on the server."""

    server: S3Server
    name: str

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def airflow_connection_env(self, conn_id: str) -> dict[str, str]:
        """An Airflow ``aws`` connection to this server (keys, endpoint, region) as the
        ``AIRFLOW_CONN_…`` variable of a task's environment."""
        from tests.support.airflow import connection_env

        return connection_env(
            conn_id,
            conn_type="aws",
            login=FAKE_KEY_ID,
            password=FAKE_SECRET,
            extra={"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        )

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.name}", *parts])

    def keys(self, prefix: str = "") -> list[str]:
        client = self.server.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def download(self, prefix: str, dest: Path) -> Path:
        """Every object under ``prefix`` into the folder ``dest`` (to read it as files)."""
        for key in self.keys(prefix):
            target = dest / key[len(prefix) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.get(key))
        return dest


def new_bucket(server: S3Server) -> Bucket:
    name = f"loadgate-{secrets.token_hex(4)}"
    server.client().create_bucket(Bucket=name)
    return Bucket(server, name)
