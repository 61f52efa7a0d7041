"""Run ldm's CrossAttention layers through the engine's attention backend (SDPA), as the WebUI's sdp option does."""
from __future__ import annotations

import contextlib
from typing import Iterator, List

import torch
from einops import rearrange
from torch import nn

from ..attention import attention

_MISSING = object()


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


@contextlib.contextmanager
def sdpa_cross_attention(unet: nn.Module) -> Iterator[List[nn.Module]]:
    """Instance-level forward override on every CrossAttention; restored to exactly what was there."""
    layers = cross_attention_layers(unet)
    saved = [(m, m.__dict__.get("forward", _MISSING)) for m in layers]
    try:
        for m in layers:
            m.__dict__["forward"] = sdpa_forward(m)
        yield layers
    finally:
        for m, previous in saved:
            if previous is _MISSING:
                m.__dict__.pop("forward", None)
            else:
                m.__dict__["forward"] = previous
