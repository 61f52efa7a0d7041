"""Video to video in the WebUI: the source video of a run (uploaded in the UI, base64 in the API), read once at the
run's size, as img2img init images, its audio kept in the clips, and its temporary file removed after.

No gradio here and the WebUI only inside functions, so the reading and the errors are unit-tested.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, List, Optional, Tuple

from ..errors import CCDMError
from ..sources import DEFAULT_MAX_SOURCE_MB, SourceClip, SourceOptions, read_source, source_from_base64
from . import env
from .settings import FPS_RANGE, FRAMES_RANGE, CCDMSettings, CCDMSettingsError

SOURCE_FIELDS = ("source_video", "source_start", "source_stride", "frames", "source_fit")
MAX_MB_OPTION = "ccdm_source_max_mb"
_open: List["VideoSource"] = []  # sources of runs in flight: closed after the run, or before the next one


@dataclasses.dataclass
class VideoSource:
    """A run's source: the clip read at the run's size and the file it came from (removed by `close`)."""

    clip: SourceClip
    path: Path
    temp_dir: Optional[str] = None

    def close(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
        if self in _open:
            _open.remove(self)


def close_leftovers() -> int:
    """Remove the temporary files of every source still open (a run that failed before its end); how many."""
    leftovers = list(_open)
    for source in leftovers:
        source.close()
    return len(leftovers)


def upload_path(upload: Any) -> Optional[Path]:
    """The file of a gradio upload (a path, or a tempfile wrapper with `.name`), or None."""
    name = getattr(upload, "name", upload)
    return Path(name) if isinstance(name, (str, Path)) and str(name) else None


def _field_of(err: CCDMError) -> str:
    text = str(err)
    return next((name for name in SOURCE_FIELDS if text.startswith(name)), "source_video")


def _check_counts(settings: CCDMSettings) -> None:
    """frames 0 and fps 0 take the count and the rate from a source video: without one they are errors."""
    low, high = FRAMES_RANGE
    if settings.frames == 0:
        raise CCDMSettingsError("frames", f"0 takes the count from a source video; without one accepted {low}..{high}")
    if settings.fps == 0:
        raise CCDMSettingsError("fps", f"0 takes the rate from a source video; without one accepted "
                                f"{FPS_RANGE[0]:g}..{FPS_RANGE[1]:g}")


def max_mb() -> float:
    value = env.opt(MAX_MB_OPTION)
    return float(value) if isinstance(value, (int, float)) and value > 0 else float(DEFAULT_MAX_SOURCE_MB)


def read_run_source(settings: CCDMSettings, width: int, height: int,
                    upload: Any = None) -> Tuple[CCDMSettings, Optional[VideoSource]]:
    """The run's settings with frames/fps from the source (when they were left to it), and the source, or
    (settings, None) without one. Errors name their field (HTTP 422); nothing is left behind on error."""
    path = upload_path(upload)
    if path is None and not settings.source_video:
        _check_counts(settings)
        return settings, None
    temp_dir = None if path is not None else tempfile.mkdtemp(prefix="ccdm-source-")
    try:
        if path is None:
            path = source_from_base64(settings.source_video, temp_dir, max_mb())
        options = SourceOptions(source_start=settings.source_start, source_stride=settings.source_stride,
                                frames=settings.frames or None, source_fit=settings.source_fit)
        clip = read_source(path, width, height, options, max_mb=max_mb())
        resolved = dataclasses.replace(settings, frames=len(clip.frames), fps=settings.fps or round(clip.fps, 3))
    except CCDMError as err:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        if isinstance(err, CCDMSettingsError):
            raise
        raise CCDMSettingsError(_field_of(err), str(err)) from None
    source = VideoSource(clip, path, temp_dir)
    _open.append(source)
    return resolved, source


def init_images(source: VideoSource) -> List[Any]:
    """The source frames as PIL images, for img2img's `init_images` (one per frame of the batch)."""
    from PIL import Image

    return [Image.fromarray(frame) for frame in source.clip.frames]


def keep_audio(clips, settings: CCDMSettings, source: Optional[VideoSource]) -> List[Path]:
    """Copy the source's audio (the part the frames cover) into each clip's mp4/webm; the files that got it."""
    if source is None or not settings.keep_audio or not source.clip.has_audio:
        return []
    from ..audio import mux_source_audio

    done = []
    for clip in clips:
        for fmt, path in clip.videos.items():
            key = getattr(fmt, "value", fmt)
            if key in ("mp4", "webm") and mux_source_audio(path, source.path, source.clip.start_seconds,
                                                           source.clip.duration_seconds):
                done.append(Path(path))
    return done
