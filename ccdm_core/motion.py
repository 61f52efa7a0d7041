"""Motion module (the paper's action-modelling module): temporal transformers with AnimateDiff's key names."""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .attention import attention
from .errors import CCDMError

HEADS = 8  # AnimateDiff v1-v3, AnimateDiff-SDXL and HotShot-XL use 8 heads; the head width follows from the channels.
LAYOUTS = ("animatediff-v1", "animatediff-v2", "animatediff-v3")
LAYOUT_MAX_FRAMES = {"animatediff-v1": 24, "animatediff-v2": 32, "animatediff-v3": 32}
BASES = {"sd1": "SD1.x", "sdxl": "SDXL"}  # the base model family a module is made for -> its name in messages


@dataclasses.dataclass(frozen=True)
class MotionInfo:
    """What a motion module is: its file format, training schedule and limits."""

    format: str = "ccdm"
    max_frames: int = 32
    beta_schedule: str = "linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    groupnorm_over_frames: bool = False  # AnimateDiff v1, HotShot-XL: the UNet's GroupNorms ran over all frames
    train_frames: Optional[int] = None
    recommended_sampler: Optional[str] = None  # an engine sampler name the module was distilled for ("lcm")
    metadata: Dict[str, str] = dataclasses.field(default_factory=dict)
    sha256: Optional[str] = None
    base: str = "sd1"  # "sd1" or "sdxl": the UNet family the module fits
    temporal_norm_over_frames: bool = False  # AnimateDiff-SDXL: each temporal layer's own GroupNorm spans all frames

    def __post_init__(self):
        if self.base not in BASES:
            raise CCDMError(f"MotionInfo.base {self.base!r} unknown; accepted: {', '.join(BASES)}")

    @property
    def shorthash(self) -> Optional[str]:
        return self.sha256[:10] if self.sha256 else None


def module_base(info: MotionInfo) -> str:
    """"sd1" or "sdxl": the UNet family a module (given by its info) is made for."""
    return info.base


def check_base(info: MotionInfo, base: str, what: str = "the loaded checkpoint") -> None:
    """Refuse a module made for another model family, by name; call it before anything is changed."""
    if base not in BASES:
        raise CCDMError(f"unknown model family {base!r}; accepted: {', '.join(BASES)}")
    if info.base != base:
        mine, theirs = BASES[info.base], BASES[base]
        raise CCDMError(f"the motion module is {info.format}, made for {mine}, but {what} is {theirs}; "
                        f"use an {mine} checkpoint, or a motion module made for {theirs}")


def video_group_norm(norm: nn.GroupNorm, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """GroupNorm whose statistics span all frames of each video: `(b f) c h w` in and out."""
    video = rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)
    out = F.group_norm(video, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return rearrange(out, "b c f h w -> (b f) c h w")


def sinusoidal_positions(max_frames: int, dim: int) -> torch.Tensor:
    """Transformer sinusoidal position table `1 f c` (sin on even, cos on odd channels)."""
    position = torch.arange(max_frames, dtype=torch.float64)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_frames, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)[:, : dim // 2]
    return table[None].float()


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal position of each frame (buffer `pe`, saved in checkpoints)."""

    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(max_frames, dim))

    @property
    def max_frames(self) -> int:
        return self.pe.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.max_frames:
            raise CCDMError(f"{frames} frames in one window exceed the motion module's {self.max_frames} "
                            f"positions; use a context length of 1..{self.max_frames}")
        return x + self.pe[:, :frames].to(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention over the frame axis only: each spatial position attends to itself in the other frames."""

    def __init__(self, dim: int, max_frames: int, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        self.pos_encoder = PositionalEncoding(dim, max_frames)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        tokens = x.shape[1]
        x = rearrange(x, "(b f) n c -> (b n) f c", f=num_frames)
        x = self.pos_encoder(x)
        q, k, v = (rearrange(p(x), "bn f (h d) -> bn h f d", h=self.heads) for p in (self.to_q, self.to_k, self.to_v))
        out = rearrange(attention(q, k, v), "bn h f d -> bn f (h d)")
        out = self.to_out[1](self.to_out[0](out))
        return rearrange(out, "(b n) f c -> (b f) n c", n=tokens)


class GEGLU(nn.Module):
    """Gated GELU projection (Shazeer 2020)."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward; `net.0.proj`, `net.2` as in AnimateDiff checkpoints."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalTransformerBlock(nn.Module):
    """Two pre-norm temporal self-attentions and a GEGLU feed-forward, each residual."""

    def __init__(self, dim: int, max_frames: int, ff_inner: int, heads: int = HEADS):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, max_frames, heads) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim, ff_inner)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), num_frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm, proj_in, temporal blocks, zero-initialised proj_out; a residual around all of it.

    `norm_over_frames`: the GroupNorm's statistics span all frames of a video (AnimateDiff-SDXL normalises its
    `b c f h w` input); otherwise each frame is normalised alone (AnimateDiff SD1.x, HotShot-XL)."""

    def __init__(self, channels: int, max_frames: int, layers: int = 1, ff_mult: int = 4, heads: int = HEADS,
                 norm_over_frames: bool = False):
        super().__init__()
        if channels % 32 or channels % heads:
            raise CCDMError(f"motion module width {channels} must be a multiple of 32 and of {heads} heads")
        self.norm_over_frames = bool(norm_over_frames)
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, max_frames, channels * ff_mult, heads) for _ in range(layers)])
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        height, width = x.shape[-2:]
        normed = video_group_norm(self.norm, x, num_frames) if self.norm_over_frames else self.norm(x)
        h = rearrange(normed, "bf c h w -> bf (h w) c")
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, num_frames)
        h = rearrange(self.proj_out(h), "bf (h w) c -> bf c h w", h=height, w=width)
        return x + h


class TemporalModule(nn.Module):
    """One inserted layer; the `temporal_transformer` level exists for AnimateDiff's key names."""

    def __init__(self, channels: int, max_frames: int, layers: int = 1, ff_mult: int = 4, heads: int = HEADS,
                 norm_over_frames: bool = False):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, max_frames, layers, ff_mult, heads, norm_over_frames)

    @property
    def channels(self) -> int:
        return self.temporal_transformer.proj_in.in_features

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x is `(b f) c h w` with frames contiguous within each video."""
        if x.shape[0] % num_frames:
            raise CCDMError(f"a batch of {x.shape[0]} frames is not a whole number of {num_frames}-frame videos")
        return self.temporal_transformer(x, num_frames)


class MotionBlock(nn.Module):
    """The temporal modules that belong to one UNet resolution level (`motion_modules.N`)."""

    def __init__(self, channels: Sequence[int], max_frames: int, layers: int = 1, heads: int = HEADS,
                 norm_over_frames: bool = False):
        super().__init__()
        self.motion_modules = nn.ModuleList(
            [TemporalModule(c, max_frames, layers, heads=heads, norm_over_frames=norm_over_frames) for c in channels])


@dataclasses.dataclass(frozen=True)
class MotionShape:
    """Channel widths per slot: down blocks (2 modules each), optional mid block, up blocks (3 each)."""

    down: tuple  # tuple of tuples of channels
    mid: Optional[int]
    up: tuple
    layers: int = 1
    heads: int = HEADS

    def slot_channels(self) -> Dict[str, int]:
        """`down_blocks.0.motion_modules.1` -> channels, for every slot."""
        out = {}
        for name, blocks in (("down_blocks", self.down), ("up_blocks", self.up)):
            for i, block in enumerate(blocks):
                for j, ch in enumerate(block):
                    out[f"{name}.{i}.motion_modules.{j}"] = ch
        if self.mid is not None:
            out["mid_block.motion_modules.0"] = self.mid
        return out


class MotionModule(nn.Module):
    """All temporal modules of one checkpoint, keyed like AnimateDiff (`down_blocks`, `mid_block`, `up_blocks`)."""

    def __init__(self, shape: MotionShape, info: MotionInfo = MotionInfo()):
        super().__init__()
        self.shape = shape
        self.info = info
        self.extras: Dict[str, torch.Tensor] = {}  # tensors saved beside the module (e.g. fusion projections)
        args = (info.max_frames, shape.layers, shape.heads, info.temporal_norm_over_frames)
        self.down_blocks = nn.ModuleList([MotionBlock(c, *args) for c in shape.down])
        self.mid_block = MotionBlock([shape.mid], *args) if shape.mid is not None else None
        self.up_blocks = nn.ModuleList([MotionBlock(c, *args) for c in shape.up])

    @property
    def max_frames(self) -> int:
        return self.info.max_frames

    @property
    def base(self) -> str:
        return module_base(self.info)

    def slots(self) -> Dict[str, TemporalModule]:
        """Slot name (as in the state dict) -> the temporal module for it."""
        return {name: self.get_submodule(name) for name in self.shape.slot_channels()}

    def down_channels(self) -> List[int]:
        return [block[0] for block in self.shape.down]


def zero_output_(module: MotionModule) -> MotionModule:
    """Zero every proj_out so the module is the identity (a fresh module leaves the UNet's output unchanged)."""
    for slot in module.slots().values():
        nn.init.zeros_(slot.temporal_transformer.proj_out.weight)
        nn.init.zeros_(slot.temporal_transformer.proj_out.bias)
    return module
