"""Administration of municipalities, organisations and user accounts (admin role only)."""
