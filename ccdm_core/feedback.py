"""Frame feedback: the denoiser the samplers see returns the keyframe-guided, fused clean-latent prediction."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch

from . import camera as camera_guidance
from .fusion import FusionSettings, PatchFusion, fuse_prediction, step_strength
from .keyframes import apply_keyframes, keyframe_decay


class FeedbackDenoiser:
    """Wraps `denoiser(x, sigma, **extra)`; every sampler then continues from the fused prediction.

    Keyframes are blended in before fusion (so they act as anchors for their neighbours) and again after it (so
    fusion does not wash them out); then frames are pulled along the camera move (camera.py), then fused. All
    weights fall over sampling.
    """

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
        self.keyframes: Sequence[int] = sorted(self.key_latents)
        self.module = module
        self.keyframe_end = keyframe_end
        self.camera, self.camera_strength = camera, camera_strength

    def step_of(self, sigma: torch.Tensor) -> int:
        """The sampling step whose sigma is nearest to `sigma` (samplers call once per step)."""
        value = float(torch.as_tensor(sigma).reshape(-1)[0])
        return int(torch.argmin((self.sigmas[:-1] - value).abs()))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        denoised = self.denoiser(x, sigma, **extra)
        step = self.step_of(sigma)
        key_weight = keyframe_decay(step, self.total, self.keyframe_end)
        denoised = apply_keyframes(denoised, self.key_latents, self.key_strengths, key_weight)
        camera_weight = self.camera_strength * keyframe_decay(step, self.total, camera_guidance.CAMERA_END)
        denoised = camera_guidance.apply_camera(denoised, self.camera, camera_weight, self.keyframes)
        weight = step_strength(self.fusion, step, self.total)
        if weight <= 0:
            return denoised
        anchors = self.keyframes or [0]
        fused = fuse_prediction(denoised, weight, self.fusion, anchors, self.keyframes, self.module)
        return apply_keyframes(fused, self.key_latents, self.key_strengths, key_weight)
