"""Do ccdm-mini's clips follow the camera move the prompt names? (`python -m train.mini camera-check --out DIR`)

Ground truth comes from the clip maker the motion modules were trained on (clips.py): on the same photos, its
camera paths give the sign of the mean optical flow along each move's axis (`metrics.camera_flow`). For every move
x subject x seed, the shipped model and default motion module generate "<caption>, camera <verb>s <direction>"
with camera-move guidance off and on (everything else at the defaults); a clip follows the move when its flow along
that axis has the ground truth's sign. Subject fidelity (the benchmark's classifier) says whether the subject
stayed recognisable.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ccdm_core.camera import MOVES
from ccdm_core.metrics import camera_flow
from ccdm_core.pipeline import VideoSettings, generate
from ccdm_core.quality import load_classifier, subject_probability

from .clips import make_clip
from .photos import caption

SUBJECTS = ("flower", "temple", "coins")  # subjects ccdm-mini draws recognisably
SEEDS = (0, 1)


def prompt_motion(move: str) -> str:
    """"zoom in" -> "camera zooms in", the wording of the training captions."""
    verb, direction = move.split()
    return f"camera {verb}s {direction}"


def truth_sign(move: str, subjects: Sequence[str] = SUBJECTS, seed: int = 5) -> float:
    """The sign of the flow along the move's axis in the clip maker's own clips of these photos."""
    rng = np.random.default_rng(seed)
    axis = move.split()[0]
    return float(np.sign(np.mean([camera_flow(make_clip(s, prompt_motion(move), 16, 64, rng), axis)
                                  for s in subjects])))


def camera_check(model, motion, classifier_path, out: Path, moves: Sequence[str] = MOVES,
                 subjects: Sequence[str] = SUBJECTS, seeds: Sequence[int] = SEEDS, frames: int = 16,
                 steps: int = 20) -> Dict[str, object]:
    classifier, names, _ = load_classifier(classifier_path)
    rows: List[Dict[str, object]] = []
    start = time.perf_counter()
    for move in moves:
        sign, axis = truth_sign(move), move.split()[0]
        for subject in subjects:
            for seed in seeds:
                base = VideoSettings(f"{caption(subject)}, {prompt_motion(move)}", frames=frames, width=64,
                                     height=64, steps=steps, seed=seed)
                for camera in ("none", "auto"):
                    clip = generate(model, motion, dataclasses.replace(base, camera=camera)).frames
                    flow = camera_flow(clip, axis)
                    rows.append({"move": move, "subject": subject, "seed": seed, "camera": camera,
                                 "flow_along_axis": flow, "follows": bool(np.sign(flow) == sign),
                                 "subject_fidelity_pct": round(100 * subject_probability(classifier, names, clip,
                                                                                         subject), 2)})
    summary = {move: {camera: _summary([r for r in rows if r["move"] == move and r["camera"] == camera])
                      for camera in ("none", "auto")} for move in moves}
    result = {"check": "camera moves", "subjects": list(subjects), "seeds": list(seeds), "frames": frames,
              "steps": steps, "summary": summary, "rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "camera_check.json").write_text(json.dumps(result, indent=2))
    (out / "camera_check.md").write_text(markdown(summary))
    return result


def _summary(rows: List[Dict[str, object]]) -> Dict[str, float]:
    return {"follows": sum(r["follows"] for r in rows), "clips": len(rows),
            "flow_along_axis": round(statistics.mean(r["flow_along_axis"] for r in rows), 3),
            "subject_fidelity_pct": round(statistics.mean(r["subject_fidelity_pct"] for r in rows), 1)}


def markdown(summary: Dict[str, Dict[str, Dict[str, float]]]) -> str:
    lines = ["| move | follows, guidance off | follows, guidance on | flow along axis off / on | fidelity off / on |",
             "|---|---|---|---|---|"]
    total = {"none": [0, 0], "auto": [0, 0]}
    for move, arms in summary.items():
        off, on = arms["none"], arms["auto"]
        for camera in total:
            total[camera][0] += arms[camera]["follows"]
            total[camera][1] += arms[camera]["clips"]
        lines.append(f"| {move} | {off['follows']}/{off['clips']} | {on['follows']}/{on['clips']} | "
                     f"{off['flow_along_axis']:+.3f} / {on['flow_along_axis']:+.3f} | "
                     f"{off['subject_fidelity_pct']:.1f} / {on['subject_fidelity_pct']:.1f} |")
    lines.append(f"| all | {total['none'][0]}/{total['none'][1]} | {total['auto'][0]}/{total['auto'][1]} | | |")
    return "\n".join(lines) + "\n"
