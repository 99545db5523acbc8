"""System-metrics sources: the interface (``base``) and its implementations (``scrape``, ...)."""

from loadgate.metrics.base import MetricsSource, NullSource, StaticSource

__all__ = ["MetricsSource", "NullSource", "StaticSource"]
