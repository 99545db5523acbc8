"""The example's plans, shipped as package data."""
