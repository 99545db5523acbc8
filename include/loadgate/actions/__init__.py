"""Rollback actions: what runs when a gate says rollback."""
