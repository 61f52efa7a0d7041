"""The consistency report of a clip: `ccdm evaluate`'s numbers (warp error, flicker index, motion magnitude) with the
per-pair warp error drawn as a small plot, so a user sees how steady a clip is and where it jumps."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from PIL import Image, ImageDraw

REPORT_KEYS = ("frames", "fps", "width", "height", "warp_error", "flicker_index", "motion_magnitude_pct")
PLOT_SIZE = (480, 150)


def clip_report(frames: np.ndarray, fps: float, per_frame: bool = False) -> Dict[str, object]:
    """The report of decoded frames (uint8 `f h w 3`): the same numbers `ccdm evaluate` gives for the clip."""
    from .metrics import evaluate_frames

    start = time.perf_counter()
    metrics = evaluate_frames(frames, per_frame=True)
    report: Dict[str, object] = {key: metrics[key] for key in REPORT_KEYS if key in metrics}
    report["fps"] = round(float(fps), 4)
    pairs = metrics["per_frame"]["warp_error"]
    report["largest_jump"] = _largest_jump(pairs)
    if per_frame:
        report["per_frame"] = {k: metrics["per_frame"][k] for k in ("warp_error", "flicker", "motion_pct")}
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


def _largest_jump(pairs: List[Optional[float]]) -> Optional[Dict[str, object]]:
    """The pair that changes most: `{"frames": [t, t + 1], "warp_error": e}`; a pair whose flow matches no pixel
    (a cut: warp error null) comes first. None for a single frame."""
    cuts = [t for t, e in enumerate(pairs) if e is None or not math.isfinite(e)]
    if cuts:
        return {"frames": [cuts[0], cuts[0] + 1], "warp_error": None}
    if not pairs:
        return None
    error, t = max((e, t) for t, e in enumerate(pairs))
    return {"frames": [t, t + 1], "warp_error": round(error, 4)}


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report_summary(report: Dict[str, object]) -> str:
    """One line for people: count, rate, the three numbers and where the clip jumps most."""
    line = (f"{report['frames']} frames at {report['fps']:g} fps: warp error {_number(report['warp_error'])}, "
            f"flicker index {_number(report['flicker_index'])}, motion {_number(report['motion_magnitude_pct'])}%")
    jump = report.get("largest_jump")
    if jump:
        line += f"; largest change between frames {jump['frames'][0]} and {jump['frames'][1]}"
    return line


def report_plot(pair_errors: List[Optional[float]], size=PLOT_SIZE) -> np.ndarray:
    """The warp error of each frame pair as a line plot (uint8 `h w 3`); the largest pair is marked red."""
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    known = [e for e in pair_errors if e is not None and math.isfinite(e)]
    top = max(known, default=0.0) or 1.0
    values = [e if e is not None and math.isfinite(e) else top for e in pair_errors]  # a cut: drawn at the top
    margin = 28
    draw.line([(margin, 8), (margin, height - margin), (width - 8, height - margin)], fill=(120, 120, 120))
    draw.text((2, 2), f"{top:.1f}", fill=(80, 80, 80))
    draw.text((2, height - margin - 10), "0", fill=(80, 80, 80))
    draw.text((margin, height - margin + 6), "frame pair ->  (warp error per pair)", fill=(80, 80, 80))
    if values:
        step = (width - margin - 16) / max(len(values) - 1, 1)
        points = [(margin + 4 + i * step, height - margin - (height - margin - 12) * v / top)
                  for i, v in enumerate(values)]
        if len(points) > 1:
            draw.line(points, fill=(40, 90, 200), width=2)
        cuts = [i for i, e in enumerate(pair_errors) if e is None or not math.isfinite(e)]
        worst = cuts[0] if cuts else int(np.argmax(values))
        x, y = points[worst]
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=(210, 40, 40), width=2)
    return np.asarray(image)


def write_report(report: Dict[str, object], path) -> Path:
    """`report.json` beside a clip, written whole or not at all."""
    from .video import _atomic_write

    path = Path(path)
    _atomic_write(path, lambda tmp: tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8"))
    return path
