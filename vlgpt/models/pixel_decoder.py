"""The pixel decoder: (e_v, e_t) -> image. It plays the part of VL-GPT's frozen diffusion decoder.

Trained on ground-truth CLIP embeddings and used at inference on the detokenizer's (z_v, z_t).
The default is a fast, deterministic convolutional upsampler. A few transformer blocks first mix
all condition tokens (e_v's pooled token, its G x G region tokens and e_t, each with a learned
position), so that every region can draw on what the whole image and the caption say — a
detokenizer's z is noisier than CLIP's e, and a per-region decoder cannot tell where an object
went from one blurred token. The region tokens then form a grid that convolutions upsample to
pixels, with the mixed pooled and text tokens modulating every stage (FiLM).
Any decoder with the same methods — `loss(e_v, e_t, images)`, `fit(z_v, z_t, images)` (the
training loss the decoder stage's chain calls) and `decode(z_v, z_t)` — can take its place. A decoder
that samples is a diffusers pipeline, imported frozen as the paper's is (`diffusers_decoder.py`,
`--decoder PATH`); the pixel-space flow variant that once lived here (with its own Euler loop) drew
no better (docs/BENCHMARKS.md, "Learn to draw") and is gone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import PixelDecoderModelConfig
from .layers import Block, init_weights


class FiLMStage(nn.Module):
    """conv -> norm -> FiLM(condition) -> SiLU, twice, with a residual."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, channels)
        self.norm2 = nn.GroupNorm(8, channels)
        self.film = nn.Linear(cond_dim, 4 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        s1, b1, s2, b2 = self.film(cond)[:, :, None, None].chunk(4, dim=1)
        h = F.silu(self.norm1(self.conv1(x)) * (1 + s1) + b1)
        h = F.silu(self.norm2(self.conv2(h)) * (1 + s2) + b2)
        return x + h


class ConvPixelDecoder(nn.Module):
    def __init__(self, model_config: PixelDecoderModelConfig):
        super().__init__()
        config, embed_dim, image_size, grid = (
            model_config.decoder,
            model_config.embed_dim,
            model_config.image_size,
            model_config.grid,
        )
        self.model_config = model_config
        self.config = config
        self.grid, self.image_size = grid, image_size
        ups = int(math.log2(image_size // grid))
        if grid * 2**ups != image_size:
            raise ValueError(
                f"image_size {image_size} must be the condition grid {grid} times a power of two"
            )
        # The last doublings as k x k sub-pixels of a coarser map (pixel shuffle): full-resolution 3x3
        # convolutions were 40% of the decoder's training time on CPU.
        self.shuffle = config.pixel_shuffle
        shuffled = int(math.log2(self.shuffle))
        if 2**shuffled != self.shuffle or shuffled > ups:
            raise ValueError(
                f"decoder.pixel_shuffle must be a power of two up to {image_size // grid}, got {self.shuffle}"
            )
        ups -= shuffled
        # Channels halve at each doubling, down to 16 at the last stage (where convolutions cost most).
        channels = [max(config.channels // 2**i, 16) for i in range(ups + 1)]
        cond_dim = 2 * embed_dim
        self.position = nn.Parameter(torch.zeros(1, grid * grid + 2, embed_dim))
        self.mixer = nn.ModuleList(
            Block(embed_dim, max(embed_dim // 32, 1), 2.0) for _ in range(config.mixer_depth)
        )
        self.mixer.apply(init_weights)
        self.stem = nn.Conv2d(embed_dim, channels[0], 1)
        self.stages = nn.ModuleList(FiLMStage(c, cond_dim) for c in channels)
        self.ups = nn.ModuleList(nn.Conv2d(channels[i], channels[i + 1], 3, padding=1) for i in range(ups))
        # A learned map per upsampled stage tells each pixel where it sits inside its grid cell (nearest
        # upsampling gives every pixel of a cell the same features): zero at the start, a no-op.
        self.maps = nn.ParameterList(
            nn.Parameter(torch.zeros(1, channels[i + 1], grid * 2 ** (i + 1), grid * 2 ** (i + 1)))
            for i in range(ups if config.position_maps else 0)
        )
        self.head = nn.Conv2d(channels[-1], 3 * self.shuffle**2, 3, padding=1)

    def decode(self, z_v: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """z_v [B, 1 + G^2, D], z_t [B, D] -> image [B, 3, H, W] in 0..1."""
        return self.forward(z_v, z_t).clamp(0.0, 1.0)

    def forward(self, z_v: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """Unclamped pixels: a linear output keeps gradients alive where a sigmoid would saturate
        (a saturated sigmoid left the decoder stuck on a blank background in our runs)."""
        return self.render(*self.condition(z_v, z_t))

    def render(self, cond: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The FiLM-modulated stages from the stem's grid `x` to unclamped pixels."""
        for i, stage in enumerate(self.stages):
            x = stage(x, cond)
            if i < len(self.ups):
                x = self.ups[i](F.interpolate(x, scale_factor=2, mode="nearest"))
                if len(self.maps):
                    x = x + self.maps[i]
        return F.pixel_shuffle(self.head(x), self.shuffle) + 0.5

    def condition(self, z_v: torch.Tensor, z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed condition tokens as the FiLM condition [B, 2D] and the stem's grid [B, C, g, g]."""
        B, _, D = z_v.shape
        tokens = torch.cat([z_v, z_t[:, None]], dim=1)  # [B, 1 + G^2 + 1, D]
        if len(self.mixer):
            tokens = tokens + self.position
            for block in self.mixer:
                tokens = block(tokens)
        cond = torch.cat([tokens[:, 0], tokens[:, -1]], dim=-1)  # [B, 2D]
        regions = tokens[:, 1:-1].transpose(1, 2).reshape(B, D, self.grid, self.grid)
        return cond, self.stem(regions)

    def loss(
        self, e_v: torch.Tensor, e_t: torch.Tensor, images: torch.Tensor, critic=None
    ) -> tuple[torch.Tensor, dict]:
        """Foreground-weighted L1 + edge L1, on conditions jittered with noise so that decoding z
        (not e) works too.

        Plain L1 is minimised by the per-pixel median: where the decoder is unsure whether an
        object covers a pixel, the median is the background, and a decoder conditioned on noisy
        embeddings learns to draw an empty canvas. Weighting pixels by how far they are from the
        image's border colour (its background, for most pictures) makes drawing the object the
        cheaper mistake.
        """
        if self.training and self.config.condition_noise > 0:
            e_v = e_v + self.config.condition_noise * torch.randn_like(e_v)
            e_t = e_t + self.config.condition_noise * torch.randn_like(e_t)
        return self.fit(e_v, e_t, images, critic)

    def fit(self, z_v: torch.Tensor, z_t: torch.Tensor, images: torch.Tensor, critic=None):
        """The training loss of drawing `images` from (z_v, z_t): the decoder stage's one entry."""
        return self.pixel_loss(self.forward(z_v, z_t), images, critic)

    def pixel_loss(self, pred: torch.Tensor, images: torch.Tensor, critic=None) -> tuple[torch.Tensor, dict]:
        """Foreground-weighted L1 + edge L1 between decoded (unclamped) and true pixels; with a
        `critic` (pixels -> features, frozen) and `perceptual_weight` > 0, + the features' MSE."""
        cover = foreground(images)
        if self.config.foreground_symmetric:  # drawn where the picture is empty counts as much as missing
            cover = torch.maximum(cover, foreground(pred.detach(), images))
        weight = 1.0 + self.config.foreground_weight * cover
        l1 = (weight * (pred - images).abs()).mean() / weight.mean()
        edges = F.l1_loss(pred.diff(dim=-1), images.diff(dim=-1)) + F.l1_loss(
            pred.diff(dim=-2), images.diff(dim=-2)
        )
        loss, parts = l1 + self.config.edge_weight * edges, {"l1": l1.detach(), "edge_l1": edges.detach()}
        if critic is not None and self.config.perceptual_weight > 0:
            with torch.no_grad():
                wanted = critic(images)
            perceptual = F.mse_loss(critic(pred), wanted)
            loss = loss + self.config.perceptual_weight * perceptual
            parts["perceptual"] = perceptual.detach()
        return loss, parts


def foreground(images: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 3, H, W] in 0..1 -> [B, 1, H, W] in 0..1: each pixel's distance to the median border colour
    (of `reference`, when given: a prediction measured against its target's background)."""
    ref = images if reference is None else reference
    border = torch.cat([ref[..., 0, :], ref[..., -1, :], ref[..., :, 0], ref[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # [B, 3, 1, 1]
    return ((images - background).abs().amax(dim=1, keepdim=True) * 4).clamp(max=1.0)


DECODERS = {"conv": ConvPixelDecoder}


def build_pixel_decoder(config: PixelDecoderModelConfig) -> nn.Module:
    kind = config.decoder.kind
    if kind not in DECODERS:
        raise ValueError(f"unknown pixel decoder {kind!r}; choose one of {', '.join(DECODERS)}")
    return DECODERS[kind](config)
