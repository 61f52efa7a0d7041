"""Attention dispatch for the engine's own layers: SDPA by default, swappable for the run (e.g. the WebUI's choice)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

# An attention backend takes q, k, v laid out `b h n d` and returns `b h n d`.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V through torch's fused scaled-dot-product attention."""
    return F.scaled_dot_product_attention(q, k, v)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same attention as explicit matmuls (what FLOP counters can see)."""
    weights = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return weights.softmax(dim=-1) @ v


_backend: AttentionFn = sdpa_attention


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Run the current backend on `b h n d` tensors."""
    return _backend(q, k, v)


def current_backend() -> AttentionFn:
    return _backend


@contextlib.contextmanager
def use_attention_backend(fn: AttentionFn) -> Iterator[AttentionFn]:
    """Use `fn` for the engine's attention inside the block; the previous backend is restored by identity."""
    global _backend
    previous = _backend
    _backend = fn
    try:
        yield fn
    finally:
        _backend = previous
