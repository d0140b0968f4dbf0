"""Data loading for vlgpt: images, datasets and their validation."""
