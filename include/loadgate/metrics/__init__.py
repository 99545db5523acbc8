"""System-metrics sources: the interface (``base``) and its implementations (``scrape``, ...)."""

from .base import MetricsSource, NullSource, StaticSource

__all__ = ["MetricsSource", "NullSource", "StaticSource"]
