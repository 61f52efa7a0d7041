"""Insert a motion module into an ldm UNet for a run; remove it by identity on exit, bit-exactly."""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Dict, Iterator, List, Tuple

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from .errors import CCDMError
from .motion import MotionModule, TemporalModule
from .patching import patched_forwards
from .unet_slots import Slot, check_fit


class MotionHandle:
    """Per-run state shared by the inserted layers: the frame count of the current UNet call."""

    def __init__(self, num_frames: int, max_frames: int):
        self.max_frames = max_frames
        self._num_frames = 1
        self.num_frames = num_frames

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @num_frames.setter
    def num_frames(self, value: int) -> None:
        if isinstance(value, bool) or int(value) != value or not 1 <= int(value) <= self.max_frames:
            raise CCDMError(f"num_frames {value!r} out of range; the motion module accepts 1..{self.max_frames} "
                            f"frames per call (use context windows for longer clips)")
        self._num_frames = int(value)


class TemporalSlot(nn.Module):
    """The layer placed in the UNet: calls a temporal module with the run's frame count."""

    def __init__(self, module: TemporalModule, handle: MotionHandle):
        super().__init__()
        self.module = module
        object.__setattr__(self, "handle", handle)  # plain attribute, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, self.handle.num_frames)


def _insert(container: nn.Sequential, index: int, layer: nn.Module) -> None:
    items = list(container._modules.values())
    items.insert(index, layer)
    container._modules.clear()
    container._modules.update((str(i), m) for i, m in enumerate(items))


def _remove(container: nn.Sequential, original: List[Tuple[str, nn.Module]], inserted: List[nn.Module]) -> None:
    """Remove exactly the inserted objects; what remains must be the original children, in order."""
    kept = [m for m in container._modules.values() if not any(m is x for x in inserted)]
    changed = len(kept) != len(original) or any(a is not b for a, (_, b) in zip(kept, original))
    container._modules.clear()
    container._modules.update(original)
    if changed:
        raise RuntimeError("a UNet block was changed by someone else during the run; restored its original children")


def _video_group_norm(norm: nn.GroupNorm, handle: MotionHandle, x: torch.Tensor) -> torch.Tensor:
    """GroupNorm with statistics over all frames of each video (how AnimateDiff v1 was trained)."""
    video = rearrange(x.float(), "(b f) c h w -> b c f h w", f=handle.num_frames)
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    out = F.group_norm(video, norm.num_groups, weight, bias, norm.eps)
    return rearrange(out, "b c f h w -> (b f) c h w").to(x.dtype)


def _frame_norms(unet: nn.Module) -> List[nn.GroupNorm]:
    """The UNet's own GroupNorms outside spatial transformers (ResBlocks and the output norm)."""
    skip = set()
    for module in unet.modules():
        if type(module).__name__ == "SpatialTransformer":
            skip.update(id(m) for m in module.modules())
    return [m for m in unet.modules() if isinstance(m, nn.GroupNorm) and id(m) not in skip]


def _bound_video_norm(norm: nn.GroupNorm, handle: MotionHandle):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _video_group_norm(norm, handle, x)
    return forward


def _snapshot(slots: Dict[str, Slot]) -> Dict[int, Tuple[nn.Sequential, List[Tuple[str, nn.Module]]]]:
    return {id(s.container): (s.container, list(s.container._modules.items())) for s in slots.values()}


def _check_restored(unet: nn.Module, snapshot) -> None:
    for container, original in snapshot.values():
        if list(container._modules.items()) != original:
            raise RuntimeError("UNet not restored after motion injection")
    if any(isinstance(m, TemporalSlot) for m in unet.modules()):
        raise RuntimeError("a temporal layer was left in the UNet")


@contextlib.contextmanager
def inject_motion(unet: nn.Module, module: MotionModule, num_frames: int,
                  groupnorm_over_frames: bool = None) -> Iterator[MotionHandle]:
    """Insert `module`'s temporal layers into `unet` for the block; the handle sets `num_frames` per call.

    On exit (normal, exception or KeyboardInterrupt) the exact inserted objects are removed, patched
    GroupNorms get back exactly what they had, and the UNet is checked to be as before.
    """
    slots = check_fit(unet, module)  # 1. check fit before touching anything
    handle = MotionHandle(num_frames, module.max_frames)
    if groupnorm_over_frames is None:
        groupnorm_over_frames = module.info.groupnorm_over_frames
    snapshot = _snapshot(slots)
    norms = _frame_norms(unet) if groupnorm_over_frames else []
    inserted: Dict[int, List[nn.Module]] = {}
    try:
        # 2. insert from the highest index down so earlier indices of one container stay valid
        for slot in sorted(slots.values(), key=lambda s: -s.index):
            layer = TemporalSlot(module.get_submodule(slot.name), handle)
            _insert(slot.container, slot.index, layer)
            inserted.setdefault(id(slot.container), []).append(layer)
        # 3. v1: GroupNorm over frames, restored (by the inner context) before the layers are removed
        with patched_forwards(norms, lambda norm, previous: _bound_video_norm(norm, handle)):
            yield handle
    finally:
        errors = []
        for key, (container, original) in snapshot.items():
            try:
                _remove(container, original, inserted.get(key, []))
            except RuntimeError as err:
                errors.append(err)
        _check_restored(unet, snapshot)
        if errors:
            raise errors[0]


__all__ = ["MotionHandle", "TemporalSlot", "inject_motion"]
