"""Camera-move guidance: the camera move a prompt names (zoom, pan, tilt, rotate), without training.

Motion modules learn motion priors but follow camera words in the prompt weakly or not at all (AnimateDiff adds one
MotionLoRA per move for this). Here, while sampling, each frame's clean-latent prediction is pulled toward frame 0's
prediction seen through the camera path: frame n gets frame 0 warped by the move's affine map at progress
n / (frames - 1). Pixels the warp cannot fill (outside frame 0's view) are left to the model, keyframed frames are
left alone, and the pull falls over sampling like keyframe guidance, so late steps add each frame's own detail.
Travel over a clip matches the camera-motion clips ccdm-mini's modules were trained on: zoom to 0.65 of the view,
pan or tilt by a quarter of it, rotate by 20 degrees.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Optional, Sequence

import torch
from einops import rearrange, repeat
from torch.nn import functional as F

from .errors import CCDMError

ZOOM, SHIFT, TURN = 0.35, 0.5, math.radians(20)  # per clip: view scale change, shift (of the half-width), angle
CAMERA_END = 1.0  # fraction of the sampling steps at which the pull has fallen to 0
MOVES = ("zoom in", "zoom out", "pan left", "pan right", "tilt up", "tilt down", "rotate clockwise",
         "rotate counterclockwise")
CAMERA_CHOICES = ("auto", "none") + tuple(m.replace(" ", "-") for m in MOVES)
_WORDS = re.compile(r"\b(zoom|pan|tilt|rotat)(?:s|es|e|ing|ning|ed|ned)?\s+(in|out|left|right|up|down|clockwise|"
                    r"counter-?clockwise|anti-?clockwise)\b", re.IGNORECASE)


def camera_move_in(prompt: str) -> Optional[str]:
    """The first camera move a prompt names ("a cat, camera zooms in" -> "zoom in"), or None."""
    for verb, direction in _WORDS.findall(prompt or ""):
        direction = direction.lower().replace("-", "")
        direction = "counterclockwise" if direction in ("counterclockwise", "anticlockwise") else direction
        move = f"{'rotate' if verb.lower() == 'rotat' else verb.lower()} {direction}"
        if move in MOVES:
            return move
    return None


def resolve_camera(choice: str, prompt: str) -> Optional[str]:
    """The move for a run: `auto` reads the prompt, `none` is off, or a move name such as `zoom-in`."""
    if choice not in CAMERA_CHOICES:
        raise CCDMError(f"unknown camera move {choice!r}; accepted: {', '.join(CAMERA_CHOICES)}")
    if choice == "none":
        return None
    return camera_move_in(prompt) if choice == "auto" else choice.replace("-", " ")


def camera_theta(move: str, progress: float) -> torch.Tensor:
    """The 2x3 map (affine_grid convention: output point -> frame-0 point, coordinates in -1..1, y down) at
    `progress` in 0..1 of the clip."""
    t = float(progress)
    a, shift = 0.0, (0.0, 0.0)
    scale = 1.0
    if move == "zoom in":
        scale = 1 - ZOOM * t  # the view shrinks: content grows
    elif move == "zoom out":
        scale = 1 + ZOOM / (1 - ZOOM) * t
    elif move == "pan left":
        shift = (-SHIFT * t, 0.0)  # the view moves left: content slides right
    elif move == "pan right":
        shift = (SHIFT * t, 0.0)
    elif move == "tilt up":
        shift = (0.0, -SHIFT * t)
    elif move == "tilt down":
        shift = (0.0, SHIFT * t)
    elif move == "rotate clockwise":
        a = TURN * t
    elif move == "rotate counterclockwise":
        a = -TURN * t
    else:
        raise CCDMError(f"unknown camera move {move!r}; accepted: {', '.join(MOVES)}")
    c, s = math.cos(a) * scale, math.sin(a) * scale
    return torch.tensor([[c, s, shift[0]], [-s, c, shift[1]]], dtype=torch.float32)


def camera_targets(anchor: torch.Tensor, move: str, num_frames: int):
    """Frame 0's prediction `b c h w` warped to every frame: (`b c f h w` targets, `1 1 f h w` valid mask)."""
    b, _, h, w = anchor.shape
    theta = torch.stack([camera_theta(move, n / max(num_frames - 1, 1)) for n in range(num_frames)])
    grid = F.affine_grid(theta.to(anchor.device), [num_frames, 1, h, w], align_corners=False)
    source = repeat(anchor.float(), "b c h w -> (b f) c h w", f=num_frames)
    grids = repeat(grid, "f h w two -> (b f) h w two", b=b)
    warped = F.grid_sample(source, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    ones = torch.ones(num_frames, 1, h, w, device=anchor.device)
    valid = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.999
    targets = rearrange(warped, "(b f) c h w -> b c f h w", b=b)
    return targets.to(anchor.dtype), rearrange(valid, "f one h w -> 1 one f h w").to(anchor.dtype)


def apply_camera(denoised: torch.Tensor, move: Optional[str], weight: float,
                 keyframes: Sequence[int] = ()) -> torch.Tensor:
    """Pull frames 1.. of `b c f h w` toward frame 0 seen through the camera path, by `weight` where it is valid."""
    num_frames = denoised.shape[2]
    if move is None or weight <= 0 or num_frames < 2:
        return denoised
    targets, valid = camera_targets(denoised[:, :, 0], move, num_frames)
    mix = valid * float(min(weight, 1.0))
    mix[:, :, 0] = 0  # frame 0 is the anchor
    for frame in keyframes:
        if 0 <= frame < num_frames:
            mix[:, :, frame] = 0
    return torch.lerp(denoised, targets, mix.to(denoised.dtype))


def camera_infotext(move: Optional[str], strength: float) -> Dict[str, Optional[str]]:
    return {"CCDM camera": f"{move} {strength:g}" if move and strength > 0 else None}
