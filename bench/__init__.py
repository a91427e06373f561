"""Benchmarks (`make bench`). Not part of the installed package."""
