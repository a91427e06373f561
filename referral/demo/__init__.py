"""Synthetic demo data for development. Never real people; never outside development mode."""
