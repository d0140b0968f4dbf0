"""Data for vlgpt: images, dataset formats (and the Shapes world written in them), their validation,
the streams the stages read, interleaved sequences and the VL-GPT stages' training samples."""
