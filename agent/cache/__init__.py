"""The secret cache and what keeps it fresh (prefetch, change detection, rotation)."""
