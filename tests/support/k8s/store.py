"""The resource store: the cluster's objects with their metadata, resource versions and the
API server's validation; controllers (pods, deployments) react to what is created or changed."""

from __future__ import annotations

import copy
import re
import threading
import uuid
from typing import Any

from .errors import ApiError, rfc3339
from .selectors import field_match, labels_match, parse_label_selector

# (group/version, plural) -> kind
KINDS = {
    ("v1", "pods"): "Pod",
    ("v1", "events"): "Event",
    ("v1", "secrets"): "Secret",
    ("apps/v1", "deployments"): "Deployment",
    ("apps/v1", "replicasets"): "ReplicaSet",
}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

Key = tuple[str, str, str, str]  # (group/version, plural, namespace, name)


class Controller:
    """What runs behind a kind's objects; every hook is called with the store's lock held."""

    def validate(self, obj: dict[str, Any]) -> None:
        """A new object, before it is stored: refuse it (ApiError) or fill in defaults."""

    def created(self, obj: dict[str, Any]) -> None:
        """A new object, stored."""

    def replacing(self, current: dict[str, Any], body: dict[str, Any]) -> None:
        """An update of ``current`` to ``body``, before it is stored: refuse it or adjust it."""

    def replaced(self, old: dict[str, Any], obj: dict[str, Any]) -> None:
        """An update, stored (``old`` is the object as it was)."""


class Store:
    """Objects by (group, plural, namespace, name). One lock guards the whole server's state;
    its condition ``changed`` is notified at every change (waits and followed logs use it)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[Key, dict[str, Any]] = {}
        self.controllers: dict[str, Controller] = {}  # by plural
        self.closing = False
        self.rv = 0

    def touch(self, obj: dict[str, Any]) -> None:
        """A new resourceVersion for a changed object."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.changed.notify_all()

    def create(self, group: str, plural: str, namespace: str, body: Any) -> dict[str, Any]:
        kind = KINDS[(group, plural)]
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        meta = body.setdefault("metadata", {}) or {}
        body["metadata"] = meta
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = meta["generateName"] + uuid.uuid4().hex[:5]
        if not name:
            raise ApiError(422, f"{kind} is invalid: metadata.name: Required value", kind=kind)
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise ApiError(
                422,
                f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": a '
                "lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.'",
                name=name,
                kind=plural,
            )
        for label_key, label_value in (meta.get("labels") or {}).items():
            if not isinstance(label_value, str) or not _LABEL_VALUE.match(label_value):
                raise ApiError(
                    422,
                    f'{kind} "{name}" is invalid: metadata.labels: Invalid value: '
                    f'"{label_value}" (label {label_key})',
                )
        key = (group, plural, namespace, name)
        controller = self.controllers.get(plural, Controller())
        with self.lock:
            if key in self.objects:
                raise ApiError(409, f'{plural} "{name}" already exists', name=name, kind=plural)
            meta.update(
                name=name,
                namespace=namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=rfc3339(),
            )
            body["kind"] = kind
            body["apiVersion"] = group
            controller.validate(body)
            self.objects[key] = body
            self.touch(body)
            controller.created(body)
            return body

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((group, plural, namespace, name))
        if obj is None:
            raise ApiError(404, f'{plural} "{name}" not found', name=name, kind=plural)
        return obj

    def select(
        self,
        group: str,
        plural: str,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """The stored objects of a kind (in one namespace or all) that the selectors match."""
        reqs = parse_label_selector(label_selector)
        return [
            obj
            for (g, p, ns, _), obj in sorted(self.objects.items())
            if (g, p) == (group, plural)
            and (namespace is None or ns == namespace)
            and labels_match(obj["metadata"].get("labels"), reqs)
            and field_match(obj, field_selector)
        ]

    def list(
        self,
        group: str,
        plural: str,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
    ) -> dict[str, Any]:
        """A ``…List`` answer: copies of the matching objects, without kind and apiVersion."""
        items = []
        for obj in self.select(group, plural, namespace, label_selector, field_selector):
            item = copy.deepcopy(obj)
            item.pop("kind", None)
            item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": KINDS[(group, plural)] + "List",
            "apiVersion": group,
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    def replace(
        self, group: str, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        current = self.get(group, plural, namespace, name)
        old = copy.deepcopy(current)
        meta = body.setdefault("metadata", {})
        for immutable in ("name", "namespace", "uid", "creationTimestamp"):
            meta[immutable] = current["metadata"].get(immutable)
        controller = self.controllers.get(plural, Controller())
        controller.replacing(current, body)
        body["kind"] = current["kind"]
        body["apiVersion"] = current["apiVersion"]
        current.clear()
        current.update(body)
        self.touch(current)
        controller.replaced(old, current)
        return current
