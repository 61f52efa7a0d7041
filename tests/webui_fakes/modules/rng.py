"""Fake modules.rng: ImageRNG with 1.6.0's signature; one CPU generator per seed, first() then next()."""
import torch


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape, self.seeds, self.subseeds = tuple(map(int, shape)), seeds, subseeds
        self.subseed_strength = subseed_strength
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def first(self):
        return self.next()

    def next(self):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
