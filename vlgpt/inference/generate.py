"""Interleaved decoding: text by sampling, images by the image head (VL-GPT §3.3).

Text tokens are sampled from the LM head with a KV cache. Once [IMG] appears — sampled, or
appended to force an image — the next N steps run through the image head, each predicted
embedding fed back as the next input; then [/IMG] is fed, the N embeddings go through the
detokenizer and pixel decoder, and text decoding goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..core.devices import module_device
from ..data import sequences as S


class GenerationError(ValueError):
    """Bad sampling parameters or a prompt that does not fit; the message says which."""


class PromptTooLong(GenerationError):
    """A prompt that leaves no room for its answer in the model's context."""


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    max_images: int = 4
    seed: int = 0  # text sampling and, with a diffusion decoder, the drawing's noise
    # A diffusion decoder's (`--decoder`) denoising steps and classifier-free guidance scale (> 1 on);
    # None: the decoder's defaults. vlgpt's own decoder is deterministic and takes neither.
    steps: int | None = None
    guidance: float | None = None
    # Classifier-free guidance of the image head: 1 is none; w > 1 pushes each image embedding away
    # from what the model draws with no text at all (models/image_heads.py). For text-to-image.
    head_guidance: float = 1.0
    # Visual contrastive decoding (Leng et al. 2024, VCD): each text token's logits are
    # (1 + alpha) * logits(image) - alpha * logits(distorted image), among the tokens whose
    # probability given the image is at least beta times the most likely one's. The distortion is
    # diffusion noise at step `vcd_noise_step` of 1000 (linear schedule) on the prompt's pixels.
    # "standard" decodes as sampled above; alpha 0 is standard decoding token for token.
    decoding: str = "standard"
    vcd_alpha: float = 1.0
    vcd_beta: float = 0.1
    vcd_noise_step: int = 500

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise GenerationError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.head_guidance <= 20:
            raise GenerationError(f"head guidance must be in [0, 20] (1: none), got {self.head_guidance}")
        if self.guidance is not None and not 0 <= self.guidance <= 50:
            raise GenerationError(f"guidance must be in [0, 50] (1 or less: none), got {self.guidance}")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise GenerationError(f"steps must be in [1, 1000], got {self.steps}")
        if self.decoding not in DECODINGS:
            raise GenerationError(f"unknown decoding {self.decoding!r}; choose one of {', '.join(DECODINGS)}")
        if not 0 <= self.vcd_alpha <= 10:
            raise GenerationError(f"vcd alpha must be in [0, 10], got {self.vcd_alpha}")
        if not 0 <= self.vcd_beta <= 1:
            raise GenerationError(
                f"vcd beta (the plausibility cut-off) must be in [0, 1], got {self.vcd_beta}"
            )
        if not 1 <= self.vcd_noise_step <= 999:
            raise GenerationError(f"vcd noise step must be in [1, 999], got {self.vcd_noise_step}")


DECODINGS = ("standard", "vcd")


def contrastive_logits(
    logits: torch.Tensor, distorted: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """VCD's logits: (1 + alpha) * logits - alpha * distorted, set to -inf wherever the token's
    probability given the clean image is below beta times the top token's (the adaptive plausibility
    constraint, so that contrast never promotes a token the image itself finds implausible)."""
    logits, distorted = logits.float(), distorted.float()
    probs = torch.softmax(logits, dim=-1)
    plausible = probs >= beta * probs.max(dim=-1, keepdim=True).values
    contrasted = torch.nan_to_num((1 + alpha) * logits - alpha * distorted, nan=float("-inf"))
    return contrasted.masked_fill(~plausible, float("-inf"))


@dataclass
class Output:
    """What the model wrote: text and images in order."""

    parts: list[tuple[str, object]] = field(default_factory=list)  # ("text", str) | ("image", PIL image)
    finish_reason: str = "stop"  # "stop" (EOS, a stop string, the image asked for), "length" or "cancelled"
    prompt_tokens: int = 0  # positions the prompt took (image embeddings included)
    completion_tokens: int = 0  # positions the answer took ([IMG] e_1 … e_N [/IMG] counts N + 2)
    wants_image: bool = False  # text_batch stopped this answer at [IMG]: `generate` would draw on

    @property
    def text(self) -> str:
        return "".join(p for kind, p in self.parts if kind == "text").strip()

    @property
    def images(self) -> list:
        return [p for kind, p in self.parts if kind == "image"]


def sample_token(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator) -> int:
    """Greedy at temperature 0, else temperature + top-k + top-p (nucleus) sampling."""
    if config.temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / config.temperature
    if config.top_k:
        kth = torch.topk(logits, min(config.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if config.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < config.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


OnPart = Callable[[str, object], None]
"""Streaming callback: ("text", delta) as the answer's text grows, ("image", PIL image) per drawn image."""


class TextStream:
    """Turns the decoded text of a growing answer into deltas for a streaming client.

    The tail that may still change is held back: a partial UTF-8 character (decoded as U+FFFD
    until its last byte arrives) and a suffix that could be the start of a stop string, so the
    deltas never show text that the final answer drops. Deltas join to the final text.
    """

    def __init__(self, stop: tuple[str, ...], on_part: OnPart | None):
        self.stop, self.on_part, self.sent = stop, on_part, ""

    def update(self, text: str, final: bool = False) -> None:
        if self.on_part is None:
            return
        safe = text if final else text.rstrip("\ufffd")
        if not final:
            for stop in self.stop:
                held = next(
                    (k for k in range(min(len(stop) - 1, len(safe)), 0, -1) if safe.endswith(stop[:k])), 0
                )
                safe = safe[: len(safe) - held]
        # BPE decoding is prefix-stable once held-back bytes are complete; if it ever is not, the
        # streamed text keeps what was sent and the non-streamed answer is the reference.
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            self.on_part("text", safe[len(self.sent) :])
            self.sent = safe


class InterleavedGenerator:
    def __init__(self, model, tokenizer, codec):
        self.model, self.tokenizer, self.codec = model.eval(), tokenizer, codec
        self.dim = codec.token_dim
        self.device = module_device(model)  # prompts are built on the CPU and moved here

    def _step(
        self, cache, token: int | None = None, embedding: torch.Tensor | None = None, place: int = 0
    ) -> torch.Tensor:
        """Feed one position (a token or an image's `place`-th embedding); returns its hidden state."""
        return self.model.step(cache, token, embedding, place)

    def _draw(self, cache, hidden: torch.Tensor, n: int, config: SamplingConfig, generator) -> torch.Tensor:
        """An image's N embeddings [N, d], the cache standing just after its [IMG] (whose hidden state
        is `hidden`). `lm.draw=next`: N regression steps, each prediction fed back as the next input;
        `queries`: the N learned queries in one pass, each regressing its own place."""
        uncond_cache, uncond = self._unconditional(n) if config.head_guidance != 1.0 else (None, None)
        if self.model.draw_queries is not None:
            if uncond_cache is not None:
                uncond = self.model.query_states(uncond_cache)
            return self.model.next_image_embedding(
                self.model.query_states(cache), generator, uncond, config.head_guidance
            )
        predicted = []
        for place in range(n):
            embedding = self.model.next_image_embedding(hidden, generator, uncond, config.head_guidance)
            predicted.append(embedding)
            hidden = self._step(cache, embedding=embedding, place=place)
            if uncond_cache is not None:
                uncond = self._step(uncond_cache, embedding=embedding, place=place)
        return torch.stack(predicted)

    def _unconditional(self, n: int):
        """The context classifier-free guidance steers away from: [BOS] [IMG] with no text, the
        sequence pretraining shows for a text-to-image pair whose text was dropped. Returns its cache
        and hidden state; each drawn embedding is fed to it as to the conditional context."""
        cache = self.model.new_cache(1, n + 3)
        self._step(cache, token=self.tokenizer.bos_id)
        return cache, self._step(cache, token=self.tokenizer.img_id)

    def _contrast(self, contrast: list[S.Segment] | None, prompt: dict, config: SamplingConfig):
        """VCD's second context: [cache, hidden] of the distorted prompt, or None for standard decoding
        and for a prompt with no image (nothing to distort: the contrast would change nothing)."""
        if config.decoding != "vcd" or not prompt["is_image"].any():
            return None
        if contrast is None:
            raise GenerationError(
                "contrastive decoding needs the prompt with its images distorted (contrast=)"
            )
        built = S.build(contrast, self.tokenizer, self.dim)
        if not torch.equal(built["ids"], prompt["ids"]) or not torch.equal(
            built["is_image"], prompt["is_image"]
        ):
            raise GenerationError("the contrast prompt must be the prompt itself with other image embeddings")
        cache = self.model.new_cache(1, self.model.max_seq_len)
        batch = {k: built[k][None].to(self.device) for k in ("ids", "image_embeds", "is_image")}
        return [cache, self.model(batch, cache)["hidden"][0, -1]]

    @torch.inference_mode()
    def text_batch(
        self, prompts: list[list[S.Segment]], config: SamplingConfig = SamplingConfig()
    ) -> list[Output]:
        """Text answers to many prompts at once, one forward pass per position for the whole batch.

        Prompts are left-padded to one length (RoPE is relative, so padding shifts nothing) and
        masked out; a row ends at [EOS] or, since images are drawn one at a time by `generate`, at
        [IMG]. Stop strings end a row's text where they appear. Greedy answers equal `generate`'s.
        """
        if config.decoding != "standard":
            raise GenerationError("contrastive decoding answers one prompt at a time: use generate")
        built = [S.build(p, self.tokenizer, self.dim) for p in prompts]
        B, T = len(built), max(len(b["ids"]) for b in built)
        max_len = self.model.config.lm.max_seq_len
        if T + 1 > max_len:
            raise PromptTooLong(
                f"the longest prompt takes {T} positions; with an answer it would exceed the "
                f"context of {max_len}. Shorten it."
            )
        batch = {
            "ids": torch.full((B, T), self.tokenizer.pad_id),
            "image_embeds": torch.zeros(B, T, self.dim),
            "is_image": torch.zeros(B, T, dtype=torch.bool),
        }
        attention = torch.zeros(B, max_len, dtype=torch.long)
        for i, b in enumerate(built):
            n = len(b["ids"])
            for key in batch:
                batch[key][i, T - n :] = b[key]
            attention[i, T - n : T] = 1
        batch = {k: v.to(self.device) for k, v in batch.items()}
        attention = attention.to(self.device)
        cache = self.model.new_cache(B, max_len)
        hidden = self.model({**batch, "attention_mask": attention[:, :T]}, cache)["hidden"][
            :, -1
        ]  # [B, width]
        generator = torch.Generator(self.device).manual_seed(config.seed)
        answers, done = [[] for _ in range(B)], [False] * B
        reasons, drawing = ["length"] * B, [False] * B
        for _ in range(config.max_new_tokens):
            logits = self.model.next_token_logits(hidden)  # [B, V]
            tokens = [
                sample_token(logits[i], config, generator) if not done[i] else self.tokenizer.pad_id
                for i in range(B)
            ]
            for i, token in enumerate(tokens):
                if not done[i] and token in (self.tokenizer.eos_id, self.tokenizer.img_id):
                    done[i], reasons[i], drawing[i] = True, "stop", token == self.tokenizer.img_id
                elif not done[i]:
                    answers[i].append(token)
            if all(done) or cache.length >= max_len:
                break
            attention[:, cache.length] = 1
            x = self.model.embed_text(torch.tensor(tokens, device=self.device)[:, None])  # [B, 1, width]
            hidden = self.model.transformer(x, attention[:, : cache.length + 1], cache)[:, -1]
        outputs = []
        for i, ids in enumerate(answers):
            text = self.tokenizer.decode(ids)
            for stop in config.stop:
                if stop in text:
                    text, reasons[i] = text.split(stop)[0], "stop"
            outputs.append(
                Output(
                    parts=[("text", text)] if text else [],
                    finish_reason=reasons[i],
                    prompt_tokens=len(built[i]["ids"]),
                    completion_tokens=len(ids) + (reasons[i] == "stop"),
                    wants_image=drawing[i],
                )
            )
        return outputs

    @torch.inference_mode()  # no autograd bookkeeping at all: ~10% faster per token than no_grad here
    def generate(
        self,
        segments: list[S.Segment],
        config: SamplingConfig = SamplingConfig(),
        force_image: bool = False,
        stop_after_image: bool = False,
        require_image: bool = False,
        on_part: OnPart | None = None,
        should_stop: Callable[[], bool] | None = None,
        contrast: list[S.Segment] | None = None,
    ) -> Output:
        """Decode text and images until [EOS], `max_new_tokens` steps or the context's end.

        contrast: with `config.decoding == "vcd"`, the same prompt with its images distorted
        (`Pipeline._prompt`); it is fed every position the answer feeds, so each
        token's logits are contrasted with what the model would say without seeing the image.

        force_image: the answer starts with [IMG] (editing). require_image: the model may write
        first (a drawing's layout plan), but [IMG] replaces [EOS] or the last step if no image came.
        `on_part` streams the answer as it grows (see TextStream); `should_stop` is polled before
        every position and ends decoding early (finish_reason "cancelled").
        """
        prompt = S.build(segments, self.tokenizer, self.dim)
        max_len = self.model.max_seq_len
        n = self.codec.num_tokens
        if len(prompt["ids"]) + (n + 2 if force_image else 1) > max_len:
            raise PromptTooLong(
                f"the prompt takes {len(prompt['ids'])} positions; with the answer it would exceed "
                f"the context of {max_len}. Shorten it or use fewer images."
            )
        cache = self.model.new_cache(1, max_len)  # KVCache, or an HF backbone's HFCache
        batch = {k: prompt[k][None].to(self.device) for k in ("ids", "image_embeds", "is_image")}
        hidden = self.model(batch, cache)["hidden"][0, -1]
        contrasted = self._contrast(contrast, prompt, config)  # (cache, hidden) or None

        def feed(token=None, embedding=None, place=0):
            if contrasted is not None:
                contrasted[1] = self._step(contrasted[0], token, embedding, place)
            return self._step(cache, token, embedding, place)

        def next_token(hidden):
            logits = self.model.next_token_logits(hidden)
            if contrasted is not None:
                distorted = self.model.next_token_logits(contrasted[1])
                logits = contrastive_logits(logits, distorted, config.vcd_alpha, config.vcd_beta)
            return sample_token(logits, config, generator)

        generator = torch.Generator(self.device).manual_seed(config.seed)
        output, text_ids, images = Output(prompt_tokens=len(prompt["ids"]), finish_reason="length"), [], 0
        stream = TextStream(config.stop, on_part)
        pending = self.tokenizer.img_id if force_image else None
        for step in range(config.max_new_tokens):
            if should_stop is not None and should_stop():
                output.finish_reason = "cancelled"
                break
            if cache.length >= max_len - 1:
                break
            token = pending if pending is not None else next_token(hidden)
            pending = None
            if (
                require_image
                and images == 0
                and (
                    token == self.tokenizer.eos_id
                    or step == config.max_new_tokens - 1
                    or cache.length + n + 3 >= max_len
                )
            ):
                token = self.tokenizer.img_id
            if token == self.tokenizer.eos_id:
                output.finish_reason = "stop"
                output.completion_tokens += 1  # sampled, never fed back
                break
            if token == self.tokenizer.img_id:
                if images >= config.max_images or cache.length + n + 2 > max_len:
                    break
                if text_ids:
                    decoded = self.tokenizer.decode(text_ids)
                    stream.update(decoded, final=True)
                    output.parts.append(("text", decoded))
                    text_ids, stream = [], TextStream(config.stop, on_part)
                hidden = feed(token=token)
                predicted = self._draw(cache, hidden, n, config, generator)
                if (
                    contrasted is not None
                ):  # the contrast context takes the image's positions as the answer's did
                    if self.model.draw_queries is not None:
                        self.model.query_states(contrasted[0])
                    else:
                        for place, embedding in enumerate(predicted):
                            self._step(contrasted[0], embedding=embedding, place=place)
                hidden = feed(token=self.tokenizer.img_end_id)
                drawn = self.codec.decode(
                    predicted[None], config.steps, config.guidance, config.seed + images
                )[0]
                output.parts.append(("image", drawn))
                if on_part is not None:
                    on_part("image", drawn)
                images += 1
                if stop_after_image:
                    output.finish_reason = "stop"
                    break
                continue
            text_ids.append(token)
            hidden = feed(token=token)
            if config.stop or on_part is not None:
                decoded = self.tokenizer.decode(text_ids)
                if any(s in decoded for s in config.stop):
                    output.finish_reason = "stop"
                    break
                stream.update(decoded)
        if text_ids:
            decoded = self.tokenizer.decode(text_ids)
            for s in config.stop:
                decoded = decoded.split(s)[0]
            stream.update(decoded, final=True)
            output.parts.append(("text", decoded))
        output.completion_tokens += cache.length - len(prompt["ids"])
        return output
