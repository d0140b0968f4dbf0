"""LoRA through peft: the paper's freezing, and merged weights that give the unmerged outputs."""

import torch

from vlgpt.core.config import LanguageModelConfig, VLGPTConfig
from vlgpt.models.lora import add_lora, has_lora, lora_state_dict, merge_lora
from vlgpt.models.vlgpt import VLGPT


def tiny_model() -> VLGPT:
    torch.manual_seed(0)
    return VLGPT(
        VLGPTConfig(64, 4, 16, LanguageModelConfig(width=32, depth=2, heads=2, mlp_hidden=64, max_seq_len=32))
    )


def inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "ids": torch.randint(0, 64, (2, 12), generator=g),
        "image_embeds": torch.randn(2, 12, 16, generator=g),
        "is_image": torch.rand(2, 12, generator=g) < 0.3,
    }


def test_lora_freezes_the_transformer_and_trains_adapters_and_image_heads():
    model = add_lora(tiny_model(), rank=4, alpha=8)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("image_in.", "image_head.")) for n in trainable)
    per_block = {n.split(".")[4] for n in trainable if "lora_A" in n}
    assert per_block == {"qkv", "out", "gate", "up", "down"}  # every linear layer of the blocks
    assert not any(
        p.requires_grad
        for n, p in model.named_parameters()
        if n.startswith(("transformer.token_embed", "transformer.lm_head"))
    )


def test_merged_model_matches_unmerged_adapters():
    model = add_lora(tiny_model(), rank=4, alpha=8)
    for name, p in model.named_parameters():  # LoRA's B starts at zero; give the adapters real weights
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    model.eval()
    batch = inputs()
    with torch.no_grad():
        before = model(batch)["hidden"]
        adapters = lora_state_dict(model)
        merge_lora(model)
        after = model(batch)["hidden"]
    assert adapters and not has_lora(model)
    assert set(model.state_dict()) == set(tiny_model().state_dict())  # plain VL-GPT weights again
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, tiny_model().eval()(batch)["hidden"])  # the adapters changed something
