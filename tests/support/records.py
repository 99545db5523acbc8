"""Pieces of run records as loadgate writes them, for tests that build a record by hand."""

from __future__ import annotations

from typing import Any


def comparison(scope: str, outcome: str, text: str, **values: Any) -> dict[str, Any]:
    """A p95 comparison with the baseline as a gate records it (``gates/<stage>.json``)."""
    return {
        "metric": "p95",
        "source": "http",
        "scope": scope,
        "unit": "ms",
        "outcome": outcome,
        "baseline_value": None,
        "current_value": None,
        "change": None,
        "change_kind": "relative",
        "ci_low": None,
        "ci_high": None,
        "confidence": 0.95,
        "threshold": 0.3,
        "baseline_samples": 2000,
        "current_samples": 2000,
        "baseline_seconds": 100,
        "current_seconds": 100,
        "resamples": 1000,
        "method": "block bootstrap",
        "text": text,
        **values,
    }


def history_entry(run_id: str, release: str, stage: str, verdict: str = "pass") -> dict[str, Any]:
    """A release history entry with one stage, as the report's history holds it."""
    return {
        "run_id": run_id,
        "release": release,
        "verdict": verdict,
        "recorded_at": "2026-01-01T00:00:00Z",
        "plan": "harmonyflow-10k",
        "scale": 0.01,
        "time_scale": 0.1,
        "run_root": "artifacts/run",
        "stages": {stage: {"verdict": verdict}},
    }
