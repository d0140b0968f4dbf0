"""The Hugging Face peer: the same VL-GPT language model built from `transformers` parts.

A user who does not pick vlgpt would compose a LLaVA-style model: `LlamaForCausalLM` for the
decoder, a linear projector for the image embeddings (LLaVA's `multi_modal_projector`, here one
layer as ours), and, for VL-GPT's image regression, a linear head on the last hidden states. The
splice, the two losses and the shapes are ours exactly, so both models do identical work:
`copy_weights` loads our weights into the peer and `check_same_math` asserts the losses match.

Attention is SDPA on both sides (`attn_implementation="sdpa"`), fp32 unless a caller autocasts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from vlgpt.models.vlgpt import VLGPT


class HFPeer(nn.Module):
    """LlamaForCausalLM + image projector + regression head, spliced and scored as `VLGPT`."""

    def __init__(self, model: VLGPT, special_ids: dict[str, int] | None = None):
        super().__init__()
        config, lm = model.config, model.config.lm
        ids = special_ids or {}
        llama = LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=lm.width,
            intermediate_size=lm.mlp_hidden,
            num_hidden_layers=lm.depth,
            num_attention_heads=lm.heads,
            num_key_value_heads=lm.heads,
            max_position_embeddings=lm.max_seq_len,
            rms_norm_eps=lm.norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": lm.rope_base},
            tie_word_embeddings=False,
            attention_bias=False,
            mlp_bias=False,
            pad_token_id=ids.get("pad"),
            bos_token_id=ids.get("bos"),
            eos_token_id=ids.get("eos"),
            attn_implementation="sdpa",
        )
        self.llm = LlamaForCausalLM(llama)
        self.projector = nn.Linear(config.image_token_dim, lm.width)
        self.image_head = nn.Linear(lm.width, config.image_token_dim)
        self.regression_weight = lm.regression_weight

    def embed(self, ids: torch.Tensor, image_embeds: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
        text = self.llm.get_input_embeddings()(ids)
        return torch.where(is_image[..., None], self.projector(image_embeds.to(text.dtype)), text)

    def forward(self, batch: dict) -> dict:
        x = self.embed(batch["ids"], batch["image_embeds"], batch["is_image"])  # [B, T, width]
        hidden = self.llm.model(
            inputs_embeds=x, attention_mask=batch.get("attention_mask"), use_cache=False
        ).last_hidden_state
        logits = self.llm.lm_head(hidden)  # [B, T, V]
        targets = batch["text_targets"]
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        mask = batch["image_target_mask"]
        mse = F.mse_loss(self.image_head(hidden[mask]).float(), batch["image_targets"][mask].float())
        return {
            "hidden": hidden,
            "loss": ce + self.regression_weight * mse,
            "ce": ce.detach(),
            "mse": mse.detach(),
        }


@torch.no_grad()
def copy_weights(model: VLGPT, peer: HFPeer) -> None:
    """Our weights -> the peer's (qkv split into q/k/v; the rest renamed)."""
    llm = peer.llm
    llm.model.embed_tokens.weight.copy_(model.transformer.token_embed.weight)
    llm.lm_head.weight.copy_(model.transformer.lm_head.weight)
    llm.model.norm.weight.copy_(model.transformer.norm.weight)
    for ours, theirs in zip(model.transformer.blocks, llm.model.layers):
        q, k, v = ours.attn.qkv.weight.chunk(3, dim=0)
        theirs.self_attn.q_proj.weight.copy_(q)
        theirs.self_attn.k_proj.weight.copy_(k)
        theirs.self_attn.v_proj.weight.copy_(v)
        theirs.self_attn.o_proj.weight.copy_(ours.attn.out.weight)
        theirs.mlp.gate_proj.weight.copy_(ours.mlp.gate.weight)
        theirs.mlp.up_proj.weight.copy_(ours.mlp.up.weight)
        theirs.mlp.down_proj.weight.copy_(ours.mlp.down.weight)
        theirs.input_layernorm.weight.copy_(ours.attn_norm.weight)
        theirs.post_attention_layernorm.weight.copy_(ours.mlp_norm.weight)
    peer.projector.load_state_dict(model.image_in.state_dict())
    peer.image_head.load_state_dict(model.image_head.state_dict())


@torch.no_grad()
def check_same_math(model: VLGPT, peer: HFPeer, batch: dict, tolerance: float = 1e-4) -> float:
    """|loss_ours - loss_peer| on one batch, after copying weights; raises if the models differ."""
    copy_weights(model, peer)
    ours, theirs = float(model(batch)["loss"]), float(peer(batch)["loss"])
    if abs(ours - theirs) > tolerance * max(1.0, abs(ours)):
        raise AssertionError(
            f"the peer computes a different loss ({theirs:.6f} vs ours {ours:.6f}): not identical work"
        )
    return abs(ours - theirs)
