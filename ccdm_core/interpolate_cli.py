"""`ccdm interpolate IN --factor N [--out OUT] [--fps F] [--closed-loop] [--quiet]`: optical-flow frame interpolation.

Prints one JSON object {"path", "frames", "fps", "factor", "seconds"}. Everything that can be checked is
checked before any frame is computed, and the output is written atomically, so an error writes nothing.
The input's infotext is carried over with `CCDM interpolate: N` added to its parameter line.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Optional

from .errors import CCDMError
from .infotext import parse_infotext, quote

INFOTEXT_KEY = "CCDM interpolate"
CLI_FACTORS = (2, 8)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `interpolate` subcommand and its arguments to the `ccdm` subparsers."""
    p = subparsers.add_parser("interpolate", help="raise a video's frame rate by optical-flow frame interpolation "
                                                  "(no model weights); prints one JSON object")
    p.add_argument("video", metavar="IN", help="mp4, webm, gif, webp or png (APNG) file")
    p.add_argument("--factor", type=int, required=True,
                   help=f"frames out per frame in, {CLI_FACTORS[0]}..{CLI_FACTORS[1]} (2 doubles the frame rate)")
    p.add_argument("--out", default=None, help="output file; its extension picks the format "
                                               "(default: IN's name with -xN before the extension)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the input's fps x factor)")
    p.add_argument("--closed-loop", action="store_true",
                   help="the clip loops: also interpolate from the last frame back to the first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _factor(value) -> int:
    low, high = CLI_FACTORS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CCDMError(f"--factor must be a whole number from {low} to {high} (2 doubles the frame rate), "
                        f"got {value!r}")
    return value


def _output(args, factor: int) -> Path:
    """The --out path (default: beside IN, `-xN` added to the name), its format checked."""
    from .video import FORMATS

    src = Path(args.video)
    out = Path(args.out) if args.out else src.with_name(f"{src.stem}-x{factor}{src.suffix}")
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise CCDMError(f"--out {str(out)!r}: unknown output format {fmt or '(no extension)'!r}; "
                        f"accepted extensions: {', '.join('.' + f for f in FORMATS)}")
    return out


def _fps(value: Optional[float]) -> Optional[float]:
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise CCDMError(f"--fps must be a positive number of frames per second (e.g. 24), got {value!r}")
    return value


def _read_input(path: str):
    """(frames, fps, infotext) of IN; every failure is an error that names IN."""
    from .video import read_infotext, read_video

    if not Path(path).is_file():
        raise CCDMError(f"IN: input video not found: {path}")
    try:
        frames, fps = read_video(path)
        return frames, fps, read_infotext(path)
    except CCDMError as exc:
        raise CCDMError(f"IN: {exc}") from None


def with_parameter(infotext: Optional[str], key: str, value: object) -> Optional[str]:
    """The infotext with `key: value` on its parameter line (added, or replaced when the key is there)."""
    if not infotext or not infotext.strip():
        return None
    text = infotext.strip()
    _, _, params = parse_infotext(text)
    entry = f"{key}: {quote(value)}"
    if not params:  # no parameter line yet: it becomes the last line
        return f"{text}\n{entry}"
    head, _, last = text.rpartition("\n")
    if key in params:
        params[key] = value
        last = ", ".join(f"{k}: {quote(v)}" for k, v in params.items())
    else:
        last = f"{last.rstrip().rstrip(',')}, {entry}"
    return f"{head}\n{last}"


def _interpolated_total(infotext: Optional[str], factor: int) -> int:
    """The factor to record: an input that was interpolated already records the product."""
    if infotext:
        before = parse_infotext(infotext.strip())[2].get(INFOTEXT_KEY, "")
        if before.strip().isdigit() and int(before) > 0:
            return int(before) * factor
    return factor


def run(args) -> dict:
    """Interpolate one video file; the JSON object the `ccdm interpolate` command prints."""
    from .interpolate import interpolate_frames, interpolated_count
    from .video_stream import write_video_stream

    factor = _factor(args.factor)
    out, fps_out = _output(args, factor), _fps(args.fps)
    start = time.perf_counter()
    frames, fps, infotext = _read_input(args.video)
    fps_out = fps_out if fps_out is not None else fps * factor
    infotext = with_parameter(infotext, INFOTEXT_KEY, _interpolated_total(infotext, factor))
    written = [0]

    def progress(done: int, total: int) -> None:
        written[0] = done
        bar.update(1)

    with _progress_bar(interpolated_count(len(frames), factor, args.closed_loop), args.quiet) as bar:
        stream = interpolate_frames(frames, factor, args.closed_loop, progress=progress)
        write_video_stream(stream, out, fps_out, infotext=infotext)
    return {"path": str(out.resolve()), "frames": written[0], "fps": round(float(fps_out), 4), "factor": factor,
            "seconds": round(time.perf_counter() - start, 3)}


def _progress_bar(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc="interpolate", file=sys.stderr, disable=quiet, leave=False)
