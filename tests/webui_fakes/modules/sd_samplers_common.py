"""Fake modules.sd_samplers_common: SamplerData (1.6.0: a namedtuple subclass) and TorchHijack (routes
k-diffusion's torch.randn_like to p.rng)."""
from collections import namedtuple

import torch

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    def total_steps(self, steps):
        return steps * 2 if self.options.get("second_order", False) else steps


class TorchHijack:
    def __init__(self, p):
        self.rng = p.rng

    def __getattr__(self, item):
        if item == "randn_like":
            return self.randn_like
        return getattr(torch, item)

    def randn_like(self, x):
        return self.rng.next()
