"""Frame feedback: the denoiser the samplers see returns the keyframe-guided, fused clean-latent prediction.

`guide_clip` is one step of it on `b c f h w`; the standalone `FeedbackDenoiser` and the WebUI's after-CFG
callback (webui/guidance.py) both call it.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from .camera import CAMERA_END, apply_camera
from .fusion import FusionSettings, PatchFusion, fuse_prediction, step_strength
from .keyframes import apply_keyframes, keyframe_decay


def guide_clip(denoised: torch.Tensor, step: int, total: int, fusion: FusionSettings,
               key_latents: Dict[int, torch.Tensor], key_strengths: Dict[int, float],
               module: Optional[PatchFusion] = None, keyframe_end: float = 0.6, camera: Optional[str] = None,
               camera_strength: float = 0.0) -> torch.Tensor:
    """One step on the clean-latent prediction `b c f h w` (`total` sampling steps).

    Keyframes are blended in first (so they act as anchors for their neighbours), frames are pulled along the
    camera move (camera.py), then fused, then keyframes are blended in again (so fusion does not wash them out).
    Every weight falls over sampling.
    """
    keyframes = sorted(key_latents)
    key_weight = keyframe_decay(step, total, keyframe_end)
    denoised = apply_keyframes(denoised, key_latents, key_strengths, key_weight)
    denoised = apply_camera(denoised, camera, camera_strength * keyframe_decay(step, total, CAMERA_END), keyframes)
    weight = step_strength(fusion, step, total)
    if weight <= 0:
        return denoised
    fused = fuse_prediction(denoised, weight, fusion, keyframes or [0], keyframes, module)
    return apply_keyframes(fused, key_latents, key_strengths, key_weight)


class FeedbackDenoiser:
    """Wraps `denoiser(x, sigma, **extra)`; every sampler then continues from `guide_clip`'s prediction."""

    def __init__(self, denoiser: Callable, sigmas: torch.Tensor, fusion: FusionSettings,
                 key_latents: Optional[Dict[int, torch.Tensor]] = None, key_strengths: Optional[Dict[int, float]] = None,
                 module: Optional[PatchFusion] = None, keyframe_end: float = 0.6, camera: Optional[str] = None,
                 camera_strength: float = 0.0):
        self.denoiser = denoiser
        self.sigmas = sigmas.detach().float().cpu()
        self.total = max(len(self.sigmas) - 1, 1)
        self.fusion = fusion
        self.key_latents = dict(key_latents or {})
        self.key_strengths = dict(key_strengths or {})
        self.module = module
        self.keyframe_end = keyframe_end
        self.camera, self.camera_strength = camera, camera_strength

    def step_of(self, sigma: torch.Tensor) -> int:
        """The sampling step whose sigma is nearest to `sigma` (samplers call once per step)."""
        value = float(torch.as_tensor(sigma).reshape(-1)[0])
        return int(torch.argmin((self.sigmas[:-1] - value).abs()))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        denoised = self.denoiser(x, sigma, **extra)
        return guide_clip(denoised, self.step_of(sigma), self.total, self.fusion, self.key_latents,
                          self.key_strengths, self.module, self.keyframe_end, self.camera, self.camera_strength)
