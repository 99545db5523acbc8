"""System metrics from a Prometheus server through its HTTP API (production).

Each named metric is a PromQL expression from the plan. ``$window`` in an expression is replaced
by the window being evaluated (``rate(x[$window])``), never shorter than ``min_window_s`` so a
rate always spans at least two scrapes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import requests


class PrometheusError(RuntimeError):
    """Prometheus answered, but not with a usable result."""


def render(expr: str, window_s: float) -> str:
    return expr.replace("$window", f"{max(1, math.ceil(window_s))}s")


class PrometheusSource:
    """A metrics source reading instant queries from a Prometheus server at ``url``."""

    def __init__(
        self,
        url: str,
        queries: Mapping[str, str],
        *,
        timeout: float = 3.0,
        min_window_s: float = 15.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.queries = dict(queries)
        self.timeout = timeout
        self.min_window_s = min_window_s
        self._session = requests.Session()
        if headers:
            self._session.headers.update(headers)

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = self._session.get(f"{self.url}{path}", params=params, timeout=self.timeout)
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(f"{path}: HTTP {response.status_code}, not JSON") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, window_s: float = 60.0) -> float | None:
        """One instant query, summed over the series it returns; None when it returns none."""
        data = self._get("/api/v1/query", {"query": render(expr, max(window_s, self.min_window_s))})
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        values = [float(item["value"][1]) for item in data["result"]]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) if values else None

    def query_range(
        self, expr: str, start: float, end: float, step_s: float = 5.0, window_s: float = 30.0
    ) -> list[tuple[float, float]]:
        """A range query summed per timestamp, for the report's resource charts."""
        data = self._get(
            "/api/v1/query_range",
            {
                "query": render(expr, max(window_s, self.min_window_s)),
                "start": start,
                "end": end,
                "step": step_s,
            },
        )
        totals: dict[float, float] = {}
        for series in data["result"]:
            for ts, value in series["values"]:
                if not math.isnan(float(value)):
                    totals[float(ts)] = totals.get(float(ts), 0.0) + float(value)
        return sorted(totals.items())

    def sample(self, names: Sequence[str], window_s: float) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name in names:
            expr = self.queries.get(name)
            try:
                out[name] = None if expr is None else self.query(expr, window_s)
            except (requests.RequestException, PrometheusError, KeyError, ValueError):
                out[name] = None
        return out

    def healthy(self) -> bool:
        try:
            response = self._session.get(f"{self.url}/-/ready", timeout=self.timeout)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def alert_rules(self) -> list[dict[str, Any]]:
        """Every alerting rule Prometheus has loaded: name, expression, state."""
        groups = self._get("/api/v1/rules", {"type": "alert"})["groups"]
        return [
            {"group": g["name"], "name": r["name"], "query": r["query"], "state": r.get("state")}
            for g in groups
            for r in g["rules"]
        ]

    def missing_series(self, metrics: Sequence[str]) -> list[str]:
        """Which of these metric names have no series in Prometheus right now."""
        missing = []
        for metric in metrics:
            data = self._get("/api/v1/query", {"query": f"count({metric})"})
            if not data["result"]:
                missing.append(metric)
        return missing
