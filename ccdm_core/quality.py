"""`ccdm bench quality` (the paper's tables 1-3 on ccdm-mini): four arms on the same prompts and seeds.

Arms: (a) the base model per frame (no motion), (b) motion module only (the AnimateDiff-style baseline),
(c) motion + fusion (CCDM), (d) CCDM with anchor-first. For each: optical-flow motion magnitude, warp error,
flicker index, SSIM/PSNR of every frame against the base model's still for the same prompt and seed, and subject
fidelity from a small classifier trained on the same photos (a stand-in for the CLIP score: no CLIP image weights
can be had here). The beta ablation (table 3) runs arm (c) with the linear and the scaled-linear module.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from .errors import CCDMError

MOTIONS = ("camera zooms in", "camera pans left", "camera tilts up", "camera rotates clockwise")


class SubjectClassifier(nn.Module):
    """A small CNN over 64x64 RGB frames -> one logit per subject."""

    def __init__(self, classes: int, width: int = 32):
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


def frames_to_pixels(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0).permute(0, 3, 1, 2)


def load_classifier(path) -> tuple:
    """(classifier, subjects, captions) from a safetensors file with `ccdm.subjects` / `ccdm.captions` metadata."""
    from .tensorfile import read_tensors

    state, meta = read_tensors(path)
    subjects = meta.get("ccdm.subjects", "").split(",")
    captions = json.loads(meta.get("ccdm.captions", "{}"))
    model = SubjectClassifier(classes=len(subjects))
    model.load_state_dict(state)
    return model.eval(), subjects, captions


@torch.no_grad()
def subject_probability(model: SubjectClassifier, subjects: List[str], frames: np.ndarray, subject: str) -> float:
    """Mean probability over frames that they show `subject`; frames uint8 (f, h, w, 3)."""
    return float(model(frames_to_pixels(frames)).softmax(dim=1)[:, subjects.index(subject)].mean())


def _arm_settings(base, arm: str):
    if arm == "a_base_per_frame":
        return dataclasses.replace(base, fusion_strength=0.0, cross_frame_strength=0.0)
    if arm == "b_motion_only":
        return dataclasses.replace(base, fusion_strength=0.0, cross_frame_strength=0.0)
    if arm == "c_ccdm":
        return base
    return dataclasses.replace(base, anchor_first=True)


def _score(frames: np.ndarray, still: np.ndarray, classifier, subjects, subject: str) -> Dict[str, float]:
    from .metrics import evaluate_frames

    m = evaluate_frames(frames, reference=still)
    return {"motion_magnitude_pct": m["motion_magnitude_pct"], "warp_error": m["warp_error"],
            "flicker_index": m["flicker_index"], "ssim_to_still": m.get("ssim_to_reference"),
            "psnr_to_still": m.get("psnr_to_reference"),
            "subject_fidelity_pct": 100 * subject_probability(classifier, subjects, frames, subject)}


def _mean(rows: List[Dict[str, float]]) -> Dict[str, Optional[float]]:
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = round(statistics.mean(values), 4) if values else None
    return out


def _videos(model, motions, primary, subject_prompt, seed, frames, steps):
    """The still and the six clips for one prompt and seed: the four arms (b-d with the `primary` motion module)
    and the beta ablation, arms b and c with the other module (table 3)."""
    from .pipeline import VideoSettings, generate

    # camera-move guidance (camera.py) is not one of the arms: it is off in all of them
    base = VideoSettings(subject_prompt, frames=frames, width=64, height=64, steps=steps, seed=seed, camera="none")
    still = generate(model, None, dataclasses.replace(base, frames=1, fusion_strength=0.0,
                                                      cross_frame_strength=0.0)).frames[0]
    clips = {"a_base_per_frame": generate(model, None, _arm_settings(base, "a_base_per_frame")).frames}
    for arm in ("b_motion_only", "c_ccdm", "d_ccdm_anchor_first"):
        clips[arm] = generate(model, motions[primary], _arm_settings(base, arm)).frames
    other = next(name for name in MODULES if name != primary)
    for arm in ("b_motion_only", "c_ccdm"):
        clips[f"{arm}_{other}_module"] = generate(model, motions[other], _arm_settings(base, arm)).frames
    return still, clips


MODULES = ("linear", "scaled_linear")  # the two shipped motion modules, by training beta schedule


def bench_quality(model, motions: Dict[str, object], classifier_path, out_dir: Path, seeds=(0, 1),
                  frames: int = 16, steps: int = 20, prompts: int = 8, primary: str = "linear") -> Dict[str, object]:
    """Run every arm on `prompts` subjects x `seeds` (arms b-d with the `primary` module); write quality.md and
    quality.json to out_dir."""
    if set(motions) != set(MODULES):
        raise CCDMError("bench quality needs the linear and the scaled-linear motion modules")
    if primary not in MODULES:
        raise CCDMError(f"unknown primary module {primary!r}; accepted: {', '.join(MODULES)}")
    classifier, subjects, captions = load_classifier(classifier_path)
    start = time.perf_counter()
    rows: Dict[str, List[Dict[str, float]]] = {}
    for i, subject in enumerate(subjects[:prompts]):
        prompt = f"{captions[subject]}, {MOTIONS[i % len(MOTIONS)]}"
        for seed in seeds:
            still, clips = _videos(model, motions, primary, prompt, seed, frames, steps)
            for arm, clip in clips.items():
                rows.setdefault(arm, []).append(_score(clip, still, classifier, subjects, subject))
    table = {arm: _mean(r) for arm, r in rows.items()}
    result = {"bench": "quality", "model": getattr(model, "source", ""), "prompts": prompts, "seeds": list(seeds),
              "frames": frames, "steps": steps, "primary_module": primary, "arms": table,
              "ratios": _ratios(table),
              "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
              "seconds": round(time.perf_counter() - start, 1),
              "note": "subject fidelity is a small classifier trained on the same photos, a stand-in for the "
                      "CLIP score (no CLIP image weights can be had here)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(result, indent=2))
    (out_dir / "quality.md").write_text(markdown_table(result))
    return result


def _ratios(table: Dict[str, Dict[str, float]]) -> Dict[str, float]:
    """The issue's targets as numbers: CCDM (c) over the motion-only baseline (b), and fidelity to the base (a)."""
    b, c, a = table["b_motion_only"], table["c_ccdm"], table["a_base_per_frame"]

    def ratio(key):
        return None if not b[key] else round(c[key] / b[key], 3)

    return {"warp_error_c_over_b": ratio("warp_error"), "flicker_index_c_over_b": ratio("flicker_index"),
            "motion_magnitude_c_over_b": ratio("motion_magnitude_pct"),
            "ssim_c_minus_b": round(c["ssim_to_still"] - b["ssim_to_still"], 3),
            "fidelity_a_minus_c": round(a["subject_fidelity_pct"] - c["subject_fidelity_pct"], 3)}


def markdown_table(result: Dict[str, object]) -> str:
    keys = ["motion_magnitude_pct", "warp_error", "flicker_index", "ssim_to_still", "psnr_to_still",
            "subject_fidelity_pct"]
    lines = ["| arm | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for arm, values in result["arms"].items():
        lines.append(f"| {arm} | " + " | ".join("-" if values[k] is None else f"{values[k]:.3f}" for k in keys) + " |")
    lines.append("")
    ratios = ", ".join(f"{k} {v}" for k, v in result.get("ratios", {}).items())
    lines.append(f"Arms b-d use the {result.get('primary_module', 'linear')} motion module; {ratios}.")
    lines.append(f"{result['prompts']} prompts x {len(result['seeds'])} seeds, {result['frames']} frames, "
                 f"{result['steps']} steps; {result['hardware']}; {result['seconds']} s. {result['note']}.")
    return "\n".join(lines) + "\n"
