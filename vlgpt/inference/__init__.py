"""Using a trained run: the image codec, interleaved generation, the `vlgpt.load` pipeline,
quantization and export."""
