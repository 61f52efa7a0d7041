"""Subject classifier for ccdm-mini's quality benchmark: a stand-in for the CLIP score (no CLIP image weights here)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from torch.nn import functional as F

from ccdm_core.quality import SubjectClassifier, frames_to_pixels
from ccdm_core.tensorfile import write_safetensors

from .photos import SUBJECTS, caption, sample_batch


def _pixels(images: np.ndarray) -> torch.Tensor:
    return frames_to_pixels(images)


def train_classifier(out: Path, steps: int = 600, seed: int = 0, batch: int = 32) -> Dict[str, float]:
    """Train on augmented crops of the same photos; report accuracy on fresh crops."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 7)
    names: List[str] = list(SUBJECTS)
    model = SubjectClassifier(classes=len(names))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    start = time.perf_counter()
    for _ in range(steps):
        images, subjects = sample_batch(batch, 64, rng)
        x = _pixels(images)
        x = x + 0.1 * torch.randn_like(x)  # generated frames are noisier than photos
        loss = F.cross_entropy(model(x), torch.tensor([names.index(s) for s in subjects]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    images, subjects = sample_batch(512, 64, np.random.default_rng(seed + 99))
    with torch.no_grad():
        pred = model(_pixels(images)).argmax(1).tolist()
    accuracy = float(np.mean([names[p] == s for p, s in zip(pred, subjects)]))
    save_classifier(model, out / "subject-classifier.safetensors", accuracy)
    return {"classifier_steps": steps, "classifier_accuracy": accuracy,
            "classifier_seconds": time.perf_counter() - start}


def save_classifier(model: SubjectClassifier, path: Path, accuracy: float) -> None:
    """Weights plus the subject names and captions the benchmark needs (`ccdm.subjects`, `ccdm.captions`)."""
    names = list(SUBJECTS)
    write_safetensors(model.state_dict(), path, {
        "ccdm.subjects": ",".join(names), "ccdm.captions": json.dumps({s: caption(s) for s in names}),
        "ccdm.accuracy": f"{accuracy:.4f}"})
