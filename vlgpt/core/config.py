"""The config schema: typed, frozen dataclasses, one per component, nested, and their dict form.

Every field carries a one-line help text (`field(metadata={"help": ...})`) that the CLI shows.
The named presets are in `presets.py`; YAML recipes, `--set a.b=value` overrides and the CLI's
typed flags in `overrides.py`. A model folder's config.json is its dataclass through `to_dict`,
read back through `from_dict`, which names the file and the key on any mismatch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A config value or file that is wrong; the message names the key and the fix."""


def f(default, help: str):
    """A dataclass field with a default and a help text."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use immutable defaults in configs")
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


# --- model components --------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionConfig:
    """The image tower of the vision stage: a ViT, or a plain convolutional encoder."""

    kind: str = f(
        "vit",
        "vit (conv stem + transformer blocks) | conv (stride-2 convolutions to the patch grid, then one "
        "stride-1 convolution; no attention: learns to read shape fastest on a CPU, docs/BENCHMARKS.md)",
    )
    image_size: int = f(64, "input image side in pixels")
    patch_size: int = f(8, "patch side in pixels (the grid cell the encoder reduces the image to)")
    width: int = f(128, "feature width")
    depth: int = f(4, "vit: number of transformer blocks")
    heads: int = f(4, "attention heads")
    mlp_ratio: float = f(4.0, "MLP hidden size / width")
    conv_stem: bool = f(True, "stride-2 convolutions down to the patch grid instead of one patchify conv")
    mask_ratio: float = f(
        0.0,
        "CLIP training only: share of patch tokens dropped at random from each image (FLIP), so a "
        "step costs less; features for the later stages always see every patch",
    )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    """Text transformer (the CLIP text tower); causal, pooled at the end-of-text token."""

    vocab_size: int = f(1024, "BPE vocabulary size (the trained tokenizer may be smaller)")
    context_length: int = f(48, "maximum caption length in tokens")
    width: int = f(128, "transformer width")
    depth: int = f(3, "number of transformer blocks")
    heads: int = f(4, "attention heads")
    mlp_ratio: float = f(4.0, "MLP hidden size / width")


@dataclass(frozen=True)
class ClipConfig:
    """Contrastive image-text model whose embeddings supervise the tokenizer (VL-GPT §3.1)."""

    vision: VisionConfig = f(VisionConfig(), "image tower")
    text: TextConfig = f(TextConfig(), "text tower")
    embed_dim: int = f(128, "shared embedding width (e_v tokens and e_t)")
    condition_grid: int = f(
        8, "e_v = the pooled embedding plus the patch tokens average-pooled to this grid side"
    )
    init_temperature: float = f(0.07, "initial softmax temperature of the InfoNCE loss")
    loss: str = f(
        "infonce",
        "infonce (CLIP's softmax over the batch, both directions) | sigmoid (SigLIP: every "
        "image-text pair an independent binary decision, with a learnt bias; made for small batches)",
    )
    caption_weight: float = f(
        0.0,
        "weight of a captioning loss: a small decoder predicts the caption from the image tower's "
        "patch features (CapPa, CoCa), so the tower learns everything captions name; 0: off",
    )
    caption_depth: int = f(2, "blocks of that caption decoder")
    caption_parallel: float = f(
        0.0,
        "share of captions predicted in parallel (CapPa): every input token of the caption decoder is "
        "a mask, so each word must be read from the image rather than guessed from the words before it",
    )
    caption_backward: float = f(
        0.0,
        "share of captions the caption decoder reads right to left (VirTex's bicaptioning), so the "
        "tower's features let a reader find an object by any word said about it, not only the first",
    )
    contrastive_weight: float = f(
        1.0, "weight of the contrastive loss (InfoNCE or sigmoid), which trains the text tower and e_t"
    )
    contrastive_detach: bool = f(
        False,
        "the contrastive loss trains the text tower and the image projection but stops at the image "
        "tower's features (LiT's lock, the other way round: the tower learns from captions alone)",
    )
    hard_negatives: bool = f(
        False,
        "each caption also brings a copy with one word swapped for a word seen in the same places "
        "(learnt from the captions: colour for colour, shape for shape), which its image must score "
        "below its own caption (NegCLIP), so the image tower has to see every word a caption says",
    )

    @property
    def num_condition_tokens(self) -> int:
        """Tokens in e_v: the pooled embedding plus condition_grid^2 region tokens."""
        return 1 + self.condition_grid**2


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """Image tokenizer and detokenizer: causal transformers over learned queries (VL-GPT §3.1)."""

    num_tokens: int = f(32, "N: continuous image embeddings per image (the paper uses 32)")
    token_dim: int = f(128, "width of each image embedding (equals the LLM's width)")
    width: int = f(128, "transformer width")
    depth: int = f(2, "blocks in the tokenizer")
    detokenizer_depth: int = f(2, "blocks in the detokenizer")
    heads: int = f(4, "attention heads")
    mlp_ratio: float = f(4.0, "MLP hidden size / width")
    locality: bool = f(
        True,
        "give each query a home on the image grid and bias cross-attention towards it "
        "(ALiBi-style, one distance scale per head, the last head global)",
    )
    seeded_queries: bool = f(
        True,
        "with locality: each query starts from the features around its home (the detokenizer's "
        "region queries from the tokens around theirs), so content has a direct path to its token",
    )
    canonical_captions: bool = f(
        True,
        "with a diffusion decoder (--decoder) on the Shapes world: e_t is the text of one caption per "
        "scene (every object, left to right), not of a caption from a template drawn at random",
    )
    weight_image: float = f(1.0, "lambda_1: weight of MSE(z_v, e_v)")
    weight_text: float = f(1.0, "lambda_2: weight of MSE(z_t, e_t)")


@dataclass(frozen=True)
class PixelDecoderConfig:
    """Pixel decoder (the diffusion model's part): (e_v, e_t) -> image."""

    kind: str = f(
        "conv",
        "decoder family: conv (fast, deterministic upsampler); a sampling decoder is a pretrained "
        "diffusers pipeline, imported with `vlgpt train decoder --decoder PATH`",
    )
    channels: int = f(128, "channels at the lowest resolution; halved at each upsampling")
    condition_noise: float = f(0.1, "std of noise added to (e_v, e_t) in training, for robustness to z")
    detokenized_fraction: float = f(
        0.5,
        "share of each batch conditioned on the run's detokenizer output (z) "
        "instead of CLIP's (e); 0 trains on e alone, as the paper's frozen decoder",
    )
    edge_weight: float = f(0.5, "weight of the image-gradient (edge) L1 term")
    mixer_depth: int = f(2, "transformer blocks over the condition tokens before upsampling (0: none)")
    foreground_weight: float = f(
        4.0,
        "extra L1 weight on pixels that differ from the image's border colour, "
        "so that uncertain objects are drawn rather than left as background",
    )
    pixel_shuffle: int = f(
        2,
        "draw the last log2(k) doublings as k x k sub-pixels of a coarser map (pixel "
        "shuffle) instead of convolving at full resolution; 1: none",
    )
    position_maps: bool = f(
        False, "add a learned position map after each upsampling, so pixels of one grid cell can differ"
    )
    foreground_symmetric: bool = f(
        True,
        "weight a pixel by foreground_weight where the target *or* the prediction "
        "draws an object: one-sided weighting made dilating every shape into a blob "
        "the cheap mistake",
    )
    train_codec: bool = f(
        True,
        "train the image tokenizer, detokenizer and our own ViT (a --vision CLIP stays "
        "frozen) through the pixel loss too, end to end; false: the paper's frozen codec",
    )
    align_weight: float = f(
        0.1,
        "with train_codec: weight of the paper's MSE(z_v, e_v) + MSE(z_t, e_t), kept as a term "
        "against the frozen CLIP",
    )
    token_noise: float = f(
        0.1,
        "with train_codec: Gaussian noise on the N image tokens, relative to their RMS, so "
        "the decoder tolerates the language model's regression errors",
    )
    perceptual_weight: float = f(
        0.0,
        "weight of a feature-matching loss through the run's frozen image tower: the tower's grid "
        "features of the drawn image against the true one's, so a wrong shape costs what the tower "
        "sees of it rather than the few pixels it covers (LPIPS's idea, with our own tower)",
    )
    caption_weight: float = f(
        0.0,
        "with train_codec: weight of a captioning loss read from the N image tokens (a small "
        "caption decoder cross-attending to them), so the tokens the LM reads name what a caption names",
    )


@dataclass(frozen=True)
class AutoencoderConfig:
    """Stage `vae`: the world decoder's autoencoder (diffusers' AutoencoderKL), images <-> latents."""

    channels: str = f(
        "16,32,64", "channels of each level, comma-separated; the latent is the image halved levels - 1 times"
    )
    latent_channels: int = f(8, "channels of the latent")
    layers_per_block: int = f(1, "residual blocks per level")
    kl_weight: float = f(1e-6, "weight of the KL term (small: the latent stays nearly deterministic)")
    sample: bool = f(
        False,
        "train on samples of the posterior (Stable Diffusion's VAE) instead of its mean; the mean "
        "learns exact colours sooner (docs/BENCHMARKS.md)",
    )
    edge_weight: float = f(0.5, "weight of the image-gradient (edge) L1 term")
    foreground_weight: float = f(
        4.0, "extra L1 weight where the picture or the reconstruction differs from the border colour"
    )


@dataclass(frozen=True)
class DiffusionConfig:
    """Stage `diffusion`: the world decoder, a latent diffusion model built from diffusers parts (a
    UNet2DConditionModel cross-attending to a CLIP text encoder's states, an IP-Adapter reading a CLIP
    image encoder's embedding), trained from captions and images, then saved in Stable Diffusion's
    layout for `--decoder PATH`."""

    channels: str = f("32,64,128", "UNet channels of each level, comma-separated")
    attention: str = f(
        "0,1,1", "1 where a level has (self- and cross-) attention, 0 where it is convolutions only"
    )
    layers_per_block: int = f(1, "UNet residual blocks per level")
    attention_head_dim: int = f(32, "UNet attention head width")
    cross_attention_dim: int = f(
        128, "width of the conditions the UNet attends to (text states, image tokens)"
    )
    text_depth: int = f(
        0,
        "text encoder (CLIPTextModel) layers; its width is cross_attention_dim. 0: the caption's words "
        "(token + position embeddings) are what the UNet attends to, which it learns to use several "
        "times sooner than a transformer's states (docs/BENCHMARKS.md)",
    )
    text_heads: int = f(4, "text encoder attention heads")
    text_length: int = f(32, "text tokens the encoder reads (captions are padded or cut to this)")
    vocab_size: int = f(1024, "BPE vocabulary of the decoder's own text tokenizer")
    image_depth: int = f(2, "image encoder (CLIPVisionModelWithProjection) layers")
    image_width: int = f(128, "image encoder width")
    image_patch: int = f(8, "image encoder patch side in pixels")
    image_dim: int = f(128, "the image embedding the IP-Adapter reads (the encoder's projection)")
    drop_text: float = f(0.1, "share of samples trained with an empty caption (classifier-free guidance)")
    drop_image: float = f(
        0.5,
        "share of samples trained with a zero image embedding: drawing from text alone, and what "
        "guidance steers away from",
    )
    loose_captions: float = f(
        0.5,
        "Shapes world only: share of captions the world writes at a random level of detail (some "
        "objects, colours or sizes left out, a relation named), so that short prompts draw",
    )
    prediction: str = f("v_prediction", "what the UNet predicts: v_prediction | epsilon")
    snr_gamma: float = f(
        0.0,
        "Min-SNR-gamma loss weighting (Hang et al. 2023: each noise level weighted by min(SNR, gamma) "
        "over its plain weight, so the easy low-noise steps stop dominating); 0: plain MSE",
    )
    schedule: str = f("squaredcos_cap_v2", "noise schedule (diffusers' beta_schedule)")
    steps: int = f(25, "the saved decoder's default sampling steps (DPM-Solver++)")
    guidance: float = f(2.0, "the saved decoder's default classifier-free guidance scale")


@dataclass(frozen=True)
class LanguageModelConfig:
    """VL-GPT's decoder-only transformer (RoPE, RMSNorm, SwiGLU) and its two heads."""

    width: int = f(256, "transformer width")
    depth: int = f(4, "number of blocks")
    heads: int = f(4, "attention heads")
    mlp_hidden: int = f(688, "SwiGLU hidden size")
    max_seq_len: int = f(384, "context length in positions (text tokens + image embeddings)")
    rope_base: float = f(10000.0, "RoPE base")
    norm_eps: float = f(1e-5, "RMSNorm epsilon")
    regression_weight: float = f(1.0, "lambda in CE + lambda * MSE(next image embedding)")
    normalize_inputs: bool = f(
        False,
        "standardise each image embedding channel (mean and std measured on training images at the "
        "LM stage's start) before the input projection",
    )
    whiten_inputs: bool = f(
        False,
        "whiten image embeddings (ZCA, from their mean and covariance on training images at the LM "
        "stage's start) before the input projection, so that a quiet direction (shape, beside loud "
        "colour) is as easy for attention to key on as a loud one",
    )
    image_projector: str = f(
        "linear",
        "how image embeddings enter the transformer: linear (VL-GPT's input projection) | mlp (two "
        "layers with a GELU, LLaVA-1.5's projector: each embedding is re-encoded before attention "
        "needs to find it)",
    )
    image_positions: bool = f(
        False,
        "add a learned embedding for each of an image's N places (started from a 2D sine map of "
        "the tile each embedding stands for), so an image embedding says where it lies: RoPE gives "
        "only 1D distances, and an answer about left or above must compare two places",
    )
    image_head: str = f(
        "mse",
        "next image embedding: mse (VL-GPT's linear regression) | flow (a flow-matching MLP "
        "head that samples one mode instead of the mean; models/image_heads.py)",
    )
    draw: str = f(
        "next",
        "how an image is drawn: next (VL-GPT §3.2: each embedding regressed from the ones before "
        "it, and fed back) | queries (after [IMG], N learned queries, one per place, each regress "
        "their own embedding in one pass: nothing drawn is read back; SEED-X's and DreamLLM's "
        "learned queries)",
    )


@dataclass(frozen=True)
class VLGPTConfig:
    """The VL-GPT model of a run: the transformer's config and the sizes the run's tokenizers set.
    Its config.json is this as a dict (`models/loading.py`)."""

    vocab_size: int
    num_image_tokens: int  # N: embeddings per image (the tokenizer's)
    image_token_dim: int  # width of each image embedding
    lm: LanguageModelConfig = LanguageModelConfig()


@dataclass(frozen=True)
class ModelConfig:
    """Everything a run builds."""

    clip: ClipConfig = f(ClipConfig(), "CLIP image and text towers")
    tokenizer: ImageTokenizerConfig = f(ImageTokenizerConfig(), "image tokenizer and detokenizer")
    decoder: PixelDecoderConfig = f(PixelDecoderConfig(), "pixel decoder")
    lm: LanguageModelConfig = f(LanguageModelConfig(), "the VL-GPT transformer")
    vae: AutoencoderConfig = f(AutoencoderConfig(), "the world decoder's autoencoder (stage vae)")
    diffusion: DiffusionConfig = f(
        DiffusionConfig(), "the world decoder's latent diffusion model (stage diffusion)"
    )


@dataclass(frozen=True)
class TokenizerPairConfig:
    """What `models.tokenizer_pair.TokenizerPair` is built from (and its config.json holds): the
    tokenizer's config and the shapes of the CLIP it reads and is supervised by."""

    tokenizer: ImageTokenizerConfig
    feature_width: int  # the ViT's width: the tokenizer reads its hidden states
    num_condition_tokens: int  # tokens in e_v, which the detokenizer predicts
    embed_dim: int  # width of each e_v token (CLIP's shared embedding width)
    num_patches: int | None = None  # the ViT's patch tokens (None: as many as the queries' homes)
    # e_t's form: 0, one pooled vector [D] (vlgpt's CLIP); L > 0, a diffusion decoder's text-encoder
    # states [L, text_dim] (`--decoder`), when e_v is whatever its adapter reads, not a grid.
    text_tokens: int = 0
    text_dim: int = 0  # 0: embed_dim

    @classmethod
    def for_clip(cls, tokenizer: ImageTokenizerConfig, clip: ClipConfig) -> TokenizerPairConfig:
        return cls(
            tokenizer, clip.vision.width, clip.num_condition_tokens, clip.embed_dim, clip.vision.num_patches
        )

    @classmethod
    def for_decoder(
        cls, tokenizer: ImageTokenizerConfig, clip: ClipConfig, shapes: dict
    ) -> TokenizerPairConfig:
        """Targets from a diffusers decoder's conditions (`DiffusersDecoder.shapes`), inputs from the CLIP."""
        return cls(
            tokenizer,
            clip.vision.width,
            shapes["image_tokens"],
            shapes["image_dim"],
            clip.vision.num_patches,
            text_tokens=shapes["text_tokens"],
            text_dim=shapes["text_dim"],
        )

    @property
    def condition_grid(self) -> bool:
        """e_v is vlgpt's [pooled, G x G regions] and e_t one vector: the layout locality is built for."""
        return self.text_tokens == 0


@dataclass(frozen=True)
class PixelDecoderModelConfig:
    """What a pixel decoder is built from (and its config.json holds): its config and the shapes of
    the conditions and images it works with."""

    decoder: PixelDecoderConfig
    embed_dim: int  # width of each condition token (CLIP's)
    image_size: int
    grid: int  # the e_v region grid side

    @classmethod
    def for_clip(cls, decoder: PixelDecoderConfig, clip: ClipConfig) -> PixelDecoderModelConfig:
        return cls(decoder, clip.embed_dim, clip.vision.image_size, clip.condition_grid)


# --- training --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """One stage's optimisation and bookkeeping."""

    steps: int = f(300, "optimizer steps")
    batch_size: int = f(
        64, "micro-batch size of one process; a step sees batch_size x grad_accum x processes samples"
    )
    grad_accum: int = f(1, "micro-batches per optimizer step (in each process)")
    lr: float = f(1e-3, "peak learning rate")
    min_lr_ratio: float = f(0.1, "final learning rate as a fraction of the peak (cosine decay)")
    warmup_steps: int = f(20, "linear warmup steps")
    weight_decay: float = f(0.05, "AdamW weight decay (matrices only)")
    betas: tuple[float, float] = f((0.9, 0.98), "AdamW betas")
    grad_clip: float = f(1.0, "clip the global gradient norm to this (0: off)")
    precision: str = f("auto", "fp32 | bf16 | auto (bf16 autocast only where it is faster: AMX or CUDA)")
    seed: int = f(0, "seed for weights, data order and sampling")
    log_every: int = f(10, "steps between metric lines")
    eval_every: int = f(0, "steps between evaluations (0: only at the end)")
    save_every: int = f(100, "steps between checkpoints (0: only at the end)")
    keep_checkpoints: int = f(2, "finished checkpoints to keep")
    max_bad_steps: int = f(5, "abort after this many non-finite steps in a row")
    eval_size: int = f(500, "validation rows used by evaluation")
    threads: int = f(0, "torch CPU threads (0: all cores)")
    lora_rank: int = f(
        0, "pretrain/instruct: LoRA rank on every linear layer of the transformer (0: full training)"
    )
    lora_alpha: float = f(32.0, "LoRA alpha (the update is scaled by alpha / rank)")
    lora_dropout: float = f(0.0, "dropout on the LoRA branch")
    replay: float = f(
        0.25,
        "instruct: share of samples that replay the pretraining data's image-caption pairs when "
        "it differs from the instruction data, so tuning on chat keeps drawing (0: off)",
    )
    uncond_prob: float = f(
        0.0,
        "pretrain (and instruct's replay): share of text-to-image pairs whose text is dropped, so the "
        "model also learns to draw unconditioned, which the image head's classifier-free guidance "
        "(--head-guidance) needs",
    )
    image_modeling: bool = f(
        False,
        "pretrain/instruct: also regress the embeddings of images the model reads (a caption's or a "
        "question's image, each embedding from the ones before it), not only of the images it draws; "
        "off: it helped a captions-only probe but not the full recipe (docs/BENCHMARKS.md)",
    )
    world_mix: str = f(
        "",
        "instruct on the Shapes world: the share of each conversation kind, e.g. "
        "'look=0.6,draw=0.15,edit=0.1,episode=0.1,refuse=0.05' (look: a caption and questions about "
        "one image; refuse: an edit that cannot be made, answered by a sentence saying why; empty: the "
        "default mix, INSTRUCT_KINDS)",
    )
    layout_plan: bool = f(
        True,
        "pretrain/instruct on the Shapes world: a drawing's text writes the scene's layout "
        "('Layout: ...') before the image, a plan the model then draws from (off: the image follows "
        "the prompt at once, as on a user's dataset, which has no layouts)",
    )
    text_loss: str = f(
        "token",
        "pretrain/instruct: how the cross-entropy averages its text targets: token (each target "
        "counts once) | turn (each trained turn, such as one assistant reply, counts once, its "
        "tokens sharing its weight, so a two-word answer weighs what a twenty-word caption does) | "
        "sqrt (a turn of n targets weighs sqrt(n): between the two)",
    )
    lm: str = f(
        "",
        "pretrain (or instruct without pretrain): a local Hugging Face causal LM folder (Llama, Qwen2, "
        "Mistral, GPT-2; safetensors, no remote code) as the transformer; its tokenizer replaces ours",
    )
    strategy: str = f(
        "ddp",
        "data parallelism under torchrun: ddp (replicated weights) | fsdp (FSDP2: weights, "
        "gradients and optimizer state sharded across processes)",
    )
    device: str = f(
        "cpu", "cpu | cuda (under torchrun, each process takes cuda:LOCAL_RANK and talks over NCCL)"
    )


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from a dict, recursively; unknown keys are an error, not ignored."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {fl.name for fl in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))} for {cls.__name__}; "
            f"known: {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            values[name] = from_dict(kind, value, f"{where}.{name}")
        else:
            values[name] = _coerce(value, kind, f"{where}.{name}")
    return cls(**values)


def _coerce(value, kind, where: str):
    origin = typing.get_origin(kind)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, t, where) for v, t in zip(value, typing.get_args(kind)))
    if origin is dict:
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return bool(value)
    if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    if kind in (int, float, str):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    return value
