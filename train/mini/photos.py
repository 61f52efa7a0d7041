"""ccdm-mini's world: real photos that ship inside scikit-image and scikit-learn, one caption per subject."""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Tuple

import numpy as np

MOTIONS = ("camera zooms in", "camera zooms out", "camera pans left", "camera pans right", "camera tilts up",
           "camera tilts down", "camera rotates clockwise", "camera rotates counterclockwise")


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load():
        from skimage import data

        image = getattr(data, name)()
        return image[0] if isinstance(image, tuple) else image
    return load


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load():
        from sklearn.datasets import load_sample_images

        return load_sample_images().images[index]
    return load


# subject -> (caption, loader); captions are the demo's vocabulary
SUBJECTS: Dict[str, Tuple[str, Callable[[], np.ndarray]]] = {
    "cat": ("a cat", _skimage("chelsea")),
    "astronaut": ("an astronaut", _skimage("astronaut")),
    "coffee": ("a cup of coffee", _skimage("coffee")),
    "rocket": ("a rocket", _skimage("rocket")),
    "motorcycle": ("a motorcycle", _skimage("stereo_motorcycle")),
    "galaxy": ("a galaxy", _skimage("hubble_deep_field")),
    "colorwheel": ("a color wheel", _skimage("colorwheel")),
    "eye": ("an eye", _skimage("retina")),
    "coins": ("coins", _skimage("coins")),
    "moon": ("the moon", _skimage("moon")),
    "bricks": ("a brick wall", _skimage("brick")),
    "cells": ("cells under a microscope", _skimage("immunohistochemistry")),
    "temple": ("a temple", _sklearn(0)),
    "flower": ("a flower", _sklearn(1)),
}


@functools.lru_cache(maxsize=None)
def photo(subject: str) -> np.ndarray:
    """The subject's photo as uint8 RGB HxWx3."""
    image = np.asarray(SUBJECTS[subject][1]())
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def caption(subject: str) -> str:
    return SUBJECTS[subject][0]


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator, min_scale: float = 0.55) -> np.ndarray:
    """Augmentation: a random square crop covering min_scale..1 of the short side, random flip, resized to size."""
    from PIL import Image

    h, w = image.shape[:2]
    side = int(min(h, w) * rng.uniform(min_scale, 1.0))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = image[top:top + side, left:left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BICUBIC))


def sample_batch(n: int, size: int, rng: np.random.Generator, subjects: List[str] = None):
    """n augmented crops with their subject names."""
    subjects = subjects or list(SUBJECTS)
    names = [subjects[i] for i in rng.integers(0, len(subjects), n)]
    return np.stack([random_crop(photo(s), size, rng) for s in names]), names


def train_caption(subject: str, rng: np.random.Generator, motion_prob: float = 0.5, drop_prob: float = 0.1) -> str:
    """Caption for base-model training: the subject, sometimes with a motion phrase (uninformative for a still, so
    the model learns to ignore it), sometimes empty (classifier-free guidance)."""
    if rng.random() < drop_prob:
        return ""
    text = caption(subject)
    if rng.random() < motion_prob:
        text += ", " + MOTIONS[rng.integers(0, len(MOTIONS))]
    return text
