"""The second-generation motion vocabulary for ccdm-mini's motion module (issue 17): clips a module can learn
temporal coherence from, made from the photos that ship in packages.

- `still`: one view of a photo, the same in every frame but for sensor-like noise (so stillness is learned);
  "a temple, still shot".
- `object`: a subject cut from one photo (an elliptical, feathered cut-out of its centre) moving left, right, up or
  down, turning or growing over another photo; "a cat moving left over a brick wall".
- `camera`: the first generation's camera moves (train/mini/clips.py); "a cat, camera zooms in".
- `combined`: an object moving while the camera pans; "a cat moving up over a brick wall, camera pans left".

Clips are 16 to 32 frames. Every clip is made from its own seeded generator, so a clip depends only on the seed
and its index (the set can be rebuilt, or extended, byte for byte).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .clips import make_clip
from .photos import MOTIONS, SUBJECTS, caption, photo

KINDS = ("still", "object", "camera", "combined")
OBJECT_MOTIONS = ("moving left", "moving right", "moving up", "moving down", "turning", "growing")
NOISE_STD = 2.0  # sensor-like noise of a still shot, in 0..255 levels
FRAME_RANGE = (16, 32)
_TRAVEL = 0.35  # how far an object travels over a clip, as a fraction of the frame
_DIRECTIONS = {"moving left": (-1, 0), "moving right": (1, 0), "moving up": (0, -1), "moving down": (0, 1)}


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """The photo's central square, resized to `size`."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return np.asarray(Image.fromarray(image[top:top + side, left:left + side]).resize((size, size), Image.BICUBIC))


def sensor_noise(frames: np.ndarray, rng: np.random.Generator, std: float = NOISE_STD) -> np.ndarray:
    """Independent Gaussian noise per frame and pixel, rounded back to uint8."""
    noisy = frames.astype(np.float32) + rng.normal(0.0, std, frames.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def still_clip(subject: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`frames` copies of one view of the subject's photo, each with its own sensor noise."""
    view = _square(photo(subject), size)
    return sensor_noise(np.repeat(view[None], frames, axis=0), rng)


def cutout(subject: str, side: int) -> Tuple[np.ndarray, np.ndarray]:
    """The subject's photo centre as an RGB patch `side` x `side` and its feathered elliptical alpha (0..1)."""
    patch = _square(photo(subject), side).astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    r = np.sqrt(((xx + 0.5) / side - 0.5) ** 2 + ((yy + 0.5) / side - 0.5) ** 2) * 2  # 0 centre, 1 edge
    alpha = np.clip((1.0 - r) / 0.15, 0.0, 1.0)  # feathered over the outer 15 %
    return patch, alpha


def object_path(motion: str, frames: int, size: int) -> List[Tuple[float, float, float, float]]:
    """Per frame (cx, cy, scale, angle) of the object: a straight move, a turn or a growth over the clip."""
    t = np.linspace(-0.5, 0.5, frames)
    dx, dy = _DIRECTIONS.get(motion, (0, 0))
    path = []
    for u in t:
        cx, cy = size / 2 + dx * u * _TRAVEL * size, size / 2 + dy * u * _TRAVEL * size
        scale = 1.0 + (0.5 * (u + 0.5) if motion == "growing" else 0.0)
        angle = -60.0 * u if motion == "turning" else 0.0
        path.append((cx, cy, scale, angle))
    return path


def _paste(background: np.ndarray, patch: np.ndarray, alpha: np.ndarray, cx: float, cy: float, scale: float,
           angle: float) -> np.ndarray:
    """`patch` scaled, rotated and alpha-blended onto `background` (float32 HxWx3) centred at (cx, cy)."""
    side = max(2, int(round(patch.shape[0] * scale)))
    rgba = np.concatenate([patch, alpha[..., None] * 255.0], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA").resize((side, side), Image.BICUBIC)
    if angle:
        image = image.rotate(angle, resample=Image.BICUBIC)
    layer = Image.new("RGBA", (background.shape[1], background.shape[0]), (0, 0, 0, 0))
    layer.paste(image, (int(round(cx - side / 2)), int(round(cy - side / 2))))
    fg = np.asarray(layer).astype(np.float32)
    a = fg[..., 3:] / 255.0
    return background * (1 - a) + fg[..., :3] * a


def object_clip(subject: str, background: str, motion: str, frames: int, size: int,
                camera: str = "", rng: np.random.Generator = None) -> np.ndarray:
    """The subject's cut-out making `motion` over the background photo (the camera still, or making `camera`)."""
    patch, alpha = cutout(subject, size // 2)
    if camera:
        backgrounds = make_clip(background, camera, frames, size, rng).astype(np.float32)
    else:
        backgrounds = np.repeat(_square(photo(background), size)[None].astype(np.float32), frames, axis=0)
    out = [_paste(bg, patch, alpha, *pose) for bg, pose in zip(backgrounds, object_path(motion, frames, size))]
    return np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8)


def clip_spec(index: int, seed: int = 0) -> Dict[str, object]:
    """What clip `index` of the set is: kind, subject, background, motions, frame count (from its own generator)."""
    rng = np.random.default_rng([seed, index])
    subjects = list(SUBJECTS)
    kind = KINDS[index % len(KINDS)]
    subject = subjects[int(rng.integers(len(subjects)))]
    background = subjects[int(rng.integers(len(subjects)))]
    while background == subject:
        background = subjects[int(rng.integers(len(subjects)))]
    return {"kind": kind, "subject": subject, "background": background,
            "object_motion": OBJECT_MOTIONS[int(rng.integers(len(OBJECT_MOTIONS)))],
            "camera": MOTIONS[int(rng.integers(len(MOTIONS)))],
            "frames": int(rng.integers(FRAME_RANGE[0], FRAME_RANGE[1] + 1)), "clip_seed": [seed, index, 1]}


def clip_caption(spec: Dict[str, object]) -> str:
    """The caption naming what moves: "a temple, still shot", "a cat moving left over a brick wall", ..."""
    subject, kind = caption(spec["subject"]), spec["kind"]
    if kind == "still":
        return f"{subject}, still shot"
    if kind == "camera":
        return f"{subject}, {spec['camera']}"
    text = f"{subject} {spec['object_motion']} over {caption(spec['background'])}"
    return text + (f", {spec['camera']}" if kind == "combined" else "")


def make_motion_clip(spec: Dict[str, object], size: int = 64) -> np.ndarray:
    """The uint8 `f h w 3` frames of one clip spec."""
    rng = np.random.default_rng(spec["clip_seed"])
    frames, kind = int(spec["frames"]), spec["kind"]
    if kind == "still":
        return still_clip(spec["subject"], frames, size, rng)
    if kind == "camera":
        return make_clip(spec["subject"], spec["camera"], frames, size, rng)
    camera = spec["camera"] if kind == "combined" else ""
    return object_clip(spec["subject"], spec["background"], spec["object_motion"], frames, size, camera, rng)


def write_motion_clips(folder: Path, count: int = 224, size: int = 64, seed: int = 0,
                       kinds: Sequence[str] = KINDS) -> List[dict]:
    """`count` clips (kinds in turn) as mp4 files plus `captions.jsonl` ({"video", "caption", "kind", "frames"})."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown clip kinds {unknown}; accepted: {', '.join(KINDS)}")
    from ccdm_core.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        spec = clip_spec(index, seed)
        if spec["kind"] not in kinds:
            continue
        name = f"{index:04d}-{spec['kind']}-{spec['subject']}.mp4"
        write_video(make_motion_clip(spec, size), folder / name, 8)
        rows.append({"video": name, "caption": clip_caption(spec), "kind": spec["kind"], "frames": spec["frames"]})
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


__all__ = ["KINDS", "OBJECT_MOTIONS", "clip_caption", "clip_spec", "cutout", "make_motion_clip",
           "object_clip", "object_path", "sensor_noise", "still_clip", "write_motion_clips"]
