"""Model components, one per file."""
