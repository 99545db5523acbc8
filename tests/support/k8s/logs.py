"""Pod logs as ``GET …/pods/NAME/log`` answers them: ``container``, ``timestamps`` (RFC 3339
with nanoseconds), ``sinceSeconds``, ``tailLines``, and ``follow`` (the lines as they come,
until the container ends or the pod goes)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from .errors import ApiError, rfc3339_nano
from .pods import Container, PodRunner


def true(value: str | None) -> bool:
    """A boolean query parameter."""
    return (value or "").lower() in ("true", "1")


def _container(runner: PodRunner, namespace: str, name: str, query: Mapping[str, str]) -> Container:
    pod = runner.store.get("v1", "pods", namespace, name)
    runtime = runner.runtimes.get((namespace, name))
    names = [c["name"] for c in pod["spec"]["containers"]]
    container = query.get("container")
    if not container:
        if len(names) > 1:
            raise ApiError(
                400,
                f"a container name must be specified for pod {name}, choose one of: "
                f"[{' '.join(names)}]",
            )
        container = names[0]
    if container not in names or runtime is None:
        raise ApiError(400, f"container {container} is not valid for pod {name}")
    if true(query.get("previous")):  # no container here restarts
        raise ApiError(
            400, f'previous terminated container "{container}" in pod "{name}" not found'
        )
    box = runtime.containers[container]
    if box.state == "waiting":
        raise ApiError(
            400,
            f'container "{container}" in pod "{name}" is waiting to start: {box.waiting_reason}',
        )
    return box


def pod_log(
    runner: PodRunner, namespace: str, name: str, query: Mapping[str, str]
) -> Iterator[bytes]:
    """The log's chunks. A request the server refuses raises ApiError here, before any chunk;
    with ``follow`` the chunks come as the container writes them."""
    timestamps = true(query.get("timestamps"))
    since_ns = None
    if query.get("sinceSeconds"):
        since_ns = time.time_ns() - int(query["sinceSeconds"]) * 1_000_000_000

    def lines(box: Container, start: int) -> tuple[bytes, int]:
        out = [
            (rfc3339_nano(ts).encode() + b" " + line) if timestamps else line
            for ts, line in box.lines[start:]
            if since_ns is None or ts >= since_ns
        ]
        tail = query.get("tailLines")
        if start == 0 and tail:
            out = out[-int(tail) :] if int(tail) > 0 else []
        return b"".join(out), len(box.lines)

    with runner.store.lock:
        box = _container(runner, namespace, name, query)
        runtime = runner.runtimes[(namespace, name)]
        first, cursor = lines(box, 0)

    def follow() -> Iterator[bytes]:
        nonlocal cursor
        yield first
        changed = runner.store.changed

        def gone() -> bool:
            return runner.store.closing or runner.runtimes.get((namespace, name)) is not runtime

        finished = False
        while not finished:
            with changed:
                while cursor == len(box.lines) and not box.output_done and not gone():
                    changed.wait(0.5)
                chunk, cursor = lines(box, cursor)
                finished = cursor == len(box.lines) and (box.output_done or gone())
            yield chunk

    return follow() if true(query.get("follow")) else iter([first])
