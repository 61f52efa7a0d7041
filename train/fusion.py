"""Training the fusion projections: the engine's pyramid patch fusion (eq. 9-12) as the keyframe term's `fuse`."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import nn

from ccdm_core.fusion import FusionSettings, PatchFusion, fuse_prediction, step_strength

from .config import TIMESTEPS, TrainConfig

# fuse(x0_hat `b c f h w`, key_mask `b f`, t `b`) -> fused x0 prediction `b c f h w`
Fuse = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fusion_weight(settings: FusionSettings, t: int, timesteps: int = TIMESTEPS) -> float:
    """The strength sampling fuses with at timestep t: sampling runs from t = T-1 (its first step) to t = 0 and the
    engine's strength falls over the steps, so a clip at timestep t gets the strength of that point."""
    return step_strength(settings, timesteps - 1 - int(t), timesteps)


def make_fuse(module: PatchFusion, settings: FusionSettings) -> Fuse:
    """Each clip fused on its own frames, its keyframes as anchors (frame 0 when it has none), as at inference."""
    def fuse(x0_hat: torch.Tensor, key_mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        clips = []
        for b in range(x0_hat.shape[0]):
            keys = key_mask[b].nonzero().flatten().tolist()
            weight = fusion_weight(settings, int(t[b]))
            clips.append(fuse_prediction(x0_hat[b: b + 1], weight, settings, keys or [0], keys, module))
        return torch.cat(clips)
    return fuse


def training_fusion(cfg: TrainConfig, init_extras: Dict[str, torch.Tensor]) -> Tuple[Dict[str, nn.Module], Fuse]:
    """The trainable fusion module (from the --init file's fusion tensors when it has them) and its fuse."""
    settings = FusionSettings(strength=cfg.fusion_strength, mode=cfg.fusion_mode)
    module = PatchFusion.from_extras(init_extras) or PatchFusion(4, settings.patch, settings.scales)
    return {"fusion": module}, make_fuse(module, settings)
