"""Subject classifier for ccdm-mini's quality benchmark: a stand-in for the CLIP score (no CLIP image weights here)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ccdm_core.tensorfile import read_tensors, write_safetensors

from .photos import SUBJECTS, sample_batch


class SubjectClassifier(nn.Module):
    """A small CNN over 64x64 RGB frames -> one logit per ccdm-mini subject."""

    def __init__(self, classes: int = len(SUBJECTS), width: int = 32):
        super().__init__()
        layers, ch = [], 3
        for mult in (1, 2, 4, 4):
            layers += [nn.Conv2d(ch, width * mult, 3, padding=1), nn.GroupNorm(8, width * mult), nn.SiLU(),
                       nn.MaxPool2d(2)]
            ch = width * mult
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: `b 3 h w` in [-1, 1]."""
        return self.head(self.features(pixels).mean(dim=(2, 3)))


def _pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.copy()).float().div(127.5).sub(1.0).permute(0, 3, 1, 2)


def train_classifier(out: Path, steps: int = 600, seed: int = 0, batch: int = 32) -> Dict[str, float]:
    """Train on augmented crops of the same photos; report accuracy on fresh crops."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 7)
    names: List[str] = list(SUBJECTS)
    model = SubjectClassifier()
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
    write_safetensors(model.state_dict(), out / "subject-classifier.safetensors",
                      {"ccdm.subjects": ",".join(names), "ccdm.accuracy": f"{accuracy:.4f}"})
    return {"classifier_steps": steps, "classifier_accuracy": accuracy,
            "classifier_seconds": time.perf_counter() - start}


def load_classifier(path: Path) -> SubjectClassifier:
    state, meta = read_tensors(path)
    model = SubjectClassifier(classes=len(meta.get("ccdm.subjects", "").split(",")))
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def subject_probability(model: SubjectClassifier, frames: np.ndarray, subject: str) -> float:
    """Mean probability (over frames) that the frames show `subject`; frames uint8 (f, h, w, 3)."""
    probs = model(_pixels(frames)).softmax(dim=1)[:, list(SUBJECTS).index(subject)]
    return float(probs.mean())
