"""`vlgpt.load(run)`: a trained VL-GPT with the five things it does.

    model = vlgpt.load("runs/demo")
    model.caption("scene.png")                      # -> str
    model.ask("scene.png", "How many stars are there?")
    model.imagine("a red circle left of a blue star")  # -> PIL image
    model.edit("scene.png", "Make the circle green.")  # -> PIL image
    model.chat([{"role": "user", "content": [{"type": "image", "image": "scene.png"},
                                             {"type": "text", "text": "Describe the image."}]}])

Messages follow the OpenAI / Hugging Face content-list form; an image part carries its image under
"image" (a path, bytes or PIL image) or "image_url" ({"url": "data:..."}).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..core.devices import resolve
from ..core.prompts import DESCRIBE, draw_prompt
from ..data import sequences as S
from ..data.images import load_image, load_image_from_data_uri, to_array
from ..models.loading import load_vlgpt
from .generate import GenerationError, InterleavedGenerator, OnPart, Output, SamplingConfig
from .image_codec import ImageCodec
from .quantize import quantize_weights, require

# An edit's answer may be a sentence instead of an image (a refusal); one longer than this is no answer.
REFUSAL_TOKENS = 32


class Pipeline:
    def __init__(self, model, config: dict, codec: ImageCodec, path: Path, tokenizer=None):
        self.model, self.config, self.codec, self.path = model, config, codec, path
        self.tokenizer = tokenizer or codec.text_tokenizer  # an HF backbone brings its own
        self.generator = InterleavedGenerator(model, self.tokenizer, codec)

    # --- the five verbs ------------------------------------------------------------------------
    def caption(self, image, **sampling) -> str:
        return self._answer([{"type": "image", "image": image}, {"type": "text", "text": DESCRIBE}], sampling)

    def ask(self, image, question: str, **sampling) -> str:
        if not question or not question.strip():
            raise GenerationError("the question is empty")
        return self._answer([{"type": "image", "image": image}, {"type": "text", "text": question}], sampling)

    def imagine(self, prompt: str, **sampling):
        if not prompt or not prompt.strip():
            raise GenerationError("the prompt is empty")
        messages = [{"role": "user", "content": [{"type": "text", "text": draw_prompt(prompt.strip())}]}]
        return self._image(messages, sampling, plan_first=True)

    def edit(self, image, instruction: str, refuse: bool = True, **sampling):
        """The edited image; or, when the model answers in words instead (an edit that cannot be made:
        the object named is not there, or already is what is asked), that sentence, a str.
        `refuse=False` starts the answer with the image, as the image API does."""
        if not instruction or not instruction.strip():
            raise GenerationError("the instruction is empty")
        messages = [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "text", "text": instruction}],
            }
        ]
        if not refuse:
            return self._image(messages, sampling)
        budget = min(REFUSAL_TOKENS, sampling.get("max_new_tokens", REFUSAL_TOKENS))
        config = SamplingConfig(**{**sampling, "max_new_tokens": budget})
        prompt, contrast = self._prompt(messages, config)
        out = self.generator.generate(prompt, config, stop_after_image=True, contrast=contrast)
        if out.images:
            return out.images[0]
        if out.finish_reason == "stop" and out.text:
            return out.text  # a finished sentence and no image: the model declines
        return self._image(messages, sampling)  # neither: no decision in words, so it draws

    def chat(
        self,
        messages: list[dict],
        *,
        on_part: OnPart | None = None,
        should_stop: Callable[[], bool] | None = None,
        **sampling,
    ) -> Output:
        """Continue a conversation; the answer may hold text and images.

        `on_part` receives the answer as it grows (text deltas, then each drawn image), for
        streaming; `should_stop` is polled every position and ends the answer early when true.
        """
        config = SamplingConfig(**sampling)
        prompt, contrast = self._prompt(messages, config)
        return self.generator.generate(
            prompt, config, on_part=on_part, should_stop=should_stop, contrast=contrast
        )

    def chat_batch(self, conversations: list[list[dict]], **sampling) -> list[Output]:
        """Text answers to many conversations at once (`InterleavedGenerator.text_batch`: one forward pass
        per position for all of them). Greedy answers equal `chat`'s. An answer that starts an image
        stops there with `wants_image` set: finish it with `chat`, which draws. Contrastive decoding
        answers one conversation at a time (each has its own distorted context), through `chat`: its
        answers are whole, drawn images included."""
        if sampling.get("decoding") == "vcd":
            return [self.chat(messages, **sampling) for messages in conversations]
        return self.generator.text_batch(
            [self.segments(m) for m in conversations], SamplingConfig(**sampling)
        )

    # --- plumbing ------------------------------------------------------------------------------
    def segments(self, messages: list[dict]) -> list[S.Segment]:
        return self._prompt(messages, SamplingConfig())[0]

    def _prompt(
        self, messages: list[dict], config: SamplingConfig
    ) -> tuple[list[S.Segment], list[S.Segment] | None]:
        """The prompt's segments, and for contrastive decoding the same prompt with its images under
        diffusion noise (None for standard decoding, or when the prompt holds no image). Images are
        read once for both."""
        if not messages:
            raise GenerationError("no messages given")
        images = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                images += [self._load(part) for part in content if part.get("type") in ("image", "image_url")]

        def segments(pictures):
            embeddings = list(self.codec.encode(pictures)) if pictures else []
            return S.chat_segments(messages, embeddings, train_assistant=False, add_generation_prompt=True)

        if config.decoding != "vcd" or not images:
            return segments(images), None
        size = self.codec.image_size  # noised at the codec's own size, so its resize cannot average it away
        noised = [
            diffusion_noise(Image.fromarray(to_array(im, size)), config.vcd_noise_step, config.seed + i)
            for i, im in enumerate(images)
        ]
        return segments(images), segments(noised)

    @staticmethod
    def _load(part: dict):
        if part.get("type") == "image_url":
            url = (
                part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part.get("image_url")
            )
            return load_image_from_data_uri(url)
        if "image" not in part:
            raise GenerationError("an image part has no 'image' (path, bytes or PIL image)")
        return load_image(part["image"])

    def _answer(self, content: list[dict], sampling: dict) -> str:
        return self.chat([{"role": "user", "content": content}], **sampling).text

    def _image(self, messages: list[dict], sampling: dict, plan_first: bool = False):
        """The answer's image. A drawing is planned first (the model writes its layout, then draws);
        an edit starts drawing at once."""
        config = SamplingConfig(**sampling)
        prompt, contrast = self._prompt(messages, config)
        out = self.generator.generate(
            prompt,
            config,
            force_image=not plan_first,
            require_image=plan_first,
            stop_after_image=True,
            contrast=contrast,
        )
        return out.images[0]


def diffusion_noise(image, step: int, seed: int):
    """`image` (PIL) after `step` of DDPM's 1000 forward steps (linear betas 1e-4..0.02): the
    distortion visual contrastive decoding contrasts with (at its step 500, about 8% of the signal)."""
    import numpy as np
    import torch

    alpha = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[step - 1].item()
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 127.5 - 1
    noise = np.random.default_rng(seed).standard_normal(pixels.shape)
    noisy = alpha**0.5 * pixels + (1 - alpha) ** 0.5 * noise
    return Image.fromarray(((noisy.clip(-1, 1) + 1) * 127.5).round().astype(np.uint8))


def load(path: str | Path, device: str = "cpu", dtype: str = "fp32", quantize: str | None = None) -> Pipeline:
    """A run folder (or its instruct/pretrain model folder) -> Pipeline, on `device` (cpu | cuda |
    mps) in `dtype` (fp32 | bf16 | fp16); `quantize="int8"` stores the transformer's linear weights
    in int8 (quantize.py). Models are built empty and take the files' tensors."""
    path = Path(path)
    device, dtype = resolve(device, dtype)  # a missing device fails here, before anything is read
    if quantize is not None:
        require(quantize)  # torchao missing, or an unknown scheme: say so before loading
    model, config, tokenizer = load_vlgpt(path, device, dtype)
    quantize_weights(model, quantize)
    run = path
    while not (run / "clip").is_dir() and run != run.parent:
        run = run.parent
    if not (run / "clip").is_dir():
        from ..core.checkpoint import CheckpointError

        raise CheckpointError(f"{path} is not inside a run folder with clip, tokenizer and decoder stages")
    return Pipeline(model, config, ImageCodec.load(run, device, dtype), path, tokenizer)
