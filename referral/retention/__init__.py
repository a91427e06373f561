"""Retention, erasure and subject access."""
