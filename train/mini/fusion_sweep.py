"""Fusion settings on held-out prompts (`python -m train.mini sweep --out DIR`): not the benchmark's prompts.

`ccdm bench quality` uses the first 8 subjects with zoom in / pan left / tilt up / rotate clockwise and seeds 0
and 1. This sweep uses the other 6 subjects, the opposite motions and seeds 100 and 101, so fusion defaults can be
chosen without looking at the benchmark. For every (fusion strength, cross-frame strength, fusion end fraction) it
reports warp error and flicker index as ratios to the motion-only arm, SSIM to the still minus the motion-only
arm's, and subject fidelity of the base model per frame minus this setting's (as the benchmark's targets do).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List

from ccdm_core.pipeline import VideoSettings, generate
from ccdm_core.quality import _score, load_classifier

HELD_OUT_MOTIONS = ("camera zooms out", "camera pans right", "camera tilts down", "camera rotates counterclockwise")
HELD_OUT_SEEDS = (100, 101)
GRID = {"fusion_strength": (0.5, 0.75, 1.0), "cross_frame_strength": (0.5, 1.0), "end_fraction": (0.7, 1.0)}


@dataclasses.dataclass(frozen=True)
class _Settings(VideoSettings):
    """VideoSettings with the fusion end fraction (a FusionSettings field the product does not expose) settable."""

    end_fraction: float = 0.7

    def fusion(self):
        return dataclasses.replace(super().fusion(), end_fraction=self.end_fraction)


def _label(config: Dict[str, float]) -> str:
    return (f"fusion {config['fusion_strength']:g}, cross-frame {config['cross_frame_strength']:g}, "
            f"end {config['end_fraction']:g}")


def sweep(model, motion, classifier_path, out: Path, frames: int = 16, steps: int = 20) -> Dict[str, object]:
    classifier, subjects, captions = load_classifier(classifier_path)
    configs = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    rows: Dict[str, List[Dict[str, float]]] = {}
    start = time.perf_counter()
    for i, subject in enumerate(subjects[8:]):
        prompt = f"{captions[subject]}, {HELD_OUT_MOTIONS[i % len(HELD_OUT_MOTIONS)]}"
        for seed in HELD_OUT_SEEDS:
            base = _Settings(prompt, frames=frames, width=64, height=64, steps=steps, seed=seed, camera="none")
            off = dataclasses.replace(base, fusion_strength=0.0, cross_frame_strength=0.0)
            still = generate(model, None, dataclasses.replace(off, frames=1)).frames[0]
            arms = {"a_base_per_frame": (None, off), "b_motion_only": (motion, off)}
            arms.update({_label(c): (motion, dataclasses.replace(base, **c)) for c in configs})
            for name, (module, settings) in arms.items():
                clip = generate(model, module, settings).frames
                rows.setdefault(name, []).append(_score(clip, still, classifier, subjects, subject))
    table = {name: {k: statistics.mean(r[k] for r in v) for k in v[0]} for name, v in rows.items()}
    a, b = table["a_base_per_frame"], table["b_motion_only"]
    ratios = {_label(c): {"warp_error_over_b": table[_label(c)]["warp_error"] / b["warp_error"],
                          "flicker_index_over_b": table[_label(c)]["flicker_index"] / b["flicker_index"],
                          "motion_magnitude_over_b": table[_label(c)]["motion_magnitude_pct"] / b["motion_magnitude_pct"],
                          "ssim_minus_b": table[_label(c)]["ssim_to_still"] - b["ssim_to_still"],
                          "fidelity_a_minus_this": a["subject_fidelity_pct"] - table[_label(c)]["subject_fidelity_pct"]}
              for c in configs}
    result = {"sweep": "fusion settings, held-out prompts", "subjects": subjects[8:], "motions": HELD_OUT_MOTIONS,
              "seeds": HELD_OUT_SEEDS, "arms": table, "ratios": ratios,
              "seconds": round(time.perf_counter() - start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "fusion_sweep.json").write_text(json.dumps(result, indent=2))
    (out / "fusion_sweep.md").write_text(markdown(ratios))
    return result


def markdown(ratios: Dict[str, Dict[str, float]]) -> str:
    lines = ["| setting | warp / b | flicker / b | motion / b | SSIM - b | fidelity a - this |", "|---|---|---|---|---|---|"]
    for name, r in ratios.items():
        lines.append(f"| {name} | {r['warp_error_over_b']:.2f} | {r['flicker_index_over_b']:.2f} | "
                     f"{r['motion_magnitude_over_b']:.2f} | {r['ssim_minus_b']:+.3f} | {r['fidelity_a_minus_this']:+.1f} |")
    return "\n".join(lines) + "\n"
