"""Context windows: long clips sampled in overlapping windows whose outputs are averaged with weights."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from .errors import CCDMError

Window = Tuple[int, ...]


def plan_windows(num_frames: int, context_length: int = 16, context_overlap: int = 4,
                 closed_loop: bool = False) -> List[Window]:
    """Overlapping windows of `context_length` frames covering every frame; with `closed_loop` they wrap around."""
    _check_int("num_frames", num_frames, 1)
    _check_int("context_length", context_length, 1)
    _check_int("context_overlap", context_overlap, 0)
    if context_overlap >= context_length:
        raise CCDMError(f"context_overlap {context_overlap} must be smaller than context_length {context_length} "
                        f"(accepted 0..{context_length - 1})")
    if num_frames <= context_length:
        return [tuple(range(num_frames))]
    stride = context_length - context_overlap
    if closed_loop:
        count = math.ceil(num_frames / stride)
        return [tuple((s * stride + j) % num_frames for j in range(context_length)) for s in range(count)]
    starts = list(range(0, num_frames - context_length + 1, stride))
    if starts[-1] != num_frames - context_length:
        starts.append(num_frames - context_length)
    return [tuple(range(s, s + context_length)) for s in starts]


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CCDMError(f"{name} must be an integer >= {low}, got {value!r}")


def window_weights(length: int) -> torch.Tensor:
    """Integer weights over a window, highest in the centre (1, 2, ..., 2, 1): exact in fp64 sums."""
    return torch.tensor([min(j + 1, length - j) for j in range(length)], dtype=torch.float64)


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


class WindowAccumulator:
    """Sum of window outputs times window_weights along a frame axis, divided by the summed weights at the end.

    fp64 (fp32 where the device has no fp64) with small integer weights, so identical windows give back exactly
    their value; never last-writer-wins.
    """

    def __init__(self, shape, frame_axis: int, device: torch.device):
        self.frame_axis = frame_axis
        self.dtype = _accumulator_dtype(device)
        self.acc = torch.zeros(tuple(shape), dtype=self.dtype, device=device)
        self.total = torch.zeros(shape[frame_axis], dtype=self.dtype, device=device)

    def _along_frames(self, values: torch.Tensor) -> torch.Tensor:
        view = [1] * self.acc.dim()
        view[self.frame_axis] = -1
        return values.view(view)

    def add(self, window: Window, out: torch.Tensor) -> None:
        index = torch.tensor(window, dtype=torch.long, device=self.acc.device)
        weight = window_weights(len(window)).to(device=self.acc.device, dtype=self.dtype)
        self.acc.index_add_(self.frame_axis, index, out.to(self.acc.device, self.dtype) * self._along_frames(weight))
        self.total.index_add_(0, index, weight)

    def result(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.acc / self._along_frames(self.total)).to(dtype)


class WindowedDenoiser:
    """Wraps `denoiser(x, sigma, **extra)` over `b c f h w`: runs each window, accumulates weighted outputs.

    Per-frame extra arguments are named in `frame_args` as name -> (frame axis, ndim of the per-frame form), e.g.
    `{"cond": (1, 4)}` for a prompt schedule `b f T D`, and sliced per window. Accumulation is in fp64 (fp32 where
    the device has no fp64), never last-writer-wins.
    """

    def __init__(self, denoiser: Callable, context_length: int = 16, context_overlap: int = 4,
                 closed_loop: bool = False, frame_args: Dict[str, Tuple[int, int]] = None,
                 pass_window: bool = False):
        plan_windows(1, context_length, context_overlap, closed_loop)  # validate once
        self.denoiser = denoiser
        self.context_length = context_length
        self.context_overlap = context_overlap
        self.closed_loop = closed_loop
        self.frame_args = dict(frame_args or {})
        self.pass_window = pass_window  # call the denoiser with window=(global frame indices)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        num_frames = x.shape[2]
        windows = plan_windows(num_frames, self.context_length, self.context_overlap, self.closed_loop)
        if len(windows) == 1 and windows[0] == tuple(range(num_frames)):
            return self.denoiser(x, sigma, **self._with_window(extra, windows[0]))
        acc = WindowAccumulator(x.shape, 2, x.device)
        for window in windows:
            index = torch.tensor(window, device=x.device)
            sliced = self._with_window(self._slice(extra, index, num_frames), window)
            acc.add(window, self.denoiser(x[:, :, index], sigma, **sliced))
        return acc.result(x.dtype)

    def _with_window(self, extra: Dict, window: Window) -> Dict:
        return dict(extra, window=window) if self.pass_window else extra

    def _slice(self, extra: Dict, index: torch.Tensor, num_frames: int) -> Dict:
        out = dict(extra)
        for name, (axis, ndim) in self.frame_args.items():
            value = extra.get(name)
            if isinstance(value, torch.Tensor) and value.dim() == ndim:
                if value.shape[axis] != num_frames:
                    raise CCDMError(f"{name} has {value.shape[axis]} frames on axis {axis}, the clip has {num_frames}")
                out[name] = value.index_select(axis, index.to(value.device))
        return out


def frames_covered(windows: Sequence[Window], num_frames: int) -> bool:
    """True when every frame index in 0..num_frames-1 is in some window."""
    return set().union(*map(set, windows)) == set(range(num_frames))
