"""Measure the LCM sampler on the shipped ccdm-mini model and motion module (a benchmark, not a test).

`python -m ccdm_core.bench_lcm [--prompts N] [--seeds S ...] [--frames F] [--json PATH]` prints a markdown table:
per arm (sampler, steps, CFG) the median wall time of a whole `generate` (sampling and VAE decode) over Euler a at
20 steps, the quality benchmark's clip metrics (`ccdm_core.quality`: optical-flow motion magnitude, warp error,
flicker index, subject fidelity) and a sharpness measure. All arms run on the same prompts and seeds, interleaved,
in one process.
ccdm-mini was never distilled for LCM, so the LCM arms show what the sampler does with an ordinary
epsilon-prediction model; two control arms (Euler a at 6 steps, LCM at the usual CFG) separate the step count and
the CFG from the sampler itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from .errors import CCDMError


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    sampler: str
    steps: int
    cfg_scale: float


BASELINE = Arm("euler_a 20 @ cfg 7.5", "euler_a", 20, 7.5)  # the model's usual settings (VideoSettings default CFG)
ARMS = (
    BASELINE,
    Arm("lcm 4 @ cfg 1.5", "lcm", 4, 1.5),
    Arm("lcm 6 @ cfg 1.5", "lcm", 6, 1.5),
    Arm("lcm 8 @ cfg 1.5", "lcm", 8, 1.5),
    Arm("control: euler_a 6 @ cfg 7.5", "euler_a", 6, 7.5),  # the same UNet budget as lcm 6, the usual sampler
    Arm("control: lcm 6 @ cfg 7.5", "lcm", 6, 7.5),  # lcm 6 at the usual CFG: the CFG's share of the difference
)
METRICS = ("motion_magnitude_pct", "warp_error", "flicker_index", "subject_fidelity_pct", "sharpness")


def sharpness(frames: np.ndarray) -> float:
    """Mean absolute luma difference between neighbouring pixels (0-255): lower is softer. Blur lowers warp error
    and flicker too, so it is reported beside them."""
    from .metrics import LUMA_WEIGHTS

    luma = (frames.astype(np.float32) @ LUMA_WEIGHTS).astype(np.float64)  # f h w
    return float((np.abs(np.diff(luma, axis=1)).mean() + np.abs(np.diff(luma, axis=2)).mean()) / 2)


def _score(frames, classifier, subjects, subject: str) -> Dict[str, float]:
    from .metrics import evaluate_frames
    from .quality import subject_probability

    m = evaluate_frames(frames)
    return {"motion_magnitude_pct": m["motion_magnitude_pct"], "warp_error": m["warp_error"],
            "flicker_index": m["flicker_index"],
            "subject_fidelity_pct": 100 * subject_probability(classifier, subjects, frames, subject),
            "sharpness": sharpness(frames)}


def _prompts(subjects: List[str], captions: Dict[str, str], count: int) -> List[tuple]:
    """(subject, prompt) for the first `count` subjects, each with a camera motion, as in `ccdm bench quality`."""
    from .quality import MOTIONS

    if not 1 <= count <= len(subjects):
        raise CCDMError(f"prompts must be an integer in 1..{len(subjects)}, got {count!r}")
    return [(s, f"{captions[s]}, {MOTIONS[i % len(MOTIONS)]}") for i, s in enumerate(subjects[:count])]


def _summary(rows: List[Dict[str, float]], seconds: List[float]) -> Dict[str, float]:
    out = {}
    for key in METRICS:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = round(statistics.mean(values), 4) if values else None
    out["seconds"] = round(statistics.median(seconds), 4)  # median: other jobs on a shared machine add outliers
    return out


def bench_lcm(model, motion, classifier_path, prompts: int = 8, seeds: Sequence[int] = (0, 1), frames: int = 16,
              arms: Sequence[Arm] = ARMS) -> Dict[str, object]:
    """Every arm on `prompts` subjects x `seeds`; means per arm and each arm's wall time over the baseline's."""
    from .pipeline import VideoSettings, generate
    from .quality import load_classifier

    # 1. Prompts, and one short warm-up run so the first timed arm does not pay for first-call setup.
    classifier, subjects, captions = load_classifier(classifier_path)
    cases = _prompts(subjects, captions, prompts)
    base = VideoSettings(cases[0][1], frames=frames, width=64, height=64, camera="none")
    generate(model, motion, dataclasses.replace(base, frames=2, steps=1, seed=0))
    # 2. The arms side by side: for each prompt and seed, every arm in turn.
    rows: Dict[str, List[Dict[str, float]]] = {arm.name: [] for arm in arms}
    times: Dict[str, List[float]] = {arm.name: [] for arm in arms}
    start = time.perf_counter()
    for subject, prompt in cases:
        for seed in seeds:
            for arm in arms:
                settings = dataclasses.replace(base, prompt=prompt, seed=seed, sampler=arm.sampler,
                                               steps=arm.steps, cfg_scale=arm.cfg_scale)
                result = generate(model, motion, settings)
                times[arm.name].append(result.seconds)
                rows[arm.name].append(_score(result.frames, classifier, subjects, subject))
    # 3. Means, and wall time relative to the baseline arm.
    table = {arm.name: _summary(rows[arm.name], times[arm.name]) for arm in arms}
    reference = table[arms[0].name]["seconds"]
    for values in table.values():
        values["time_ratio"] = round(values["seconds"] / reference, 3)
    return {"bench": "lcm", "model": getattr(model, "source", ""), "prompts": prompts, "seeds": list(seeds),
            "frames": frames, "size": "64x64", "arms": table,
            "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
            "seconds": round(time.perf_counter() - start, 1)}


def markdown_table(result: Dict[str, object]) -> str:
    lines = ["| arm | time vs euler_a 20 | s / clip | motion % | warp error | flicker index | subject fidelity % "
             "| sharpness |", "|---|---|---|---|---|---|---|---|"]
    for name, v in result["arms"].items():
        cells = [f"{v['time_ratio']:.3f}", f"{v['seconds']:.2f}"]
        cells += ["-" if v[k] is None else f"{v[k]:.2f}" for k in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{result['prompts']} prompts x {len(result['seeds'])} seeds, {result['frames']} frames at "
                 f"{result['size']}; {result['hardware']}; {result['seconds']} s in all.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] = ()) -> int:
    """Run the arms on the shipped ccdm-mini model, its default motion module and its subject classifier."""
    from .assets import MINI_CHECKPOINT, MINI_CLASSIFIER, MINI_MOTION_DEFAULT, shipped
    from .motion_io import load_motion_module
    from .sd.loader import load_sd_checkpoint

    parser = argparse.ArgumentParser(prog="python -m ccdm_core.bench_lcm", description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="subjects of the quality benchmark to use (1..14)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--json", default=None, help="also write the result as JSON to this path")
    args = parser.parse_args(list(argv))
    files = [MINI_CHECKPOINT, MINI_MOTION_DEFAULT, MINI_CLASSIFIER]
    missing = [f.name for f in files if shipped(f) is None]
    if missing:
        print(f"bench_lcm: error: needs the shipped ccdm-mini files; missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        result = bench_lcm(load_sd_checkpoint(MINI_CHECKPOINT), load_motion_module(MINI_MOTION_DEFAULT),
                           MINI_CLASSIFIER, prompts=args.prompts, seeds=args.seeds, frames=args.frames)
    except CCDMError as err:
        print(f"bench_lcm: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(markdown_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
