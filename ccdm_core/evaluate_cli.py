"""`ccdm evaluate VIDEO [--reference IMAGE] [--json]`: motion, warp error, flicker, SSIM/PSNR as one JSON object.

The output is always one JSON object; --json adds the per-pair and per-frame lists under "per_frame".
Metrics (and cv2/skimage) are imported in run() so building the CLI parser stays cheap.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CCDMError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand and its arguments to the `ccdm` subparsers."""
    p = subparsers.add_parser("evaluate", help="video quality metrics (motion, warp error, flicker, SSIM/PSNR), "
                                                "printed as one JSON object")
    p.add_argument("video", help="mp4, webm, gif, webp or png (APNG) file")
    p.add_argument("--reference", default=None,
                   help="still image of the video's frame size for SSIM and PSNR (paper table 2)")
    p.add_argument("--json", dest="per_frame", action="store_true",
                   help="add per-frame detail under 'per_frame' (the output is JSON either way)")
    return p


def read_reference(path) -> np.ndarray:
    """A reference still as uint8 RGB (h, w, 3); alpha is dropped."""
    path = Path(path)
    if not path.is_file():
        raise CCDMError(f"reference image not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise CCDMError(f"cannot read reference image {path}: {exc}") from None


def run(args) -> dict:
    """Evaluate one video file; the JSON object the `ccdm evaluate` command prints."""
    from .metrics import evaluate_frames
    from .video import read_video

    frames, fps = read_video(args.video)
    reference = read_reference(args.reference) if args.reference is not None else None
    out = {"path": str(args.video), "fps": round(float(fps), 4)}
    out.update(evaluate_frames(frames, reference, per_frame=args.per_frame))
    return out
