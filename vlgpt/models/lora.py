"""LoRA for VL-GPT's transformer through Hugging Face `peft` (VL-GPT §3.2: rank 32, every linear layer).

    add_lora(model, rank=32, alpha=32)   # freezes the transformer, adds adapters to every linear layer
    adapter = lora_state_dict(model)     # the adapters alone, to save separately
    merge_lora(model)                    # folds W + (alpha / r) B A into W; the model is plain again

The paper's freezing: with LoRA, the transformer's own weights stay frozen and the adapters, the
image input projection and the image head train (the token embedding and LM head stay frozen,
as in a pretrained LLM). On a Hugging Face backbone (models/hf_backbone.py) the adapters go on every
linear layer of its decoder (peft's "all-linear"), and its token embedding and LM head train too:
[IMG] and [/IMG] are new rows there, which would otherwise stay at their initial values.
"""

from __future__ import annotations

import torch
from torch import nn


def add_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    model.requires_grad_(False)
    targets = model.lora_targets if isinstance(model.lora_targets, str) else list(model.lora_targets)
    # GPT-2's linear layers are transformers' Conv1D, whose weight is stored transposed.
    transposed = any(type(m).__name__ == "Conv1D" for m in model.lora_root.modules())
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        fan_in_fan_out=transposed,
    )
    inject_adapter_in_model(config, model.lora_root)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)
    for head in (model.image_in, model.image_head):
        head.requires_grad_(True)
    # the image place embeddings and the drawing queries are new weights too
    for name in ("image_pos", "draw_queries"):
        if getattr(model, name, None) is not None:
            getattr(model, name).requires_grad_(True)
    if model.lora_trains_embeddings:  # an HF backbone: its new [IMG] / [/IMG] rows must learn
        for module in model.embedding_modules:
            module.requires_grad_(True)
    return model


def has_lora(model: nn.Module) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights alone (names as in the model)."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and drop the adapter modules (in place)."""
    from peft.tuners.lora import LoraLayer

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge()
                setattr(parent, child_name, child.get_base_layer())
    return model
