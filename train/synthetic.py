"""Small synthetic training videos (camera motion over a photo, or moving shapes) for tests and CPU demos."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from ccdm_core.video import write_video

MOTIONS = ("pans right", "pans left", "tilts down", "tilts up")
PAN_STEP = 3  # pixels per frame


def _photo(seed: int) -> np.ndarray:
    """A real photo shipped with scikit-image when it is installed, else a smooth random colour field."""
    try:
        from skimage import data

        return [data.astronaut, data.coffee, data.chelsea, data.rocket][seed % 4]()
    except ImportError:
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        return np.kron(small, np.ones((48, 48, 1), dtype=np.uint8))


def _fit_photo(image: np.ndarray, short_side: int) -> np.ndarray:
    """Resize so the shorter side is `short_side` pixels."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def camera_clip(image: np.ndarray, motion: str, frames: int, size: int, step: int) -> np.ndarray:
    """`frames` crops of `size` x `size` sliding `step` pixels per frame over `image` (a camera pan or tilt)."""
    height, width = image.shape[:2]
    travel = step * (frames - 1)
    if min(height, width) < size + travel:
        raise ValueError(f"image {width}x{height} too small for {frames} frames of {size} px moving {step} px")
    out = []
    for f in range(frames):
        dy = {"tilts down": f * step, "tilts up": travel - f * step}.get(motion, travel // 2)
        dx = {"pans right": f * step, "pans left": travel - f * step}.get(motion, travel // 2)
        out.append(image[dy: dy + size, dx: dx + size])
    return np.ascontiguousarray(np.stack(out))


def shapes_clip(frames: int, size: int, seed: int) -> np.ndarray:
    """A bright square moving in a straight line over a dark gradient."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 80, size, dtype=np.float32)
    clip = np.zeros((frames, size, size, 3), np.uint8)
    clip[:] = np.stack([ramp[None, :].repeat(size, 0)] * 3, axis=-1).astype(np.uint8)
    side = size // 4
    y, x = rng.integers(0, size - side, 2)
    vy, vx = rng.integers(-3, 4, 2)
    colour = rng.integers(128, 256, 3)
    for f in range(frames):
        top, left = int(np.clip(y + vy * f, 0, size - side)), int(np.clip(x + vx * f, 0, size - side))
        clip[f, top: top + side, left: left + side] = colour
    return clip


def write_synthetic_videos(folder: Path, count: int = 4, frames: int = 16, size: int = 96, fps: float = 8.0,
                           seed: int = 0) -> List[Path]:
    """`count` mp4 clips named by their caption ("camera pans right over a photo 0.mp4", ...)."""
    folder = Path(folder)
    paths = []
    for i in range(count):
        if i % 2 == 0:
            motion = MOTIONS[(i // 2) % len(MOTIONS)]
            photo = _fit_photo(_photo(seed + i), max(2 * size, size + PAN_STEP * (frames - 1) + 1))
            clip = camera_clip(photo, motion, frames, size, PAN_STEP)
            name = f"camera {motion} over a photo {i}"
        else:
            clip, name = shapes_clip(frames, size, seed + i), f"a square moving {i}"
        paths.append(write_video(clip, folder / f"{name.replace(' ', '_')}.mp4", fps))
    return paths
