"""Init frames for video to video: source frames VAE-encoded and noised to a denoising strength, img2img per frame.

The strength follows the WebUI's img2img: of `steps` sampling steps, the last `int(strength * steps) + 1` run,
starting from the init latents plus noise at that step's sigma. Two ends are exact: 0 returns the init latents
(the VAE round trip of the source), 1 ignores the init and samples from pure noise like text to video.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

import numpy as np
import torch
from einops import rearrange

from .errors import CCDMError

DEFAULT_STRENGTH = 0.6  # video to video's default denoising strength


def check_strength(strength, field: str = "denoising_strength") -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise CCDMError(f"{field} must be a number in 0..1, got {strength!r}")
    return float(strength)


def img2img_sigmas(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """The tail of a `steps + 1` sigma schedule (ending in 0) that img2img at `strength` samples."""
    strength = check_strength(strength)
    steps = len(sigmas) - 1
    if strength >= 1.0:
        return sigmas
    t_enc = int(strength * steps)
    if t_enc == 0:
        return sigmas[-1:]  # no step: the init itself
    return sigmas[steps - t_enc - 1:]


def frames_to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames `f h w c` to the VAE's input range [-1, 1], `f c h w`."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise CCDMError(f"source frames must be uint8 (f, h, w, 3), got {getattr(frames, 'shape', type(frames))}")
    return rearrange(torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0), "f h w c -> f c h w")


@torch.no_grad()
def encode_frames(vae_encode: Callable[[torch.Tensor], torch.Tensor], frames: np.ndarray, scale_factor: float,
                  progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """Scaled init latents `1 c f h/8 w/8` (fp32, CPU), one frame at a time so memory stays flat in the count."""
    pixels = frames_to_pixels(frames)
    latents = []
    for index, frame in enumerate(pixels):
        latents.append((vae_encode(frame[None]) * scale_factor)[0].float().cpu())
        if progress is not None:
            progress(index + 1, len(pixels))
    return rearrange(torch.stack(latents), "f c h w -> 1 c f h w")


def noised_init(init_latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor,
                strength: float) -> torch.Tensor:
    """The first sampler input: init + noise * sigma at the strength's first step (noise alone at strength 1)."""
    if init_latents.shape != noise.shape:
        raise CCDMError(f"init latents {tuple(init_latents.shape)} do not match the noise {tuple(noise.shape)}")
    if check_strength(strength) >= 1.0:
        return noise * sigmas[0]
    return init_latents.to(noise) + noise * sigmas[0]


SOURCE_KEY = "CCDM source"  # infotext: `<sha256 first 10 hex> <start>/<stride>/<frames>`
_SOURCE_LABEL = re.compile(r"^\s*([0-9a-f]{10})\s+(\d+)\s*/\s*(\d+)\s*/\s*(\d+)\s*$")


def format_source_label(sha256: str, source_start: int, source_stride: int, frames: int) -> str:
    return f"{sha256[:10]} {source_start}/{source_stride}/{frames}"


def parse_source_label(text: str) -> dict:
    """The options of a `CCDM source` infotext entry (the video itself is not in the infotext)."""
    match = _SOURCE_LABEL.match(str(text))
    if not match:
        raise CCDMError(f"{SOURCE_KEY} {text!r} is not '<10 hex> <start>/<stride>/<frames>'")
    return {"source_sha256": match.group(1), "source_start": int(match.group(2)),
            "source_stride": int(match.group(3)), "frames": int(match.group(4))}
