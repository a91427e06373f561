"""Cases: intake, the lifecycle, and everything recorded about a case."""
