"""Container logs through the API: streamed, only the last bytes kept, for a bounded time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from loadgate import kube
from loadgate.kube import status_of

if TYPE_CHECKING:
    pass


LOG_READ_S = 120.0  # at most this long reading one container's log (a log still growing)
LOG_CHUNK = 64 * 1024


def collect_pod_logs(
    api: Any,
    namespace: str,
    selector: str,
    dest_dir: Any,
    *,
    max_bytes: int = 5_000_000,
) -> list[dict[str, Any]]:
    """Every container's log of the pods matching ``selector`` into ``dest_dir``.

    ``dest_dir`` is a local path or a UPath (``s3://…``). Files are ``<pod>.log`` (one container)
    or ``<pod>.<container>.log``, with the kubelet's timestamps; a container that restarted also
    gets ``….previous.log`` (what it wrote before it crashed). A log is streamed and kept to
    its last ``max_bytes`` (never more in memory), read for at most :data:`LOG_READ_S` seconds
    (``incomplete`` in its entry when it was still coming). Returns one entry per file (pod,
    container, path, bytes) or per failure (pod, container, error): a pod that cannot be read
    does not stop the others.
    """
    from upath import UPath

    dest = UPath(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    pods = api.list_namespaced_pod(
        namespace, label_selector=selector, _request_timeout=kube.API_TIMEOUT
    ).items
    written: list[dict[str, Any]] = []
    for pod in pods:
        name = pod.metadata.name
        containers = [c.name for c in (pod.spec.containers or [])]
        restarts = (
            {s.name: s.restart_count or 0 for s in (pod.status.container_statuses or [])}
            if pod.status
            else {}
        )
        for container in containers:
            stem = name if len(containers) == 1 else f"{name}.{container}"
            reads = [(False, f"{stem}.log")]
            if restarts.get(container):
                reads.append((True, f"{stem}.previous.log"))
            for previous, filename in reads:
                entry: dict[str, Any] = {"pod": name, "container": container}
                try:
                    response = api.read_namespaced_pod_log(
                        name,
                        namespace,
                        container=container,
                        timestamps=True,
                        previous=previous,
                        _preload_content=False,
                        _request_timeout=kube.API_TIMEOUT,
                    )
                    complete = False
                    try:
                        data, complete = read_tail(response, max_bytes, LOG_READ_S)
                    finally:
                        if not complete:  # the body is unfinished: never reuse its connection
                            response.close()
                        response.release_conn()
                except Exception as exc:
                    entry["error"] = f"{type(exc).__name__}: {status_of(exc) or exc}"
                    written.append(entry)
                    continue
                target = dest / filename
                target.write_bytes(data)
                entry.update(path=str(target), bytes=len(data), previous=previous)
                if not complete:
                    entry["incomplete"] = True
                written.append(entry)
    return written


def read_tail(
    response: Any, max_bytes: int, max_seconds: float, *, chunk: int = LOG_CHUNK
) -> tuple[bytes, bool]:
    """The last ``max_bytes`` of a streamed HTTP body (a urllib3 response), read as it comes
    (``read1``: what has arrived, up to a chunk) so that no more than that and a chunk is ever
    held; reading stops after ``max_seconds`` (each wait for bytes is bounded by the request's
    read timeout). Returns (the bytes kept, whether the body was read to its end)."""
    kept = bytearray()
    deadline = time.monotonic() + max_seconds
    while True:
        piece = response.read1(chunk, decode_content=True)
        if not piece:
            return bytes(kept), True
        kept += piece
        if len(kept) > max_bytes:
            del kept[: len(kept) - max_bytes]
        if time.monotonic() >= deadline:
            return bytes(kept), False
