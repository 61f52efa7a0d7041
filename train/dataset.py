"""Clips for training: a per-rank infinite shard sampler, datasets that skip bad videos, and exact-size batches."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset, Sampler

from ccdm_core.errors import CCDMError

from .data import ClipError, VideoItem, read_clip, resize_center_crop

Cursor = Tuple[int, int]  # (epoch, position in this rank's shard of that epoch)


@dataclasses.dataclass(frozen=True)
class SampleKey:
    """Which video to read, and where in the data order: the clip's randomness is derived from it."""

    epoch: int
    position: int
    index: int


@dataclasses.dataclass
class Sample:
    key: SampleKey
    caption: str
    pixels: Optional[torch.Tensor] = None  # uint8 `f h w c`
    latents: Optional[torch.Tensor] = None  # unscaled VAE means `f c h w` (from the latent cache)


@dataclasses.dataclass
class Skipped:
    key: SampleKey
    path: str
    reason: str


def unexpected_reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"corrupt: {type(err).__name__}: {text[0][:200] if text else ''}"


def sample_rng(seed: int, key: SampleKey) -> np.random.Generator:
    """A generator for one sample that depends only on the seed and the sample's place in the data order."""
    return np.random.default_rng([seed, key.epoch, key.position, key.index])


def drop_caption(caption: str, probability: float, rng: np.random.Generator) -> str:
    """Caption dropout for classifier-free guidance: the empty prompt, as the sampler's unconditional branch uses."""
    return "" if rng.random() < probability else caption


class ClipDataset(Dataset):
    """Decodes a clip of `frames` frames every `stride` frames from a random start; bad videos become `Skipped`."""

    def __init__(self, items: Sequence[VideoItem], frames: int, stride: int, size: int, caption_dropout: float,
                 seed: int, decoder: str = "auto"):
        self.items, self.frames, self.stride, self.size = list(items), frames, stride, size
        self.caption_dropout, self.seed, self.decoder = caption_dropout, seed, decoder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: SampleKey):
        item = self.items[key.index]
        rng = sample_rng(self.seed, key)
        path = item.resolve()
        if path is None:
            return Skipped(key, item.name, "missing")
        try:
            clip = read_clip(path, self.frames, self.frames, self.stride, rng, self.decoder)
            pixels = torch.from_numpy(resize_center_crop(clip, self.size))
        except ClipError as err:
            return Skipped(key, str(path), str(err))
        except Exception as err:  # a decoder's own error on a bad file must not end a days-long run: skip it
            return Skipped(key, str(path), unexpected_reason(err))
        return Sample(key, drop_caption(item.caption, self.caption_dropout, rng), pixels=pixels)


class ShardSampler(Sampler):
    """Endless `SampleKey`s of this rank's shard: each epoch a seeded permutation, padded to a multiple of the
    world size by wrapping, every `world`-th entry from `rank`. Videos known to be bad are passed over."""

    def __init__(self, size: int, rank: int, world: int, seed: int, start: Cursor = (0, 0)):
        if size < 1:
            raise CCDMError("the dataset is empty")
        self.size, self.rank, self.world, self.seed, self.start = size, rank, world, seed, tuple(start)
        self.bad: Set[int] = set()

    def shard(self, epoch: int) -> np.ndarray:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        padded = np.resize(order, -(-self.size // self.world) * self.world)  # np.resize repeats from the start
        return padded[self.rank:: self.world]

    def __iter__(self) -> Iterator[SampleKey]:
        epoch, position = self.start
        while True:
            yielded = False
            shard = self.shard(epoch)
            for pos in range(position, len(shard)):
                index = int(shard[pos])
                if index not in self.bad:
                    yielded = True
                    yield SampleKey(epoch, pos, index)
            if not yielded and position == 0:
                raise CCDMError(f"none of the {len(set(shard.tolist()))} videos of this process's shard could be "
                                f"read (see the skipped videos); check --data, --frames and --stride")
            epoch, position = epoch + 1, 0


def _keep(sample):
    return sample


@dataclasses.dataclass
class Batch:
    captions: List[str]
    pixels: Optional[torch.Tensor] = None  # float `b c f h w` in [-1, 1]
    latents: Optional[torch.Tensor] = None  # unscaled `b c f h w`


def collate(samples: List[Sample]) -> Batch:
    captions = [s.caption for s in samples]
    if samples[0].latents is not None:
        latents = torch.stack([s.latents.float() for s in samples])
        return Batch(captions, latents=rearrange(latents, "b f c h w -> b c f h w"))
    pixels = torch.stack([s.pixels for s in samples]).float() / 127.5 - 1.0
    return Batch(captions, pixels=rearrange(pixels, "b f h w c -> b c f h w"))


class BatchStream:
    """Exactly `batch_size` good samples per batch, in the sampler's order; records skipped videos and the cursor
    just after the last sample used (a resumed run continues from there)."""

    def __init__(self, dataset: Dataset, sampler: ShardSampler, batch_size: int, workers: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.cursor: Cursor = sampler.start
        self.skipped: Dict[str, str] = {}
        extra = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
        self.loader = DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_keep, num_workers=workers,
                                 **extra)
        self._iterator = None

    def next_batch(self) -> Batch:
        if self._iterator is None:
            self._iterator = iter(self.loader)
        samples: List[Sample] = []
        while len(samples) < self.batch_size:
            item = next(self._iterator)
            self.cursor = (item.key.epoch, item.key.position + 1)
            if isinstance(item, Skipped):
                self.sampler.bad.add(item.key.index)
                self.skipped.setdefault(item.path, item.reason)
                continue
            samples.append(item)
        return collate(samples)

    def close(self) -> None:
        self._iterator = None  # shuts the workers down


def items_fingerprint(items: Sequence[VideoItem]) -> str:
    """sha256 over the listed videos and captions (identifies the data a cache or a run was made from)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update("\0".join(item.candidates + (item.caption,)).encode("utf-8") + b"\n")
    return digest.hexdigest()
