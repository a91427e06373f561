"""Anonymised statistics: snapshots of a fixed family of protected tables, and serving them."""
