"""Counting the multiply-add FLOPs of matmuls and convolutions, on torch 2.0 as on newer releases.

`torch.utils.flop_counter` first shipped after torch 2.0 (the WebUI 1.6.0 pin), so this is a small counter of its
own over the dispatcher (`TorchDispatchMode`, present since torch 1.13), with the same convention: a
multiply-add is 2 FLOPs; matmuls and convolutions only (the rest is small beside them in a UNet).
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _mm(args) -> int:
    a, b = args[0], args[1]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


def _addmm(args) -> int:
    return _mm(args[1:])


def _bmm(args) -> int:
    a, b = args[0], args[1]
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _baddbmm(args) -> int:
    return _bmm(args[1:])


def _convolution(args, out) -> int:
    weight, transposed, groups = args[1], args[6], args[8]
    spatial = out.shape[2:] if not transposed else args[0].shape[2:]
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    in_per_group = weight.shape[0] // groups if transposed else weight.shape[1]
    kernel = math.prod(weight.shape[2:])
    return 2 * out.shape[0] * out_channels * math.prod(spatial) * in_per_group * kernel


_COUNTERS: Dict[object, Callable] = {
    aten.mm.default: _mm, aten.addmm.default: _addmm,
    aten.bmm.default: _bmm, aten.baddbmm.default: _baddbmm,
}


class FlopCounter(TorchDispatchMode):
    """`with FlopCounter() as c: fn()` then `c.total`: FLOPs of the matmuls and convolutions `fn` ran."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = getattr(func, "overloadpacket", None)
        if packet is aten.convolution:
            self.total += _convolution(args, out)
        elif func in _COUNTERS:
            self.total += _COUNTERS[func](args)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (matmuls and convolutions, 2 per multiply-add)."""
    with FlopCounter() as counter:
        fn()
    return counter.total
