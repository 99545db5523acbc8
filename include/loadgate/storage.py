"""Where results and artifacts live: a local folder, or an object store (``s3://bucket/prefix``).

A location is a local path or a URL. :func:`as_path` gives a :class:`pathlib.Path` for a local
one and a :class:`upath.UPath` (fsspec; ``s3fs`` for ``s3://``) for a URL, with the listings
cache off: other processes (the shards, the next task) write under the same prefixes, and a
cached listing would hide what they wrote. The few writes whose semantics differ between a
file system and an object store are here: :func:`write_atomic` (a reader never sees half a
file) and :func:`create_exclusive` (the first writer wins).

Credentials for a store come from the environment the standard boto way
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for an S3-compatible server) or from the machine's role (a pod's service
account): never from a URL, a command line or a file that loadgate writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import threading
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from upath import UPath

# a local path or a URL, as text or as a path object
Location: TypeAlias = "str | os.PathLike[str] | UPath"

LOCAL_PROTOCOLS = ("", "file", "local")
# other processes write the same prefixes: list them afresh every time
REMOTE_OPTIONS: dict[str, Any] = {"use_listings_cache": False}


def is_remote(location: Location) -> bool:
    """True for an object-store URL (``s3://…``), False for a local path or ``file://``."""
    if _is_upath(location):
        return location.protocol not in LOCAL_PROTOCOLS  # type: ignore[union-attr]  # _is_upath checked it is a UPath
    if isinstance(location, PurePath):
        return False
    text = os.fspath(location)  # type: ignore[arg-type]  # a UPath was answered above
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() not in LOCAL_PROTOCOLS


def _is_upath(obj: object) -> bool:
    """Without importing upath (and fsspec: ~40 ms a process), which a local run never needs."""
    module = sys.modules.get("upath")
    return module is not None and isinstance(obj, module.UPath)


def upath(location: Location) -> UPath:
    """A UPath for any location (a local one too); a store URL with the listings cache off."""
    from upath import UPath

    if isinstance(location, UPath):
        return location
    options = REMOTE_OPTIONS if is_remote(location) else {}
    found: UPath = UPath(os.fspath(location), **options)
    return found


def as_path(location: Location) -> Any:
    """``pathlib.Path`` for a local location, :func:`upath` for a store URL."""
    if is_remote(location):
        return upath(location)
    if isinstance(location, Path):
        return location
    return Path(os.fspath(location))  # type: ignore[arg-type]  # a UPath is remote or a Path


def write_atomic(path: Any, data: bytes, *, private: bool = False) -> None:
    """Replace the file ``path`` whole.

    Locally: write-then-rename, so a reader never sees half a file, and a private file (0600)
    never exists with wider permissions, not even for an instant. On a store: one PUT, which is
    atomic there (stores have no modes: a private object is as private as its bucket).
    """
    if is_remote(path):
        path.write_bytes(data)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def create_exclusive(path: Any, data: bytes, *, private: bool = False) -> bool:
    """Create ``path`` holding ``data`` unless it exists; False when it already did.

    Locally a hard link of a complete temporary file: exactly one creator wins, and a reader
    never sees the file empty or half written (``O_EXCL`` where links are not supported). On S3
    a conditional PUT (``If-None-Match: *``): exactly one writer wins too. A store that refuses
    conditional writes (``NotImplemented``) gets a look then a plain PUT: two writers in the
    same instant may then both write, and the last one's content stays.
    """
    if not is_remote(path):
        return _create_local(Path(path), data, 0o600 if private else 0o644)
    try:
        path.fs.pipe_file(path.path, data, mode="create")
        return True
    except FileExistsError:
        return False
    except NotImplementedError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
    if path.exists():
        return False
    path.write_bytes(data)
    return True


def _create_local(path: Path, data: bytes, mode: int) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system
        pass
    finally:
        tmp.unlink()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def remove_tree(path: Any) -> None:
    """Remove a folder (a prefix on a store) and everything under it; absent is fine."""
    if is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            path.fs.rm(path.path, recursive=True)
        return
    if Path(path).exists():
        shutil.rmtree(path)
