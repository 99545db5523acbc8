"""Everything a run writes lives under one run root: ``<artifacts_root>/<run id>/``.

The root is a local folder by default and may be ``s3://bucket/prefix`` in production; paths are
``UPath`` objects, so the same code writes both (:mod:`loadgate.storage`). Writes replace whole
files (object stores have no append), and private files (credentials) are created with mode 0600
where the store has modes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson
from upath import UPath

from loadgate.storage import Location, is_remote, upath, write_atomic

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")
MAX_SLUG = 180  # a folder name stays well under the 255 bytes a file system allows


def safe_name(run_id: str) -> str:
    """A run id as a folder name, one folder per run id.

    An id made only of letters, digits and ``._=-`` (not starting or ending with '-' or '.',
    at most ``MAX_SLUG`` long) is its own folder name. Any other id (Airflow's carry ':' and
    '+') gets a readable slug, its unsafe characters made '-', then ``~`` and 12 hex digits of
    the SHA-256 of the exact id: ``manual__2026-01-01T00:00:00+00:00`` →
    ``manual__2026-01-01T00-00-00-00-00~1e8dc70c2b69``. A safe id never holds '~', so no id
    gets the folder of another (``manual__2026-01-01T00-00-00-00-00`` keeps its own).
    """
    slug = _UNSAFE.sub("-", run_id).strip("-.")[:MAX_SLUG].rstrip("-.")
    if not slug:
        raise ValueError(f"run id {run_id!r} gives an empty folder name")
    if slug == run_id:
        return slug
    return f"{slug}~{hashlib.sha256(run_id.encode()).hexdigest()[:12]}"


class RunArtifacts:
    """The run root of one DAG run and the few ways the pipeline writes into it."""

    def __init__(self, artifacts_root: Location, run_id: str) -> None:
        self.root = upath(artifacts_root) / safe_name(run_id)
        self.run_id = run_id

    @property
    def is_local(self) -> bool:
        return not is_remote(self.root)

    def path(self, *parts: str) -> UPath:
        return self.root.joinpath(*parts)

    def ensure(self, *parts: str) -> UPath:
        folder = self.path(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_bytes(self, rel: str, data: bytes, *, private: bool = False) -> UPath:
        target = self.path(rel)
        write_atomic(target, data, private=private)
        return target

    def write_text(self, rel: str, text: str, *, private: bool = False) -> UPath:
        return self.write_bytes(rel, text.encode(), private=private)

    def write_json(self, rel: str, obj: Any, *, private: bool = False) -> UPath:
        data = orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        return self.write_bytes(rel, data + b"\n", private=private)

    def read_json(self, rel: str, default: Any = None) -> Any:
        target = self.path(rel)
        if not target.exists():
            return default
        return orjson.loads(target.read_bytes())

    def read_jsonl(self, rel: str) -> list[Any]:
        target = self.path(rel)
        if not target.exists():
            return []
        return [orjson.loads(line) for line in target.read_bytes().splitlines() if line.strip()]

    def append_jsonl(self, rel: str, record: Any) -> None:
        """Append one record (by rewriting the file: fine for the few records a run has)."""
        target = self.path(rel)
        old = target.read_bytes() if target.exists() else b""
        self.write_bytes(rel, old + orjson.dumps(record) + b"\n")
