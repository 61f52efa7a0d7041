"""Per-frame ControlNet hints for a video batch: keyframe controls that fade over a radius, one keyframe per frame.

A keyframe may carry a ControlNet condition (`ControlSpec`: preprocessor, model, weight, radius). ControlNet
prepares one hint image per condition and applies it to every item of a UNet call; for video, each frame needs
its own hint and weight. This module computes them as pure functions over tensors (no WebUI):

- `plan_frames`: which keyframe controls each frame, with which weight. A keyframe at frame k with weight w and
  radius r gives frame n the weight `w * (1 - d / (r + 1))` for a frame distance `d = |n - k| <= r` (wrapping
  around in a closed loop), else 0: radius 0 is its own frame only, radius r reaches r frames on each side.
- Overlapping keyframes: **the strongest keyframe takes the frame.** Each frame is controlled by at most one
  keyframe, the one with the highest faded weight there (ties: the nearer keyframe, then the earlier one in the
  list), with that weight. ControlNet adds the residuals of its units, so letting two keyframes act on one frame
  would superimpose two structures (two edge maps) and exceed either weight; with one owner per frame the
  control switches where the fades cross, and the weight stays continuous there for equal keyframe weights.
- `FrameHints`: the hints of one control model as a small table (a zero row plus one row per keyframe) and the
  per-frame owner index, so the `[F, C, H, W]` tensor, or just the rows of one UNet call, is one `index_select`.
- Batch layout: the WebUI's UNet batch is `(n f)` with frames contiguous per video, cond videos first, then
  uncond videos (`2F` rows when batched, chunks of whole videos when split). `batch_frame_index` gives each item
  its frame (`i % F`); cond and uncond get the same hint and weight (ControlNet conditions both halves, as it does
  for images).
- `replaced_attributes`: set attributes on an object for a block and put back exactly the objects that were there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .errors import CCDMError

WEIGHT_RANGE = (0.0, 2.0)
RADIUS_RANGE = (0, 1024)
SPEC_FIELDS = ("module", "model", "weight", "radius")
MISSING = object()  # the object had no such attribute before the block


@dataclasses.dataclass(frozen=True)
class ControlSpec:
    """A keyframe's ControlNet condition: preprocessor (`module`), `model`, `weight` 0..2, `radius` in frames."""

    module: str
    model: str
    weight: float = 1.0
    radius: int = 0

    def __post_init__(self):
        for name in ("module", "model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise CCDMError(f"controlnet.{name}: must be a non-empty string (a name from ControlNet's list), "
                                f"got {value!r}")
            object.__setattr__(self, name, value.strip())
        weight, (low, high) = self.weight, WEIGHT_RANGE
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight):
            raise CCDMError(f"controlnet.weight: must be a number in {low:g}..{high:g}, got {weight!r}")
        if not low <= weight <= high:
            raise CCDMError(f"controlnet.weight: {weight:g} is out of range; accepted {low:g}..{high:g}")
        object.__setattr__(self, "weight", float(weight))
        radius, (low, high) = self.radius, RADIUS_RANGE
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or radius != int(radius):
            raise CCDMError(f"controlnet.radius: must be an integer number of frames in {low}..{high}, got {radius!r}")
        if not low <= int(radius) <= high:
            raise CCDMError(f"controlnet.radius: {int(radius)} is out of range; accepted {low}..{high}")
        object.__setattr__(self, "radius", int(radius))

    def to_dict(self) -> dict:
        return {"module": self.module, "model": self.model, "weight": self.weight, "radius": self.radius}


def control_spec_from_dict(value: Any) -> Optional[ControlSpec]:
    """A keyframe's `controlnet` field: null -> None, or an object with module, model[, weight, radius]."""
    if value is None or isinstance(value, ControlSpec):
        return value
    if not isinstance(value, Mapping):
        raise CCDMError(f"controlnet: must be null or an object with {', '.join(SPEC_FIELDS)}, "
                        f"got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in SPEC_FIELDS)
    if unknown:
        raise CCDMError(f"controlnet.{unknown[0]}: unknown field; accepted: {', '.join(SPEC_FIELDS)}")
    for name in ("module", "model"):
        if name not in value:
            raise CCDMError(f"controlnet.{name}: missing; accepted fields: {', '.join(SPEC_FIELDS)}")
    return ControlSpec(**dict(value))


# ---------------------------------------------------------------- weights per frame

def frame_distance(a: int, b: int, num_frames: int, closed_loop: bool = False) -> int:
    """Frames between a and b (around the loop when the clip is a closed loop)."""
    d = abs(a - b)
    return min(d, num_frames - d) if closed_loop else d


def fade_weights(num_frames: int, frame: int, weight: float, radius: int, closed_loop: bool = False) -> torch.Tensor:
    """One keyframe's weight on every frame, `[F]` fp64: `weight * (1 - d / (radius + 1))` within the radius."""
    out = torch.zeros(num_frames, dtype=torch.float64)
    for n in range(num_frames):
        d = frame_distance(n, frame, num_frames, closed_loop)
        if d <= radius:
            out[n] = weight * (1.0 - d / (radius + 1.0))
    return out


@dataclasses.dataclass(frozen=True)
class FramePlan:
    """For each frame: the keyframe control that owns it (index into the list given, -1: none) and its weight."""

    owners: torch.Tensor  # [F] int64
    weights: torch.Tensor  # [F] float32; 0 where owners == -1

    @property
    def num_frames(self) -> int:
        return int(self.owners.shape[0])

    def restricted(self, members: Sequence[int]) -> "FramePlan":
        """The plan seen by a subset of the controls: owners renumbered 0..len-1, frames of the others cleared."""
        local = torch.full_like(self.owners, -1)
        for i, k in enumerate(members):
            local[self.owners == k] = i
        return FramePlan(local, torch.where(local >= 0, self.weights, torch.zeros_like(self.weights)))


def plan_frames(num_frames: int, controls: Sequence[Tuple[int, ControlSpec]], closed_loop: bool = False) -> FramePlan:
    """Owner and weight per frame for `controls` = [(keyframe frame, spec), ...]; the strongest keyframe takes
    each frame (ties: nearer, then earlier in the list); frames out of every radius get owner -1 and weight 0."""
    if num_frames < 1:
        raise CCDMError(f"frames must be at least 1, got {num_frames}")
    for frame, _ in controls:
        if not 0 <= frame < num_frames:
            raise CCDMError(f"keyframe at frame {frame} is outside the clip; accepted frames 0..{num_frames - 1}")
    fades = [fade_weights(num_frames, f, spec.weight, spec.radius, closed_loop) for f, spec in controls]
    owners = torch.full((num_frames,), -1, dtype=torch.long)
    weights = torch.zeros(num_frames, dtype=torch.float32)
    for n in range(num_frames):
        best = None
        for k, (frame, _) in enumerate(controls):
            w = float(fades[k][n])
            if w <= 0.0:
                continue
            key = (-w, frame_distance(n, frame, num_frames, closed_loop), k)
            best = key if best is None or key < best else best
        if best is not None:
            owners[n], weights[n] = best[2], -best[0]
    return FramePlan(owners, weights)


# ---------------------------------------------------------------- hints per frame and per UNet call

def _as_chw(hint: torch.Tensor, label: str) -> torch.Tensor:
    if hint.dim() == 4 and hint.shape[0] == 1:
        hint = hint[0]
    if hint.dim() != 3:
        raise CCDMError(f"{label}: a hint must be C x H x W or 1 x C x H x W, got shape {tuple(hint.shape)}")
    return hint


class FrameHints:
    """Hints and weights of the keyframes that share one control model, gathered per frame on demand.

    `hints[i]` is keyframe i's hint (`[C,H,W]` or `[1,C,H,W]`, all the same shape); `plan` is restricted to
    these keyframes (owners 0..len-1, or -1). Frames without an owner get a zero hint and weight 0.
    """

    def __init__(self, hints: Sequence[torch.Tensor], plan: FramePlan):
        if not hints:
            raise CCDMError("FrameHints needs at least one hint")
        rows = [_as_chw(h, f"hint {i}") for i, h in enumerate(hints)]
        if any(r.shape != rows[0].shape for r in rows):
            raise CCDMError(f"hints of one control model must share a shape, got {[tuple(r.shape) for r in rows]}")
        if int(plan.owners.max()) >= len(rows) or int(plan.owners.min()) < -1:
            raise CCDMError(f"plan owners must be in -1..{len(rows) - 1}")
        first = rows[0]
        self.table = torch.cat([torch.zeros_like(first)[None], torch.stack([r.to(first) for r in rows])])
        self.index = (plan.owners + 1).to(first.device)  # row 0 of the table is the zero hint
        self.weights = plan.weights.to(first.device)
        self.num_frames = plan.num_frames

    def _rows(self, frame_index: Optional[torch.Tensor]) -> torch.Tensor:
        if frame_index is None:
            return torch.arange(self.num_frames, device=self.index.device)
        return frame_index.to(self.index.device, torch.long)

    def hints(self, frame_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`[R, C, H, W]`: the hint of each frame in `frame_index` (default: all F frames)."""
        return self.table.index_select(0, self.index.index_select(0, self._rows(frame_index)))

    def frame_weights(self, frame_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`[R]` fp32: the weight of each frame in `frame_index` (default: all F frames)."""
        return self.weights.index_select(0, self._rows(frame_index))

    def active(self, frame_index: Optional[torch.Tensor] = None) -> bool:
        """Whether any frame in `frame_index` has a non-zero weight (else the control can be skipped)."""
        return bool((self.frame_weights(frame_index) > 0).any())


def frame_hints(hints: Sequence[torch.Tensor], plan: FramePlan) -> torch.Tensor:
    """`[F, C, H, W]`: each frame takes the hint of the keyframe that owns it, zeros where none does."""
    return FrameHints(hints, plan).hints()


def batch_frame_index(batch: int, num_frames: int, device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """The frame of each item of a UNet batch `(n f)`: `[cond videos..., uncond videos...]` or a chunk of whole
    videos (the WebUI's split cond/uncond); item i is frame `i % num_frames`."""
    if num_frames < 1 or batch % num_frames:
        raise CCDMError(f"a UNet batch of {batch} items is not a whole number of {num_frames}-frame videos")
    return torch.arange(batch, device=device) % num_frames


def expand_to_batch(per_frame: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-frame rows `[F, ...]` laid out like a UNet batch of `batch` items (2F: cond frames, then uncond)."""
    return per_frame.index_select(0, batch_frame_index(batch, per_frame.shape[0], per_frame.device))


def weight_column(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`[R]` weights as `[R, 1, 1, 1]` in `like`'s dtype and device, to scale `[R, C, h, w]` residuals."""
    return weights.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


# ---------------------------------------------------------------- patching attributes

@contextlib.contextmanager
def replaced_attributes(obj: Any, values: Union[Mapping[str, Any], Sequence[Tuple[str, Any]]]) -> Iterator[Any]:
    """Set `obj.<name> = value` for the block (in the order given); on exit, whatever happens, put back exactly
    the objects that were there (in reverse order; attributes that did not exist are removed again).

    Setting goes through `setattr`, so properties run their setters; a setter with side effects on attributes
    also listed must come after them (it is restored first, then they are).
    """
    items = list(values.items()) if isinstance(values, Mapping) else list(values)
    saved: List[Tuple[str, Any]] = []
    try:
        for name, value in items:
            previous = getattr(obj, name, MISSING)
            setattr(obj, name, value)
            saved.append((name, previous))
        yield obj
    finally:
        for name, previous in reversed(saved):
            if previous is MISSING:
                if name in getattr(obj, "__dict__", {}):
                    delattr(obj, name)
            else:
                setattr(obj, name, previous)


__all__ = ["ControlSpec", "control_spec_from_dict", "fade_weights", "frame_distance", "FramePlan", "plan_frames",
           "FrameHints", "frame_hints", "batch_frame_index", "expand_to_batch", "weight_column",
           "replaced_attributes", "WEIGHT_RANGE", "RADIUS_RANGE", "SPEC_FIELDS", "MISSING"]
