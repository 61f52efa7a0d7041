"""Multi-frame fusion (paper eq. 9-12): pyramid patch matching between frames and weighted fusion of predictions.

At each scale (1, 1/2, 1/4) of the predicted clean latent, frame n's patches query the patches of its source
frames (previous, next, and anchors: keyframes or frame 0) with softmax(QK^T/sqrt d)V (eq. 9-10). The matched
prediction is used as a correction relative to the frame matched against itself, A(n<-j) - A(n<-n), so the blur
that soft attention adds cancels and identical frames are left exactly unchanged. The corrections are combined
with per-frame weights (eq. 12) and blended in with a strength that falls over sampling (none at the end, so fine
detail stays the base model's own). Eq. 11 as printed has the fixed point w = 1 (w/(w+1) + 1/(w+1) = 1): that is
the `uniform` mode, a plain average; `temporal` weights fall with frame distance, `keyframe` weights rise near
keyframes.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Dict, List, Optional, Sequence

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .attention import attention
from .errors import CCDMError


class FusionMode(str, enum.Enum):
    UNIFORM = "uniform"
    TEMPORAL = "temporal"
    KEYFRAME = "keyframe"


@dataclasses.dataclass(frozen=True)
class FusionSettings:
    """Strengths in [0, 1] (0 = off, bit-identical to no fusion) and the weighting mode."""

    strength: float = 0.5
    mode: FusionMode = FusionMode.TEMPORAL
    cross_frame_strength: float = 0.5
    end_fraction: float = 0.7  # fraction of the sampling steps after which fusion is off
    patch: int = 2
    scales: tuple = (1, 2, 4)

    def __post_init__(self):
        for name in ("strength", "cross_frame_strength"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise CCDMError(f"{name} must be a number in 0..1, got {value!r}")
        try:
            object.__setattr__(self, "mode", FusionMode(self.mode))
        except ValueError:
            raise CCDMError(f"fusion mode {self.mode!r} unknown; accepted: "
                            f"{', '.join(m.value for m in FusionMode)}") from None
        if not 0 < self.end_fraction <= 1:
            raise CCDMError(f"end_fraction must be in (0, 1], got {self.end_fraction!r}")
        if self.patch not in (1, 2, 4) or not self.scales or any(s not in (1, 2, 4, 8) for s in self.scales):
            raise CCDMError("patch must be 1, 2 or 4 and scales a non-empty subset of (1, 2, 4, 8)")


def step_strength(settings: FusionSettings, step: int, total: int) -> float:
    """Fusion strength at a sampling step: full at the start, linearly to 0 at end_fraction of the steps."""
    if settings.strength == 0:
        return 0.0
    progress = step / max(total - 1, 1)
    return settings.strength * max(0.0, 1.0 - progress / settings.end_fraction)


def source_frames(n: int, num_frames: int, anchors: Sequence[int]) -> List[int]:
    """Frames that frame n matches against: previous, next and the anchors, never itself."""
    cands = [n - 1, n + 1] + sorted(anchors)
    out = []
    for j in cands:
        if 0 <= j < num_frames and j != n and j not in out:
            out.append(j)
    return out


def frame_weights(n: int, sources: Sequence[int], mode: FusionMode, keyframes: Sequence[int]) -> torch.Tensor:
    """Weights of eq. 12 for [frame n itself] + sources; normalised to sum 1."""
    if mode is FusionMode.UNIFORM:
        w = [1.0] * (len(sources) + 1)
    else:
        w = [1.0] + [1.0 / (1 + abs(n - j)) for j in sources]
        if mode is FusionMode.KEYFRAME and keyframes:
            near = min(abs(n - k) for k in keyframes)
            w = [w[0] / (1 + 1.0 / (1 + near))] + [wj * (2.0 if j in keyframes else 1.0) for wj, j in
                                                     zip(w[1:], sources)]
    w = torch.tensor(w, dtype=torch.float64)
    return w / w.sum()


class PatchProjection(nn.Module):
    """Learnable Q/K/V projections of patch features for one pyramid level, initialised to the identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        for layer in (self.to_q, self.to_k, self.to_v):
            nn.init.eye_(layer.weight)
            nn.init.zeros_(layer.bias)


class PatchFusion(nn.Module):
    """The fusion module's (optionally trained) parameters: one projection set per pyramid level."""

    def __init__(self, channels: int = 4, patch: int = 2, scales: Sequence[int] = (1, 2, 4)):
        super().__init__()
        self.patch, self.scales = patch, tuple(scales)
        self.levels = nn.ModuleList([PatchProjection(channels * patch * patch) for _ in self.scales])

    def extras(self) -> Dict[str, torch.Tensor]:
        """Tensors for the motion checkpoint (`fusion.*` keys)."""
        return {f"fusion.{k}": v for k, v in self.state_dict().items()}

    @classmethod
    def from_extras(cls, extras: Dict[str, torch.Tensor], channels: int = 4) -> Optional["PatchFusion"]:
        state = {k[len("fusion."):]: v for k, v in extras.items() if k.startswith("fusion.levels.")}
        if not state:
            return None
        levels = 1 + max(int(k.split(".")[1]) for k in state)
        dim = state["levels.0.to_q.weight"].shape[0]
        patch = int(round((dim / channels) ** 0.5))
        module = cls(channels, patch, (1, 2, 4, 8)[:levels])
        module.load_state_dict(state)
        return module


def _patches(x: torch.Tensor, scale: int, patch: int) -> torch.Tensor:
    """`b c f h w` -> tokens `b f n (c p p)` at 1/scale resolution."""
    frames = rearrange(x, "b c f h w -> (b f) c h w")
    if scale > 1:
        frames = F.avg_pool2d(frames, scale)
    h, w = frames.shape[-2:]
    frames = frames[..., : h - h % patch, : w - w % patch]
    return rearrange(frames, "(b f) c (h p) (w q) -> b f (h w) (c p q)", b=x.shape[0], p=patch, q=patch)


def _unpatch(tokens: torch.Tensor, like: torch.Tensor, scale: int, patch: int) -> torch.Tensor:
    """Tokens `b f n (c p p)` back to a full-resolution `b c f h w` field (nearest upsampling, zero-padded)."""
    b, c, f, h, w = like.shape
    hs, ws = (h // scale) // patch * patch, (w // scale) // patch * patch
    field = rearrange(tokens, "b f (h w) (c p q) -> (b f) c (h p) (w q)", h=hs // patch, p=patch, q=patch, c=c)
    field = F.pad(field, (0, w // scale - ws, 0, h // scale - hs))
    if scale > 1:
        field = F.interpolate(field, size=(h, w), mode="nearest")
    return rearrange(field, "(b f) c h w -> b c f h w", b=b)


def _fusion_plan(num_frames: int, anchors: Sequence[int], mode: FusionMode, keyframes: Sequence[int]):
    """Per frame: [itself] + sources, padded with itself (a zero correction), and the eq. 12 weights."""
    rows = []
    for n in range(num_frames):
        sources = source_frames(n, num_frames, anchors)
        rows.append(([n] + sources, frame_weights(n, sources, mode, keyframes)))
    width = max(len(idx) for idx, _ in rows)
    index = torch.tensor([idx + [n] * (width - len(idx)) for n, (idx, _) in enumerate(rows)])
    weights = torch.zeros(num_frames, width, dtype=torch.float64)
    for n, (idx, w) in enumerate(rows):
        weights[n, : len(idx)] = w
    return index, weights


def _level_correction(x: torch.Tensor, proj: Optional[PatchProjection], scale: int, patch: int,
                      index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_j w_nj (A(n<-j) - A(n<-n)) at one pyramid level, for all frames in one attention call."""
    tokens = _patches(x, scale, patch)  # b f n d
    q, k, v = (p(tokens) for p in (proj.to_q, proj.to_k, proj.to_v)) if proj is not None else (tokens,) * 3
    index = index.to(x.device)
    width = index.shape[1]
    qs = q[:, :, None].expand(-1, -1, width, -1, -1)  # b f s n d: frame n asks each of its sources
    matched = attention(qs, k[:, index], v[:, index])  # b f s n d
    delta = matched[:, :, 1:] - matched[:, :, :1]
    w = weights[:, 1:].to(device=x.device, dtype=delta.dtype)[None, :, :, None, None]
    return _unpatch((delta * w).sum(dim=2), x, scale, patch)


def fuse_prediction(denoised: torch.Tensor, weight: float, settings: FusionSettings,
                    anchors: Sequence[int] = (0,), keyframes: Sequence[int] = (),
                    module: Optional[PatchFusion] = None) -> torch.Tensor:
    """Fused clean-latent prediction `b c f h w`; each video (batch item) is fused on its own frames only."""
    num_frames = denoised.shape[2]
    if weight <= 0 or num_frames < 2:
        return denoised
    x = denoised.float()
    index, weights = _fusion_plan(num_frames, anchors, settings.mode, keyframes)
    total = torch.zeros_like(x)
    scales = module.scales if module is not None else settings.scales
    patch = module.patch if module is not None else settings.patch
    for i, scale in enumerate(scales):
        proj = module.levels[i] if module is not None else None
        total += _level_correction(x, proj, scale, patch, index, weights)
    return (x + total * (weight / len(scales))).to(denoised.dtype)
