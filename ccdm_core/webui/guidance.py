"""Fusion and keyframe guidance on the WebUI's denoised prediction after CFG (`on_cfg_after_cfg`).

The callback is registered once (entry.py) and does nothing unless a CCDM run has made its `Guidance` current
for the duration of its sampling call (`active_guidance`, cleared in a finally). The tensor work is
`guide_denoised`, the same steps as the standalone `FeedbackDenoiser` on `b c f h w`, applied to the WebUI's
`(b f) c h w` batch one video at a time (frames of different videos never mix).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Dict, Iterator, List, Optional

import torch
from einops import rearrange
from torch.nn import functional as F

from ..errors import CCDMError
from ..fusion import FusionSettings, PatchFusion, fuse_prediction, step_strength
from ..keyframes import Keyframe, apply_keyframes, encode_keyframes, keyframe_decay
from .settings import CCDMSettings, CCDMSettingsError

_CURRENT: List["Guidance"] = []  # the guidance of the run now sampling (at most one)


@dataclasses.dataclass(eq=False)
class Guidance:
    """What the after-CFG step needs: frames per video, fusion settings, keyframe latents `c h w`, the module."""

    num_frames: int
    fusion: FusionSettings
    key_latents: Dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)
    key_strengths: Dict[int, float] = dataclasses.field(default_factory=dict)
    module: Optional[PatchFusion] = None
    keyframe_end: float = 0.6  # as FeedbackDenoiser
    _sized: Dict[tuple, "Guidance"] = dataclasses.field(default_factory=dict, init=False, repr=False)

    @property
    def keyframes(self) -> List[int]:
        return sorted(self.key_latents)

    def does_nothing(self) -> bool:
        return self.fusion.strength == 0 and not self.key_latents

    def at_size(self, height: int, width: int) -> "Guidance":
        """This guidance with keyframe latents resized to `height x width` (hires fix samples a larger latent)."""
        if all(t.shape[-2:] == (height, width) for t in self.key_latents.values()):
            return self
        if (height, width) not in self._sized:
            resized = {f: F.interpolate(t[None].float(), size=(height, width), mode="bilinear",
                                        align_corners=False)[0] for f, t in self.key_latents.items()}
            self._sized[(height, width)] = dataclasses.replace(self, key_latents=resized)
        return self._sized[(height, width)]


def fusion_settings(settings: CCDMSettings) -> FusionSettings:
    return FusionSettings(strength=settings.fusion_strength, mode=settings.fusion_mode,
                          cross_frame_strength=settings.cross_frame_strength)


def _as_data_url(kf: Keyframe) -> Keyframe:
    """Keyframe images are data URLs or bare base64 (never file paths: the API must not read server files)."""
    if kf.image is None or kf.image.startswith("data:"):
        return kf
    return dataclasses.replace(kf, image="data:image/png;base64," + "".join(kf.image.split()))


def build_guidance(settings: CCDMSettings, vae_encode: Callable[[torch.Tensor], torch.Tensor], width: int,
                   height: int, extras: Optional[Dict[str, torch.Tensor]] = None,
                   device: Optional[torch.device] = None) -> Guidance:
    """A run's guidance: keyframe images VAE-encoded once (`vae_encode`: pixels `1 3 h w` in -1..1 -> scaled
    latent), the fusion module from the motion module's extras (fp32 on `device`) when it has one."""
    kfs = [_as_data_url(kf) for kf in settings.keyframes]
    try:
        latents = encode_keyframes(vae_encode, kfs, width, height, 1.0) if any(k.image for k in kfs) else {}
    except CCDMError as err:
        raise CCDMSettingsError("keyframes", str(err)) from None
    module = PatchFusion.from_extras(extras or {}) if settings.fusion_strength > 0 else None
    if module is not None:
        module = module.to(device=device, dtype=torch.float32)
    return Guidance(settings.frames, fusion_settings(settings),
                    {f: t.to(device) if device is not None else t for f, t in latents.items()},
                    {kf.frame: float(kf.strength) for kf in settings.keyframes if kf.frame in latents}, module)


def guide_video(denoised: torch.Tensor, step: int, total: int, g: Guidance) -> torch.Tensor:
    """FeedbackDenoiser's steps on `b c f h w`: keyframes, fusion, keyframes again (weights fall over sampling)."""
    key_weight = keyframe_decay(step, total, g.keyframe_end)
    denoised = apply_keyframes(denoised, g.key_latents, g.key_strengths, key_weight)
    weight = step_strength(g.fusion, step, total)
    if weight <= 0:
        return denoised
    anchors = g.keyframes or [0]
    fused = fuse_prediction(denoised, weight, g.fusion, anchors, g.keyframes, g.module)
    return apply_keyframes(fused, g.key_latents, g.key_strengths, key_weight)


def guide_denoised(x: torch.Tensor, step: int, total: int, g: Guidance) -> torch.Tensor:
    """The WebUI's denoised batch `(b f) c h w` after CFG -> guided, same layout; each video on its own."""
    if g.does_nothing():
        return x
    if x.shape[0] % g.num_frames:
        raise ValueError(f"a batch of {x.shape[0]} items is not a whole number of {g.num_frames}-frame videos")
    g = g.at_size(x.shape[-2], x.shape[-1])
    videos = rearrange(x, "(b f) c h w -> b c f h w", f=g.num_frames)
    out = torch.cat([guide_video(videos[i:i + 1], step, max(total, 1), g) for i in range(videos.shape[0])])
    return rearrange(out, "b c f h w -> (b f) c h w")


@contextlib.contextmanager
def active_guidance(g: Optional[Guidance]) -> Iterator[None]:
    """Make `g` the current run's guidance for the block (None or a no-op guidance: nothing is made current)."""
    if g is None or g.does_nothing():
        yield
        return
    _CURRENT.append(g)
    try:
        yield
    finally:
        if g in _CURRENT:
            _CURRENT.remove(g)


def current_guidance() -> Optional[Guidance]:
    return _CURRENT[-1] if _CURRENT else None


def on_cfg_after_cfg(params) -> None:
    """`script_callbacks.on_cfg_after_cfg`: params.x (denoised after CFG) is replaced by the guided prediction."""
    g = current_guidance()
    if g is None:
        return
    params.x = guide_denoised(params.x, int(params.sampling_step), int(params.total_sampling_steps), g)
