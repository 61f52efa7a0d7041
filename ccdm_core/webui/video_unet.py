"""Context windows inside the WebUI's CFG denoiser: every UNet call is split into its videos and windows.

The WebUI calls the UNet with `(n f) c h w` items: `[cond videos..., uncond videos...]` when it batches cond and
uncond, or one chunk of videos when it splits them. Each call is cut into its `n = batch // num_frames` videos
and each video into its context windows; one UNet call gets one window of one video (bounded memory, and the
same calls whatever the WebUI's chunking, so batched and split cond/uncond give bit-identical results). Window
outputs are accumulated with centre-heavy weights in fp64 (fp32 on MPS) and divided; videos never mix.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from ..cross_frame import FrameContext, window_anchors
from ..errors import CCDMError
from ..patching import MISSING, current_forward
from ..windows import Window, WindowAccumulator, plan_windows


def count_videos(batch: int, num_frames: int) -> int:
    """Number of videos in a UNet batch of `batch` frame items."""
    if num_frames < 1 or batch % num_frames:
        raise CCDMError(f"the UNet was called with {batch} items, not a whole number of {num_frames}-frame videos "
                        "(composable `AND` prompts and extensions that change the batch are not supported with CCDM)")
    return batch // num_frames


def _take(value: Any, index: torch.Tensor, batch: int) -> Any:
    """Slice per-item tensors (leading dim == batch); pass everything else through."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch:
        return value.index_select(0, index.to(value.device))
    return value


def _call(forward, x, args, kwargs, index: torch.Tensor) -> torch.Tensor:
    batch = x.shape[0]
    return forward(x.index_select(0, index), *[_take(a, index, batch) for a in args],
                   **{k: _take(v, index, batch) for k, v in kwargs.items()})


def _video_forward(forward, set_num_frames, x, args, kwargs, start: int, num_frames: int,
                   windows: List[Window], on_window: Optional[Callable[[Window], None]] = None) -> torch.Tensor:
    """One video (items start..start+num_frames): each window through the UNet, weighted average per frame."""
    if len(windows) == 1 and tuple(windows[0]) == tuple(range(num_frames)):
        set_num_frames(num_frames)
        if on_window is not None:
            on_window(list(windows[0]))
        return _call(forward, x, args, kwargs, torch.arange(start, start + num_frames, device=x.device))
    acc = out = None
    for window in windows:
        local = torch.tensor(window, dtype=torch.long, device=x.device)
        set_num_frames(len(window))
        if on_window is not None:
            on_window(list(window))
        out = _call(forward, x, args, kwargs, local + start)
        if acc is None:
            acc = WindowAccumulator((num_frames,) + tuple(out.shape[1:]), 0, out.device)
        acc.add(window, out)
    return acc.result(out.dtype)


def windowed_forward(forward: Callable[..., torch.Tensor], set_num_frames: Callable[[int], None],
                     x: torch.Tensor, args: Sequence[Any], kwargs: Dict[str, Any], num_frames: int,
                     windows: List[Window], on_window: Optional[Callable[[Window], None]] = None) -> torch.Tensor:
    """Run `forward(x, *args, **kwargs)` over `(n f) c h w` one video and one window at a time.

    `args`/`kwargs` hold the UNet's other inputs (timesteps `(n f)`, context `(n f) T D`, ...); every tensor
    whose leading dimension is the batch is sliced like x, everything else is passed as is. Each UNet call
    holds one window of one video, so the result does not depend on how the WebUI chunks its batch.
    `on_window(window)` is told each window (its frame indices) just before its UNet call.
    """
    videos = count_videos(x.shape[0], num_frames)
    outs = [_video_forward(forward, set_num_frames, x, args, kwargs, v * num_frames, num_frames, windows, on_window)
            for v in range(videos)]
    return outs[0] if videos == 1 else torch.cat(outs)


class WindowedUNetForward:
    """The instance-level `forward` placed on the UNet for a run: windows per video, then the previous forward."""

    def __init__(self, unet: nn.Module, previous: Any, handle, num_frames: int, windows: List[Window],
                 frame_ctx: Optional[FrameContext] = None, keyframes: Sequence[int] = ()):
        self.unet = unet
        self.frame_ctx = frame_ctx  # cross-frame attention's layout, set per window (None: no cross-frame)
        self.keyframes = list(keyframes)
        self.previous = previous  # the instance attribute that was there, or MISSING (class-level forward)
        self.handle = handle
        self.num_frames = num_frames
        self.windows = windows

    def _inner(self) -> Callable[..., torch.Tensor]:
        return current_forward(self.unet, self.previous)  # looked up per call: the WebUI may swap the class's

    def _set_frames(self, frames: int) -> None:
        self.handle.num_frames = frames

    def _set_window(self, window: Window) -> None:
        self.frame_ctx.set_window(len(window), window_anchors(window, self.keyframes))

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        on_window = self._set_window if self.frame_ctx is not None else None
        return windowed_forward(self._inner(), self._set_frames, x, args, kwargs, self.num_frames, self.windows,
                                on_window)


@contextlib.contextmanager
def instance_forward(unet: nn.Module, make: Callable[[Any], Any], during: str) -> Iterator[Any]:
    """`unet.forward = make(previous)` for the block (an instance attribute, as the WebUI and ControlNet set theirs);
    the previous instance forward (or none) put back by identity after, also on errors. Someone else's forward left
    in place at a normal end is an error naming `during`."""
    previous = unet.__dict__.get("forward", MISSING)
    wrapper = make(previous)
    unet.__dict__["forward"] = wrapper
    try:
        yield wrapper
    finally:
        current = unet.__dict__.get("forward", MISSING)
        if previous is MISSING:
            unet.__dict__.pop("forward", None)
        else:
            unet.__dict__["forward"] = previous
    if current is not wrapper:  # reached only when the block ended normally
        raise RuntimeError(f"the UNet's forward was replaced by someone else during {during}; restored the one "
                           "that was there before")


def windowed_unet_forward(unet: nn.Module, handle, num_frames: int, context_length: int, context_overlap: int,
                          closed_loop: bool, frame_ctx: Optional[FrameContext] = None,
                          keyframes: Sequence[int] = ()):
    """Put a `WindowedUNetForward` on `unet.forward` for the block; restore exactly what was there."""
    windows = plan_for(num_frames, context_length, context_overlap, closed_loop)
    return instance_forward(
        unet, lambda previous: WindowedUNetForward(unet, previous, handle, num_frames, windows, frame_ctx, keyframes),
        "the CCDM run")


def plan_for(num_frames: int, context_length: int, context_overlap: int, closed_loop: bool) -> List[Window]:
    """The windows a run of `num_frames` uses (context clipped to the clip length)."""
    length = min(context_length, num_frames)
    return plan_windows(num_frames, length, min(context_overlap, length - 1), closed_loop)


__all__ = ["count_videos", "instance_forward", "windowed_forward", "WindowedUNetForward", "windowed_unet_forward",
           "plan_for"]
