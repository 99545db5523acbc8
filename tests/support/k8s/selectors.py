"""Label and field selectors, as list and delete-collection calls send them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ApiError, unsupported

Requirement = tuple[str, str, set[str]]  # (key, operator: in | notin | exists | !, values)

_SET_REQ = re.compile(r"^([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (set-based requirements)."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if current:
        parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``."""
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        match = _SET_REQ.match(part)
        if match:
            values = {v.strip() for v in match.group(3).split(",") if v.strip()}
            reqs.append((match.group(1), match.group(2), values))
        elif "!=" in part:
            key, value = part.split("!=", 1)
            reqs.append((key.strip(), "notin", {value.strip()}))
        elif "==" in part or "=" in part:
            key, value = re.split("==?", part, maxsplit=1)
            reqs.append((key.strip(), "in", {value.strip()}))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!", set()))
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", part):
            reqs.append((part, "exists", set()))
        else:
            raise ApiError(400, f"unable to parse requirement: {part!r}")
    return reqs


def labels_match(labels: Mapping[str, str] | None, reqs: list[Requirement]) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        if op == "in" and not (present and labels[key] in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def dig(obj: Any, dotted: str) -> Any:
    """``obj``'s value at a dotted path (``metadata.name``), None where it has none."""
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def field_match(obj: Mapping[str, Any], selector: str | None) -> bool:
    for part in _split_top(selector or ""):
        negate = "!=" in part
        key, value = re.split("!=|==?", part, maxsplit=1)
        actual = dig(obj, key.strip())
        actual = "" if actual is None else str(actual)
        if (actual == value.strip()) == negate:
            return False
    return True


def match_labels_selector(selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` object's ``matchLabels`` as selector text."""
    selector = selector or {}
    if selector.get("matchExpressions"):
        raise unsupported("a selector's matchExpressions")
    return ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
