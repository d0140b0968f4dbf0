"""vlgpt."""
