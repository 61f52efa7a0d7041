"""ccdm-mini training stages: the KL autoencoder, then the text encoder + UNet (an SD1-architecture base model)."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from ccdm_core.schedules import make_alphas_cumprod
from ccdm_core.sd.configs import build_unet, tiny_unet_config
from ccdm_core.sd.loader import SDModel, save_sd_checkpoint
from ccdm_core.sd.text_encoder import CLIPTextConfig, CLIPTextEncoder
from ccdm_core.sd.tokenizer import CLIPTokenizer
from ccdm_core.sd.vae import AutoencoderKL, tiny_vae_config
from ccdm_core.tensorfile import read_tensors, write_safetensors

from .photos import SUBJECTS, sample_batch, train_caption

SIZE = 64  # pixels; latents are 8x8x4
TEXT = CLIPTextConfig(width=128, layers=2, heads=2)


def _pixels(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch.copy()).float().div(127.5).sub(1.0).permute(0, 3, 1, 2)


def _grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients: keeps edges sharper than a pixel loss alone."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def _warmup_lr(step: int, lr: float, warmup: int = 200) -> float:
    return lr * min(1.0, (step + 1) / warmup)


def train_vae(out: Path, steps: int = 1500, seed: int = 0, batch: int = 16, lr: float = 4e-4,
              kl_weight: float = 1e-6) -> Dict[str, float]:
    """Stage 1: AutoencoderKL (8x downsampling, 4 latent channels) on augmented photo crops."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = AutoencoderKL(tiny_vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    losses, start = [], time.perf_counter()
    for step in tqdm(range(steps), desc="vae", unit="step"):
        x = _pixels(sample_batch(batch, SIZE, rng)[0])
        moments = vae.quant_conv(vae.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30, 20)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        y = vae.decode(z)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = (y - x).abs().mean() + 0.5 * _grad_l1(y, x) + kl_weight * kl
        for group in opt.param_groups:
            group["lr"] = _warmup_lr(step, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    write_safetensors(vae.state_dict(), out / "vae.safetensors", {"ccdm.stage": "vae", "ccdm.seed": str(seed)})
    return {"vae_steps": steps, "vae_loss_first100": float(np.mean(losses[:100])),
            "vae_loss_last100": float(np.mean(losses[-100:])), "vae_seconds": time.perf_counter() - start}


@torch.no_grad()
def latent_bank(vae: AutoencoderKL, count: int, seed: int, batch: int = 64):
    """Encode `count` augmented crops once (posterior means) with their subject names."""
    rng = np.random.default_rng(seed + 1)
    latents, names = [], []
    for _ in tqdm(range(0, count, batch), desc="latents", unit="batch"):
        images, subjects = sample_batch(batch, SIZE, rng)
        latents.append(vae.encode(_pixels(images)))
        names += subjects
    return torch.cat(latents)[:count], names[:count]


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)


def train_base(out: Path, steps: int = 6000, seed: int = 0, batch: int = 32, lr: float = 3e-4,
               bank: int = 12288, ema_decay: float = 0.999) -> Dict[str, float]:
    """Stage 2: CLIP-style text encoder + ldm UNet trained jointly (epsilon prediction, scaled-linear betas)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = AutoencoderKL(tiny_vae_config())
    vae.load_state_dict(read_tensors(out / "vae.safetensors")[0])
    vae.eval()
    latents, names = latent_bank(vae, bank, seed)
    scale_factor = float(1.0 / latents.std())
    latents = latents * scale_factor
    tokenizer = CLIPTokenizer.default()
    text = CLIPTextEncoder(TEXT)
    # random token embeddings stay frozen: distinct per token already, and 49408 x width rows would dominate the
    # optimiser's cost; the transformer layers and the UNet's cross-attention learn to read them
    text.text_model.embeddings.token_embedding.weight.requires_grad_(False)
    unet = build_unet(tiny_unet_config(32, TEXT.width))
    params = [p for p in list(unet.parameters()) + list(text.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, foreach=True)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    ac = make_alphas_cumprod("scaled_linear").float()
    losses, start = [], time.perf_counter()
    for step in tqdm(range(steps), desc="base", unit="step"):
        idx = torch.from_numpy(rng.integers(0, len(names), batch))
        x0 = latents[idx]
        context = text(tokenizer.encode([train_caption(names[i], rng) for i in idx.tolist()]))
        t = torch.randint(0, 1000, (batch,))
        a = ac[t].view(-1, 1, 1, 1)
        eps = torch.randn_like(x0)
        loss = F.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t, context), eps)
        for group in opt.param_groups:
            group["lr"] = _warmup_lr(step, lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _ema_update(ema_unet, unet, ema_decay)
        _ema_update(ema_text, text, ema_decay)
        losses.append(float(loss))
    model = SDModel(unet=ema_unet, vae=vae, text_encoder=ema_text, tokenizer=tokenizer, scale_factor=scale_factor,
                    source="ccdm-mini", unet_config=tiny_unet_config(32, TEXT.width))
    save_sd_checkpoint(model, out / "ccdm-mini.safetensors")
    return {"base_steps": steps, "base_loss_first200": float(np.mean(losses[:200])),
            "base_loss_last200": float(np.mean(losses[-200:])), "scale_factor": scale_factor,
            "base_seconds": time.perf_counter() - start, "subjects": len(SUBJECTS)}


def write_stats(out: Path, stats: Dict[str, float]) -> None:
    path = out / "stats.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(stats)
    path.write_text(json.dumps(old, indent=2, sort_keys=True))
