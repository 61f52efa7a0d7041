"""FreeInit on held-out prompts (`python -m train.mini freeinit-sweep --out DIR`): the fusion sweep's prompts and
seeds (not the benchmark's), with CCDM at its fusion defaults and FreeInit off, 2 and 3 iterations, against the
base model per frame (a) and the motion module alone (b). Reports warp error, flicker index and motion magnitude
as ratios to (b), and subject fidelity of (a) minus each arm's, as the benchmark's targets do."""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List

from ccdm_core.pipeline import VideoSettings, generate
from ccdm_core.quality import _score, load_classifier

from .fusion_sweep import HELD_OUT_MOTIONS, HELD_OUT_SEEDS

ITERATIONS = (1, 2, 3)
RATIO_KEYS = ("warp_error", "flicker_index", "motion_magnitude_pct")


def _arms(motion, base: VideoSettings) -> Dict[str, tuple]:
    off = dataclasses.replace(base, fusion_strength=0.0, cross_frame_strength=0.0)
    arms = {"a_base_per_frame": (None, off), "b_motion_only": (motion, off)}
    arms.update({f"c_ccdm_freeinit_{n}": (motion, dataclasses.replace(base, freeinit_iterations=n))
                 for n in ITERATIONS})
    return arms


def _ratios(table: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    a, b = table["a_base_per_frame"], table["b_motion_only"]
    return {name: {**{f"{k}_over_b": round(row[k] / b[k], 4) for k in RATIO_KEYS},
                   "fidelity_a_minus_this": round(a["subject_fidelity_pct"] - row["subject_fidelity_pct"], 2)}
            for name, row in table.items() if name.startswith("c_")}


def sweep(model, motion, classifier_path, out: Path, frames: int = 16, steps: int = 20) -> Dict[str, object]:
    classifier, subjects, captions = load_classifier(classifier_path)
    rows: Dict[str, List[Dict[str, float]]] = {}
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    for i, subject in enumerate(subjects[8:]):
        prompt = f"{captions[subject]}, {HELD_OUT_MOTIONS[i % len(HELD_OUT_MOTIONS)]}"
        for seed in HELD_OUT_SEEDS:
            base = VideoSettings(prompt, frames=frames, width=64, height=64, steps=steps, seed=seed, camera="none")
            still = generate(model, None, dataclasses.replace(base, frames=1, fusion_strength=0.0,
                                                              cross_frame_strength=0.0)).frames[0]
            for name, (module, settings) in _arms(motion, base).items():
                result = generate(model, module, settings)
                seconds[name] = seconds.get(name, 0.0) + result.seconds
                rows.setdefault(name, []).append(_score(result.frames, still, classifier, subjects, subject))
    table = {name: {k: statistics.mean(r[k] for r in v) for k in v[0]} for name, v in rows.items()}
    result = {"sweep": "FreeInit iterations, held-out prompts", "subjects": subjects[8:], "seeds": HELD_OUT_SEEDS,
              "arms": table, "ratios": _ratios(table), "arm_seconds": {k: round(v, 1) for k, v in seconds.items()},
              "seconds": round(time.perf_counter() - start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "freeinit_sweep.json").write_text(json.dumps(result, indent=2))
    (out / "freeinit_sweep.md").write_text(markdown(result))
    return result


def markdown(result: Dict[str, object]) -> str:
    lines = ["| arm | warp error | flicker index | motion % | subject fidelity % | seconds |", "|---|---|---|---|---|---|"]
    for name, row in result["arms"].items():
        lines.append(f"| {name} | {row['warp_error']:.2f} | {row['flicker_index']:.2f} | "
                     f"{row['motion_magnitude_pct']:.2f} | {row['subject_fidelity_pct']:.1f} | "
                     f"{result['arm_seconds'][name]:.0f} |")
    lines += ["", "| arm | warp / b | flicker / b | motion / b | fidelity a - this |", "|---|---|---|---|---|"]
    for name, r in result["ratios"].items():
        lines.append(f"| {name} | {r['warp_error_over_b']:.3f} | {r['flicker_index_over_b']:.3f} | "
                     f"{r['motion_magnitude_pct_over_b']:.3f} | {r['fidelity_a_minus_this']:+.1f} |")
    return "\n".join(lines) + "\n"
