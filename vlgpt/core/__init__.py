"""Floor 0, what every other floor stands on: configs and presets, model-folder files, devices,
prompts, text tokenizers."""
