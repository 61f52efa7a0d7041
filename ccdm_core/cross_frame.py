"""Cross-frame attention (the paper's multi-frame fusion by cross-attention between frames).

In each SpatialTransformer's self-attention (`attn1`), every frame's queries also see the keys and values of an
anchor frame (frame 0 or the nearest keyframe) and of its previous frame. The result is blended with the layer's
own output by a strength in [0, 1]; at 0 the layer is not touched at all.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from einops import rearrange
from torch import nn

from .attention import attention
from .errors import CCDMError
from .patching import current_forward, patched_forwards


class FrameContext:
    """Per-call frame layout shared by the patched layers: frames per video and each frame's anchor."""

    def __init__(self, strength: float, num_frames: int = 1, anchors: Optional[Sequence[int]] = None):
        if not 0 <= strength <= 1:
            raise CCDMError(f"cross_frame_strength must be in 0..1, got {strength!r}")
        self.strength = float(strength)
        self.set_window(num_frames, anchors)

    def set_window(self, num_frames: int, anchors: Optional[Sequence[int]] = None) -> None:
        """Frames of the next UNet call and, per frame, the index (within the call) of its anchor frame."""
        anchors = [0] * num_frames if anchors is None else list(anchors)
        if len(anchors) != num_frames or any(not 0 <= a < num_frames for a in anchors):
            raise CCDMError(f"anchors {anchors} do not fit a window of {num_frames} frames")
        self.num_frames = num_frames
        self.anchors = anchors


def window_anchors(window: Sequence[int], keyframes: Sequence[int]) -> List[int]:
    """For each frame of a window, the in-window index of its nearest keyframe in the window, else 0."""
    inside = [i for i, frame in enumerate(window) if frame in set(keyframes)]
    if not inside:
        return [0] * len(window)
    return [min(inside, key=lambda i: (abs(window[i] - frame), i)) for frame in window]


def self_attention_layers(unet: nn.Module) -> List[nn.Module]:
    """The `attn1` layers of every BasicTransformerBlock (spatial self-attention)."""
    return [m.attn1 for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock" and hasattr(m, "attn1")]


def _cross_frame_forward(layer: nn.Module, previous, ctx: FrameContext):
    own = current_forward(layer, previous)

    def forward(x: torch.Tensor, context=None, mask=None, **kwargs) -> torch.Tensor:
        out = own(x, context=context, mask=mask, **kwargs)
        if ctx.strength == 0 or ctx.num_frames < 2 or context is not None:
            return out
        return torch.lerp(out, _extended_attention(layer, x, ctx), ctx.strength) if ctx.strength < 1 \
            else _extended_attention(layer, x, ctx)
    return forward


def _extended_attention(layer: nn.Module, x: torch.Tensor, ctx: FrameContext) -> torch.Tensor:
    """Each frame attends to [itself, its anchor, its previous frame]; frames of different videos never mix."""
    f = ctx.num_frames
    if x.shape[0] % f:
        raise CCDMError(f"a batch of {x.shape[0]} frames is not a whole number of {f}-frame videos")
    heads = layer.heads
    q = rearrange(layer.to_q(x), "bf n (h d) -> bf h n d", h=heads)
    k = rearrange(layer.to_k(x), "(b f) n c -> b f n c", f=f)
    v = rearrange(layer.to_v(x), "(b f) n c -> b f n c", f=f)
    anchor = torch.tensor(ctx.anchors, device=x.device)
    prev = torch.tensor([max(i - 1, 0) for i in range(f)], device=x.device)
    k = torch.cat([k, k[:, anchor], k[:, prev]], dim=2)
    v = torch.cat([v, v[:, anchor], v[:, prev]], dim=2)
    k, v = (rearrange(t, "b f n (h d) -> (b f) h n d", h=heads) for t in (k, v))
    out = rearrange(attention(q, k, v), "bf h n d -> bf n (h d)")
    return layer.to_out(out)


def cross_frame_attention(unet: nn.Module, ctx: FrameContext):
    """Context manager patching `attn1` of every spatial transformer for the block; strength 0 patches nothing."""
    layers = self_attention_layers(unet) if ctx.strength > 0 else []
    return patched_forwards(layers, lambda layer, previous: _cross_frame_forward(layer, previous, ctx))
