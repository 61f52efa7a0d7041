"""Where and how a clip is written: `<root>/<date>/<NNNNN>-<seed>.<ext>` plus `.txt` infotext and optional frames."""
from __future__ import annotations

import dataclasses
import datetime
import os
import re
import secrets
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..video import save_frames_png, write_video
from .settings import VideoFormat

_NUMBERED = re.compile(r"^(\d{5,})-")


@dataclasses.dataclass(frozen=True)
class ClipFiles:
    """The files written for one clip."""

    stem: str
    videos: Dict[str, Path]  # format name -> path, in the requested order
    infotext: Optional[Path]
    frames: List[Path]

    def first(self) -> Optional[Path]:
        return next(iter(self.videos.values()), None)


def dated_folder(root: os.PathLike, today: Optional[datetime.date] = None) -> Path:
    """`root/YYYY-MM-DD` (the WebUI's default `[date]` sub-folder pattern)."""
    return Path(root) / (today or datetime.date.today()).isoformat()


def next_sequence_number(folder: os.PathLike) -> int:
    """One more than the highest `NNNNN-` prefix in the folder (0 for an empty or missing folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    numbers = [int(m.group(1)) for m in map(_NUMBERED.match, os.listdir(folder)) if m]
    return max(numbers, default=-1) + 1


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_clip(frames: np.ndarray, folder: os.PathLike, seed: int, formats: Sequence[VideoFormat], fps: float,
               infotext: str, save_frames: bool = False, interpolate: int = 1,
               closed_loop: bool = False) -> ClipFiles:
    """Write one clip in every format (atomically, infotext embedded where the format allows) and its `.txt`;
    with `interpolate` > 1 through optical-flow interpolation, streamed into the writer, at fps x interpolate."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{next_sequence_number(folder):05d}-{seed}"
    videos: Dict[str, Path] = {}
    for fmt in formats:
        name = VideoFormat(fmt).value
        videos[name] = _write_format(frames, folder / f"{stem}.{name}", fps, name, infotext, interpolate,
                                     closed_loop)
    text_path = folder / f"{stem}.txt"
    _write_text(text_path, infotext)
    frame_paths = save_frames_png(frames, folder / f"{stem}-frames", stem, infotext) if save_frames else []
    return ClipFiles(stem, videos, text_path, list(frame_paths))


def _write_format(frames: np.ndarray, path: Path, fps: float, fmt: str, infotext: str, interpolate: int,
                  closed_loop: bool) -> Path:
    if interpolate <= 1:
        return write_video(frames, path, fps, fmt, infotext)
    from ..interpolate import interpolate_frames
    from ..video_stream import write_video_stream

    from tqdm import tqdm

    from ..interpolate import interpolated_count

    total = interpolated_count(len(frames), interpolate, closed_loop)
    with tqdm(total=total, desc=f"CCDM interpolate x{interpolate}", unit="frame") as bar:
        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)
            _phase_text(f"CCDM: interpolating {path.name}: {done}/{total} frames")
        stream = interpolate_frames(iter(frames), interpolate, closed_loop, progress=progress, total=len(frames))
        return write_video_stream(stream, path, fps * interpolate, fmt, infotext)


def _phase_text(text: str) -> None:
    """The WebUI's progress text (shown under its progress bar) for a phase after sampling."""
    try:
        from modules import shared
    except ImportError:
        return
    shared.state.textinfo = text


def frames_from_unit_tensors(images: Sequence) -> np.ndarray:
    """WebUI images (PIL or `c h w` tensors in [0, 1]) -> uint8 frames (f, h, w, 3)."""
    out = []
    for image in images:
        if hasattr(image, "convert"):
            out.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        else:
            array = image.detach().float().clamp(0, 1).mul(255).round().byte().cpu().numpy()
            out.append(np.ascontiguousarray(np.moveaxis(array, 0, -1)))
    return np.stack(out)
