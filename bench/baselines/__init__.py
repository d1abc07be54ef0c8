"""Servers to compare against. Never imported by the service."""
