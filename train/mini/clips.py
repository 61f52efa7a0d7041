"""Camera-motion clips over ccdm-mini's photos (pan, tilt, zoom, rotate) for training its motion modules."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image

from ccdm_core.video import write_video

from .photos import MOTIONS, SUBJECTS, caption, photo


def _view(image: Image.Image, cx: float, cy: float, side: float, angle: float, size: int) -> np.ndarray:
    """A `size` x `size` view of a square of `side` px centred at (cx, cy), rotated by `angle` degrees."""
    box = image.rotate(angle, resample=Image.BICUBIC, center=(cx, cy)) if angle else image
    half = side / 2
    crop = box.crop((round(cx - half), round(cy - half), round(cx + half), round(cy + half)))
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


def camera_path(motion: str, frames: int, w: int, h: int, rng: np.random.Generator):
    """Per-frame (cx, cy, side, angle) of a camera moving over a w x h photo."""
    side0 = min(w, h) * rng.uniform(0.55, 0.7)
    travel = min(w, h) * rng.uniform(0.12, 0.2)
    cx, cy = w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.05, 0.05) * h
    t = np.linspace(-0.5, 0.5, frames)
    path = []
    for u in t:
        x, y, side, angle = cx, cy, side0, 0.0
        if motion.endswith("pans left"):
            x = cx - u * travel  # the view moves left: content slides right
        elif motion.endswith("pans right"):
            x = cx + u * travel
        elif motion.endswith("tilts up"):
            y = cy - u * travel
        elif motion.endswith("tilts down"):
            y = cy + u * travel
        elif motion.endswith("zooms in"):
            side = side0 * (1 - 0.35 * (u + 0.5))
        elif motion.endswith("zooms out"):
            side = side0 * (0.65 + 0.35 * (u + 0.5))
        elif motion.endswith("counterclockwise"):
            angle = 20 * u
        elif motion.endswith("clockwise"):
            angle = -20 * u
        path.append((x, y, side, angle))
    return path


def make_clip(subject: str, motion: str, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray(photo(subject))
    return np.stack([_view(image, *view, size) for view in camera_path(motion, frames, *image.size, rng)])


def write_clips(folder: Path, frames: int = 16, size: int = 64, variants: int = 2, seed: int = 0) -> List[dict]:
    """Every subject x motion x variant as an mp4 plus `captions.jsonl` ("a cat, camera zooms in")."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for subject in SUBJECTS:
        for motion in MOTIONS:
            for v in range(variants):
                name = f"{subject}-{motion.replace(' ', '_')}-{v}.mp4"
                write_video(make_clip(subject, motion, frames, size, rng), folder / name, 8)
                rows.append({"video": name, "caption": f"{caption(subject)}, {motion}"})
    (folder / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows
