"""A Hugging Face causal LM as VL-GPT's transformer (Llama, Qwen2, Mistral, GPT-2 families).

VL-GPT (§3.2) builds on a pretrained LLM: `VLGPT(config, HFBackbone(model))` is VLGPT with the
transformer, the token embedding and the LM head taken from a `transformers` causal LM. Only the
image side is new: the input projection (image embedding -> the LM's width) and the image head
(width -> image embedding), sized to the LM's hidden width. Everything else — the splice, the
losses, generation — is VLGPT's own code, through the backbone contract that our own
`transformer.LanguageModel` implements too (`models/vlgpt.py`). Weights are named
`transformer.model.<the HF names>`, `image_in.*` and `image_head.*`; `config.vocab_size` is
the LM's embedding rows (after adding [IMG] and [/IMG]).

The model is handed in already built; reading folders (and refusing remote code or pickled weights)
is `vlgpt/core/hf_lm.py`'s job.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class HFCache:
    """The KV cache of an HF backbone: a `DynamicCache` (made by the model on the first call) and the
    positions it holds, like KVCache's `length`."""

    past: object = None
    length: int = 0


class HFBackbone(nn.Module):
    """Runs an HF causal LM's decoder on input embeddings: x [B, T, width] -> hidden [B, T, width]."""

    lora_targets = (
        "all-linear"  # peft: every nn.Linear / GPT-2 Conv1D of the decoder (the LM head is outside it)
    )
    lora_trains_embeddings = True  # [IMG] and [/IMG] are new rows of the embedding and the LM head

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = (
            model  # the *ForCausalLM; its decoder is `model.base_model`, its LM head the output embeddings
        )
        # transformers 5.x names the KV cache argument (and output) `cache`; 4.x `past_key_values`.
        parameters = inspect.signature(model.base_model.forward).parameters
        self.cache_name = "cache" if "cache" in parameters else "past_key_values"

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_seq_len(self) -> int:
        """The LM's context (`max_position_embeddings`; GPT-2's `n_positions` maps to it)."""
        return int(self.model.config.max_position_embeddings)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(hidden)

    @property
    def lora_root(self) -> nn.Module:
        return self.model.base_model  # the decoder: adapters go here, never on the LM head

    @property
    def embedding_modules(self) -> tuple[nn.Module, ...]:
        return self.model.get_input_embeddings(), self.model.get_output_embeddings()

    def new_cache(self, batch: int, max_len: int, dtype=None, device=None) -> HFCache:
        return HFCache()  # the model makes its DynamicCache on the first call

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: HFCache | None = None
    ) -> torch.Tensor:
        """Same contract as Transformer.forward: `attention_mask` [B, T_total] marks real positions;
        with `cache`, x continues the cached sequence. Returns the final-norm hidden states."""
        start = cache.length if cache is not None else 0
        total = start + x.shape[1]
        if total > self.max_seq_len:
            raise ValueError(f"sequence of {total} positions exceeds max_seq_len {self.max_seq_len}")
        past = {self.cache_name: cache.past} if cache is not None else {}
        if attention_mask is not None:  # left-padded rows count positions from their first real token
            position = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:total]
            past["position_ids"] = position
        out = self.model.base_model(
            inputs_embeds=x, attention_mask=attention_mask, use_cache=cache is not None, **past
        )
        if cache is not None:
            cache.past, cache.length = out[self.cache_name], total
        return out.last_hidden_state  # [B, T, width], after the LM's final norm
