"""PATCH bodies: JSON patch (RFC 6902, by ``jsonpatch``) and strategic merge patch."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from .errors import ApiError

# The merge key of each list of objects a strategic merge patch merges item by item.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name"}
_MERGE_KEYS |= {"volumeMounts": "mountPath", "ports": "containerPort"}


def strategic_merge_patch(target: Any, patch: Any, key: str | None = None) -> Any:
    """Merge patch, except that lists of named objects (containers, env, volumes …) are merged
    item by item on their merge key, as the API server does for the built-in types."""
    merge_key = _MERGE_KEYS.get(key or "")
    if isinstance(patch, list) and isinstance(target, list) and merge_key:
        result = copy.deepcopy(target)
        for item in patch:
            index = next(
                (i for i, t in enumerate(result) if t.get(merge_key) == item[merge_key]), None
            )
            if index is None:
                result.append(copy.deepcopy(item))
            else:
                result[index] = strategic_merge_patch(result[index], item)
        return result
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, value in patch.items():
        if value is None:
            result.pop(k, None)
        else:
            result[k] = strategic_merge_patch(result.get(k), value, k)
    return result


def apply_patch(obj: dict[str, Any], content_type: str, body: Any) -> dict[str, Any]:
    content_type = content_type.split(";")[0].strip().lower()
    if content_type == "application/json-patch+json":
        try:
            return jsonpatch.apply_patch(obj, body)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, f"the JSON patch cannot be applied: {exc}") from None
    if content_type == "application/strategic-merge-patch+json":
        return strategic_merge_patch(obj, body)
    raise ApiError(415, f"the patch type {content_type!r} is not supported by this test server")
