"""Weights the project trains and ships itself (ccdm-mini); see MODEL_CARD.md beside them."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

ASSETS = Path(__file__).resolve().parent
MINI_DIR = ASSETS / "ccdm-mini"
MINI_CHECKPOINT = MINI_DIR / "ccdm-mini.safetensors"
MINI_MOTION = MINI_DIR / "ccdm-mini-motion-linear.safetensors"
MINI_MOTION_SCALED = MINI_DIR / "ccdm-mini-motion-scaled-linear.safetensors"
MINI_CLASSIFIER = MINI_DIR / "subject-classifier.safetensors"
# The default module of `ccdm generate`: trained with the base model's own (scaled-linear) betas; the quality
# benchmark's table 3 measured it better than the linear one on every metric (MODEL_CARD.md).
MINI_MOTION_DEFAULT = MINI_MOTION_SCALED


def shipped(path: Path) -> Optional[Path]:
    """The path if that shipped file is present in this checkout, else None."""
    return path if path.is_file() else None
