"""Image heads: from the transformer's hidden state to the next image embedding.

Each head implements `loss(hidden [M, W], target [M, d]) -> scalar` and, through `ImageHead`,
`sample(hidden [M, W]) -> [M, d]` (its `draw`, or `draw_guided` with an unconditional context);
`IMAGE_HEADS` is the registry that `lm.image_head` names.

* `mse` — VL-GPT §3.2's linear regression head, trained with MSE. Deterministic: where the text leaves
  the image open it predicts the *average* of everything that fits, which decodes to a blur (the paper
  borrows sharpness from a pretrained Stable Diffusion that we do not have).
* `flow` — a per-embedding generative head (MAR's diffusion loss, Li et al. 2024, in its
  flow-matching form): a small residual MLP, conditioned on the hidden state, learns the velocity
  field that carries Gaussian noise to the next embedding; sampling integrates it with diffusers'
  flow-matching Euler scheduler.
  It draws one mode of what the text allows instead of the mean between modes.

Both heads take classifier-free guidance (Ho & Salimans 2022; MAR's text-to-image): given the
hidden state of an *unconditional* context as well (the image alone, which pretraining teaches by
dropping the text of a share of its text-to-image pairs, `lm.uncond_prob`), the prediction is pushed
past the conditional one, away from the unconditional: u + w (c - u), on the velocity for `flow`
and on the regression itself for `mse`. w = 1 is no guidance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ImageHead:
    """What every head shares: `sample`, unguided or guided. A head implements `draw(hidden,
    generator)` and `draw_guided(hidden, uncond, guidance, generator)` (and `loss`)."""

    def sample(
        self,
        hidden: torch.Tensor,
        generator: torch.Generator | None = None,
        uncond: torch.Tensor | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        if uncond is None or guidance == 1.0:
            return self.draw(hidden, generator)
        return self.draw_guided(hidden, uncond, guidance, generator)


class MSEHead(ImageHead, nn.Linear):
    """The paper's regression head: a linear layer (weights named `image_head.weight/bias`)."""

    def __init__(self, width: int, dim: int):
        super().__init__(width, dim)
        nn.init.normal_(self.weight, std=width**-0.5)
        nn.init.zeros_(self.bias)

    def loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self(hidden).float(), target.float())

    def draw(self, hidden: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self(hidden)

    def draw_guided(self, hidden, uncond, guidance: float, generator=None) -> torch.Tensor:
        base = self(uncond)
        return base + guidance * (self(hidden) - base)


class _AdaLNBlock(nn.Module):
    """LayerNorm -> shift/scale from the condition -> MLP, residual, gated (MAR's ResBlock)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Linear(width, 3 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(F.silu(cond)).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class FlowHead(ImageHead, nn.Module):
    """Flow matching on each image embedding, conditioned on the hidden state that predicts it.

    Training: x_t = (1 - t) x_0 + t x_1 with x_0 ~ N(0, I) and x_1 the target (rescaled to unit RMS
    by a fixed `target_scale`), t ~ U(0, 1); the MLP predicts the velocity x_1 - x_0. Each target is
    drawn `draws` times per step: the head is small, so extra noise draws cost little next to the
    transformer's forward (MAR uses 4).
    """

    def __init__(
        self,
        width: int,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        draws: int = 4,
        steps: int = 24,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.dim, self.draws, self.steps, self.temperature = dim, draws, steps, temperature
        self.cond = nn.Linear(width, hidden)
        self.time = nn.Linear(64, hidden)
        self.x_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_AdaLNBlock(hidden) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # Targets are divided by this before the flow and multiplied back after sampling; set once from
        # data by `fit_scale` (a buffer, saved with the weights).
        self.register_buffer("target_scale", torch.ones(()))

    @torch.no_grad()
    def fit_scale(self, targets: torch.Tensor) -> None:
        self.target_scale.fill_(float(targets.float().pow(2).mean().sqrt().clamp(min=1e-6)))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        half = 32
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=x.device) / half)
        angles = 1000.0 * t[:, None] * freqs[None]  # [M, 32]
        cond = self.cond(hidden) + self.time(torch.cat([angles.sin(), angles.cos()], dim=-1))
        h = self.x_in(x)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(self.out_norm(h))

    def loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float().repeat(self.draws, 1)  # [K*M, W]
        x1 = (target.float() / self.target_scale).repeat(self.draws, 1)
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1), device=x1.device)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        return F.mse_loss(self.velocity(xt, t, hidden), x1 - x0)

    def draw(self, hidden: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._integrate(hidden, None, 1.0, generator)

    def draw_guided(self, hidden, uncond, guidance: float, generator=None) -> torch.Tensor:
        return self._integrate(hidden, uncond, guidance, generator)

    @torch.no_grad()
    def _integrate(self, hidden, uncond, guidance: float, generator) -> torch.Tensor:
        """From noise (t = 0) to data (t = 1) through diffusers' flow-matching Euler scheduler, on
        `steps` evenly spaced times; with `uncond`, on the guided velocity."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        hidden = hidden.float().reshape(-1, hidden.shape[-1])
        if uncond is not None:
            uncond = uncond.float().reshape(-1, hidden.shape[-1]).expand_as(hidden)
        # diffusers' sigma is our 1 - t (x = sigma noise + (1 - sigma) data), and its model output the
        # velocity towards noise: minus ours.
        scheduler = FlowMatchEulerDiscreteScheduler()
        scheduler.set_timesteps(
            sigmas=[1.0 - i / self.steps for i in range(self.steps)], device=hidden.device
        )
        x = self.temperature * torch.randn(len(hidden), self.dim, generator=generator, device=hidden.device)
        for sigma, timestep in zip(scheduler.sigmas[:-1], scheduler.timesteps):
            t = (1.0 - sigma).expand(len(x)).to(x.device)
            if uncond is not None:  # one batched call for both conditions
                both = self.velocity(torch.cat([x, x]), torch.cat([t, t]), torch.cat([hidden, uncond]))
                v, v_uncond = both.chunk(2)
                v = v_uncond + guidance * (v - v_uncond)
            else:
                v = self.velocity(x, t, hidden)
            x = scheduler.step(-v, timestep, x).prev_sample
        return x * self.target_scale


IMAGE_HEADS = {"mse": MSEHead, "flow": FlowHead}


def build_image_head(kind: str, width: int, dim: int) -> nn.Module:
    if kind not in IMAGE_HEADS:
        raise ValueError(f"unknown image head {kind!r}; choose one of {', '.join(IMAGE_HEADS)}")
    return IMAGE_HEADS[kind](width, dim)
