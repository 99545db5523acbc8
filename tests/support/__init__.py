"""Test-only stand-ins for what cannot run here (Slack) and small helpers for the tests."""
