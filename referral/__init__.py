"""referral: case management for a municipal referral mechanism (P/CVE)."""
