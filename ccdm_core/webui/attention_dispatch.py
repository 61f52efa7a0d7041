"""The motion module's attention follows the WebUI's chosen optimisation (xformers or SDPA)."""
from __future__ import annotations

import importlib
from typing import Callable, Optional, Tuple

import torch
from einops import rearrange

from ..attention import AttentionFn, sdpa_attention

# Memory-efficient kernels launch one grid row per (batch, head); stay well under CUDA's 65535 grid limit.
XFORMERS_MAX_BATCH_HEADS = 32768


def make_xformers_attention(memory_efficient_attention: Callable) -> AttentionFn:
    """xformers' `memory_efficient_attention` (layout `b n h d`) as a backend over `b h n d`, chunked over b."""

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(t, "b h n d -> b n h d").contiguous() for t in (q, k, v))
        step = max(1, XFORMERS_MAX_BATCH_HEADS // max(1, q.shape[2]))
        outs = [memory_efficient_attention(q[i:i + step], k[i:i + step], v[i:i + step])
                for i in range(0, q.shape[0], step)]
        return rearrange(torch.cat(outs) if len(outs) > 1 else outs[0], "b n h d -> b h n d")

    attend.__name__ = "xformers_attention"
    return attend


def _probe(fn: AttentionFn, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None when `fn` runs and agrees with SDPA on a tiny input on the run's device, else the reason."""
    try:
        q = torch.randn(2, 8, 4, 40, device=device, dtype=dtype)
        ok = torch.allclose(fn(q, q, q).float(), sdpa_attention(q, q, q).float(), atol=2e-2, rtol=2e-2)
        return None if ok else "its output differs from SDPA on a probe"
    except Exception as err:  # any failure (no CUDA kernel for this device, dtype or GPU) means: do not use it
        return f"{type(err).__name__}: {err}"


def backend_for(optimizer_name: Optional[str], device: torch.device, dtype: torch.dtype,
                import_module: Callable = importlib.import_module) -> Tuple[str, AttentionFn, Optional[str]]:
    """(backend name, attention function, note) for the WebUI's optimisation `optimizer_name`.

    `xformers` -> xformers.ops.memory_efficient_attention when it imports and passes a probe on the device;
    everything else (sdp, sdp-no-mem, sub-quadratic, Doggettx, V1, InvokeAI, none) -> torch SDPA, which already
    picks a fused kernel; the temporal attention spans only the frames, so chunked variants gain nothing.
    """
    if (optimizer_name or "").lower() != "xformers":
        return "sdpa", sdpa_attention, None
    try:
        ops = import_module("xformers.ops")
    except ImportError as err:
        return "sdpa", sdpa_attention, f"xformers selected but not importable ({err}); using SDPA"
    fn = make_xformers_attention(ops.memory_efficient_attention)
    reason = _probe(fn, device, dtype)
    if reason is not None:
        return "sdpa", sdpa_attention, f"xformers failed its probe ({reason}); using SDPA"
    return "xformers", fn, None
