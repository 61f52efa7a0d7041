"""Run ldm's CrossAttention layers through the engine's attention backend (SDPA), as the WebUI's sdp option does."""
from __future__ import annotations

from typing import List

import torch
from einops import rearrange
from torch import nn

from ..attention import attention
from ..patching import patched_forwards


def cross_attention_layers(unet: nn.Module) -> List[nn.Module]:
    """ldm `CrossAttention` modules (attn1 self-attention and attn2 text cross-attention)."""
    return [m for m in unet.modules() if type(m).__name__ == "CrossAttention" and hasattr(m, "to_q")]


def sdpa_forward(layer: nn.Module):
    """A forward for one CrossAttention layer: same weights, fused attention instead of einsum + softmax."""
    def forward(x: torch.Tensor, context: torch.Tensor = None, mask=None) -> torch.Tensor:
        if mask is not None:
            raise NotImplementedError("attention masks are not used by SD1 UNets")
        context = x if context is None else context
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=layer.heads)
                   for t in (layer.to_q(x), layer.to_k(context), layer.to_v(context)))
        out = rearrange(attention(q, k, v), "b h n d -> b n (h d)")
        return layer.to_out(out)
    return forward


def sdpa_cross_attention(unet: nn.Module):
    """Context manager: an instance-level forward on every CrossAttention, restored to exactly what was there."""
    return patched_forwards(cross_attention_layers(unet), lambda layer, previous: sdpa_forward(layer))
