"""loadgate: release-gated load testing."""
