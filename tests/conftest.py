"""Shared pytest setup: taskkit's own fixtures, the same ones users get from taskkit.testing."""

pytest_plugins = ["taskkit.testing"]
