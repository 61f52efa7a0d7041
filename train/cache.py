"""Latent cache: each video's clip VAE-encoded once into safetensors shards, so later epochs skip the VAE."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from ccdm_core.tensorfile import write_safetensors

from .data import ClipError, VideoItem, read_clip, resize_center_crop
from .dataset import SampleKey, Sample, Skipped, drop_caption, items_fingerprint, sample_rng, unexpected_reason

SHARD_VIDEOS = 64  # videos per shard file
ENCODE_CHUNK = 8  # frames per VAE call

Encoder = Callable[[torch.Tensor], torch.Tensor]  # float `n 3 H W` in [-1, 1] -> unscaled latents `n c h w`


class CacheIndex:
    """What the cache holds: video index -> (shard file, cached frames), and the videos that could not be read."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = Path(folder), fingerprint
        self.entries: Dict[int, Tuple[str, int]] = {}
        self.skipped: Dict[int, Tuple[str, str]] = {}

    def missing(self, count: int) -> List[int]:
        """Indices of the first `count` videos the cache neither holds nor knows to be unreadable."""
        return [i for i in range(count) if i not in self.entries and i not in self.skipped]

    def load(self) -> "CacheIndex":
        """Merge every complete index file of this fingerprint in the folder."""
        for path in sorted(self.folder.glob("index-*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a foreign or damaged index: its videos are encoded again
            if data.get("fingerprint") != self.fingerprint:
                continue
            self.entries.update({int(k): (v[0], int(v[1])) for k, v in data["entries"].items()})
            self.skipped.update({int(k): (v[0], v[1]) for k, v in data["skipped"].items()})
        return self


def cache_fingerprint(items: Sequence[VideoItem], base_id: str, size: int, stride: int, clip_frames: int,
                      seed: int) -> str:
    text = json.dumps([items_fingerprint(items), base_id, size, stride, clip_frames, seed])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _encode_clip(encode: Encoder, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 `f h w c` -> unscaled latents `f c h w` (fp16 on the CPU), a few frames per VAE call."""
    images = rearrange(pixels, "f h w c -> f c h w").float() / 127.5 - 1.0
    with torch.no_grad():
        chunks = [encode(images[i: i + ENCODE_CHUNK]).float().cpu() for i in range(0, len(images), ENCODE_CHUNK)]
    return torch.cat(chunks).half()


def build_latent_cache(items: Sequence[VideoItem], todo: Sequence[int], index: CacheIndex, encode: Encoder, *,
                       frames: int, clip_frames: int, stride: int, size: int, seed: int, rank: int,
                       decoder: str = "auto", progress: Optional[Callable[[int], None]] = None) -> None:
    """Encode the videos `todo` (this rank's share); write shards, then this writer's index file."""
    tag = f"r{rank}-{secrets.token_hex(4)}"
    entries: Dict[str, List] = {}
    skipped: Dict[str, List[str]] = {}
    shard: Dict[str, torch.Tensor] = {}
    for number, i in enumerate(todo):
        path = items[i].resolve()
        try:
            if path is None:
                raise ClipError("missing")
            clip = read_clip(path, clip_frames, frames, stride, np.random.default_rng([seed, i]), decoder)
            shard[str(i)] = _encode_clip(encode, torch.from_numpy(resize_center_crop(clip, size)))
        except ClipError as err:
            skipped[str(i)] = [str(path or items[i].name), str(err)]
        except Exception as err:  # as in ClipDataset: a bad file is recorded, never fatal
            skipped[str(i)] = [str(path or items[i].name), unexpected_reason(err)]
        if len(shard) == SHARD_VIDEOS or (shard and number == len(todo) - 1):
            name = f"latents-{tag}-{len(entries):07d}.safetensors"
            write_safetensors(shard, index.folder / name, {"ccdm.cache_fingerprint": index.fingerprint})
            entries.update({k: [name, int(v.shape[0])] for k, v in shard.items()})
            shard = {}
        if progress is not None:
            progress(1)
    _write_json_atomic(index.folder / f"index-{tag}.json",
                       {"fingerprint": index.fingerprint, "entries": entries, "skipped": skipped})


class LatentClipDataset(Dataset):
    """Windows of `frames` consecutive cached latents from a random start; videos the cache skipped stay skipped."""

    def __init__(self, items: Sequence[VideoItem], index: CacheIndex, frames: int, caption_dropout: float, seed: int):
        self.items, self.index, self.frames = list(items), index, frames
        self.caption_dropout, self.seed = caption_dropout, seed
        self._files: Dict[str, object] = {}  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.items)

    def _slice(self, name: str, key: str, start: int) -> torch.Tensor:
        from safetensors import safe_open

        if name not in self._files:
            self._files[name] = safe_open(str(self.index.folder / name), framework="pt", device="cpu")
        return self._files[name].get_slice(key)[start: start + self.frames]

    def __getitem__(self, key: SampleKey):
        if key.index in self.index.skipped:
            path, reason = self.index.skipped[key.index]
            return Skipped(key, path, reason)
        name, count = self.index.entries[key.index]
        rng = sample_rng(self.seed, key)
        start = int(rng.integers(0, count - self.frames + 1))
        latents = self._slice(name, str(key.index), start)
        caption = drop_caption(self.items[key.index].caption, self.caption_dropout, rng)
        return Sample(key, caption, latents=latents)

    def __getstate__(self):
        return dict(self.__dict__, _files={})  # open file handles do not travel to worker processes
