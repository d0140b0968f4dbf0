"""Stage `vae`: the world decoder's autoencoder (diffusers' AutoencoderKL), images <-> latents, on the
data's images alone: foreground-weighted L1 + edge L1 + a small KL. The `diffusion` stage denoises in
its latent space with it frozen, as Stable Diffusion does with its own VAE.

Writes RUN/vae/model/: the AutoencoderKL as diffusers saves it (config.json with `scaling_factor`, the
factor that gives its latents unit variance, measured on training images), and metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ...data.images import to_pil
from ...models.latent_diffusion import build_vae, latent_scale
from ...models.pixel_decoder import foreground
from ...world.judge import compare_scenes, judge
from .base import PairStage, Stage, StageInputs, register_stage
from .decoder import agreement_summary


@register_stage
class VaeStage(PairStage, Stage):
    name = "vae"

    @classmethod
    def from_run(cls, run: Path, inputs: StageInputs, train, clip: str | Path | None = None):
        return cls(inputs)

    def __init__(self, inputs: StageInputs):
        super().__init__(inputs)
        torch.manual_seed(self.seed)
        self.image_size = self.model_config.clip.vision.image_size
        self.model = build_vae(self.model_config.vae, self.image_size)

    def batch(self, start: int, size: int) -> dict:
        pixels, _, _ = self.raw_batch(start, size)
        return {"pixels": pixels}

    def reconstruct(self, pixels: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, object]:
        """Pixels in 0..1 -> (reconstruction in 0..1, unclamped; the posterior). The VAE works in -1..1."""
        posterior = self.model.encode(2 * pixels - 1).latent_dist
        latents = posterior.sample() if sample else posterior.mode()
        return (self.model.decode(latents).sample + 1) / 2, posterior

    def loss(self, batch: dict):
        config, x = self.model_config.vae, batch["pixels"]
        rec, posterior = self.reconstruct(x, sample=config.sample)
        # Weighted where the picture or the reconstruction differs from the border colour: an unsure
        # autoencoder otherwise learns to paint small objects into the background (pixel_decoder.py).
        cover = torch.maximum(foreground(x), foreground(rec.detach().clamp(0, 1), x))
        weight = 1.0 + config.foreground_weight * cover
        l1 = (weight * (rec - x).abs()).mean() / weight.mean()
        edges = F.l1_loss(rec.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(rec.diff(dim=-2), x.diff(dim=-2))
        kl = posterior.kl().mean()
        loss = l1 + config.edge_weight * edges + config.kl_weight * kl
        return loss, {"l1": l1.detach(), "edge_l1": edges.detach(), "kl": kl.detach()}

    def tokens(self, batch: dict) -> int:
        return batch["pixels"].shape[0]

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        l1, results = 0.0, []
        for start, (pixels, _, _) in self.val_batches():
            rec = self.reconstruct(pixels, sample=False)[0].clamp(0, 1)
            l1 += F.l1_loss(rec, pixels).item() * len(pixels)
            if self.val_source.has_scenes:
                results += [
                    compare_scenes(judge(to_pil(image)), self.val_source.scene(start + i))
                    for i, image in enumerate(rec)
                ]
        return {"l1": l1 / max(self.eval_size, 1), **agreement_summary(results, prefix="judge_")}

    def export(self, directory: Path) -> None:
        pixels = self.raw_batch(0, min(256, max(self.eval_size, 64)))[0]
        self.model.eval()
        self.model.register_to_config(scaling_factor=latent_scale(self.model, pixels))
        self.model.save_pretrained(directory, safe_serialization=True)


def load_vae(run: Path):
    """RUN/vae/model/ (or that folder itself), frozen."""
    from diffusers import AutoencoderKL

    from ...core.checkpoint import CheckpointError

    path = Path(run)
    folder = path / "vae" / "model" if (path / "vae" / "model").is_dir() else path
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"no finished vae under {path}; run `vlgpt train vae --out {path}` first")
    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    return vae.eval().requires_grad_(False)
