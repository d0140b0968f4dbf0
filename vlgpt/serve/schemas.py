"""Request bodies of the OpenAI-compatible routes, as pydantic models.

Fields the official client may send but this model has no use for (`user`, `quality`, `style`,
`logprobs` off, ...) are accepted and ignored, as other OpenAI-compatible servers do; fields that
would change the answer in a way we cannot honour (n > 1 for chat, `response_format: url`, image
streaming) are refused with a 400 that says so. Limits that depend on the server's settings
(max_tokens, n, prompt length, image count) are checked by the routes, which know the settings.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImageURL(BaseModel):
    url: str
    detail: str | None = None  # accepted for compatibility; every image is seen at the model's size


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: ImageURL | str


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 (the default here): greedy, like the CLI")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="extension: sample from the k most likely tokens (0: off)")
    seed: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    steps: int | None = Field(
        None, ge=1, le=1000, description="extension: a diffusion decoder's denoising steps"
    )
    guidance: float | None = Field(
        None, ge=0.0, le=50.0, description="extension: a diffusion decoder's classifier-free guidance scale"
    )
    decoding: Literal["standard", "vcd"] = Field(
        "standard", description="extension: vcd, visual contrastive decoding (against made-up objects)"
    )
    vcd_alpha: float = Field(1.0, ge=0.0, le=10.0, description="extension: with vcd, the contrast's strength")
    vcd_beta: float = Field(0.1, ge=0.0, le=1.0, description="extension: with vcd, the plausibility cut-off")

    def decoding_options(self) -> dict:
        if self.decoding == "standard":
            return {}
        return {"decoding": self.decoding, "vcd_alpha": self.vcd_alpha, "vcd_beta": self.vcd_beta}

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)


class ImageGenerationRequest(_Request):
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = None
    response_format: str | None = None  # only "b64_json": the server keeps no files to link to
    stream: bool = False
    # Extensions for a diffusion decoder (`--decoder`): image i of n is drawn from seed + i.
    seed: int | None = Field(None, ge=0)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0.0, le=50.0)

    def drawing(self) -> dict:
        return drawing_options(self.seed, self.steps, self.guidance)


def drawing_options(seed: int | None, steps: int | None, guidance: float | None) -> dict:
    """The sampling fields of a drawing request that were given (seed 0 when not)."""
    options = {"seed": seed or 0}
    options.update({k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None})
    return options
