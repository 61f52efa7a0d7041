"""Keeping the source's audio in video-to-video outputs: the span the clip covers, re-encoded into the mp4/webm."""

from __future__ import annotations

import functools
import math
import numbers
import os
import re
import subprocess
from pathlib import Path
from typing import List, Optional, Union

from ccdm_core.errors import CCDMError
from ccdm_core.sources import _has_audio, _is_pillow_source, _probe_log
from ccdm_core.video import _atomic_write, _ffmpeg_exe, _last_line

# Encoders in order of preference per container; ffmpeg's own "opus"/"vorbis" encoders are experimental.
AUDIO_ENCODERS = {"mp4": ("aac",), "webm": ("libopus", "libvorbis")}
_AUDIO_OPTIONS = {"aac": ["-b:a", "192k"], "libopus": ["-b:a", "128k"], "libvorbis": ["-q:a", "5"]}

PathLike = Union[str, "os.PathLike[str]"]


@functools.lru_cache(maxsize=None)
def _audio_encoders() -> frozenset:
    """The audio encoders the bundled ffmpeg was built with (the 'A' lines of -encoders)."""
    out = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-encoders"], stdin=subprocess.DEVNULL,
                         capture_output=True, check=False).stdout.decode("utf-8", "replace")
    return frozenset(m.group(1) for m in re.finditer(r"^\s*A\S*\s+(\S+)", out, re.MULTILINE))


def audio_encoder(fmt: str) -> Optional[str]:
    """The encoder used for fmt's audio, or None when the container is not supported or ffmpeg lacks one."""
    return next((name for name in AUDIO_ENCODERS.get(fmt, ()) if name in _audio_encoders()), None)


def _check_seconds(name: str, value: object, positive: bool) -> float:
    """A finite time in seconds (>= 0, or > 0 for a duration)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        accepted = "a positive number of seconds" if positive else "a number of seconds >= 0"
        raise CCDMError(f"{name} must be {accepted}, got {value!r}")
    return float(value)


def source_has_audio(source_path: PathLike) -> bool:
    """Whether ffmpeg sees an audio stream in the source (folders and GIF/PNG/WebP have none)."""
    path = Path(source_path)
    if not path.is_file():
        if path.exists():
            return False
        raise CCDMError(f"source_video not found: {path}")
    return not _is_pillow_source(path) and _has_audio(_probe_log(path))


def _mux_command(video: Path, source: Path, tmp: Path, fmt: str, encoder: str, start: float,
                 duration: float) -> List[str]:
    """Video stream and file metadata copied from the output, audio re-encoded from the source's span."""
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(video),
           "-ss", f"{start:.6f}", "-t", f"{duration:.6f}", "-i", str(source),
           "-map", "0:v", "-map", "1:a:0", "-map_metadata", "0", "-c:v", "copy",
           "-c:a", encoder, *_AUDIO_OPTIONS[encoder]]
    if fmt == "mp4":
        cmd += ["-movflags", "+faststart"]
    return cmd + ["-f", fmt, str(tmp)]


class _NoAudioInSpan(Exception):
    """The span lies past the end of the source's audio: ffmpeg wrote no audio stream, so nothing is replaced."""


def _run_mux(cmd: List[str], tmp: Path) -> None:
    """Run one mux; an ffmpeg failure is a CCDMError with ffmpeg's last line."""
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          check=False)
    if proc.returncode != 0:
        raise CCDMError(f"ffmpeg could not add the source audio: {_last_line(proc.stderr)}")
    if not _has_audio(_probe_log(tmp)):
        raise _NoAudioInSpan()


def mux_source_audio(video_path: PathLike, source_path: PathLike, start_seconds: float,
                     duration_seconds: float) -> bool:
    """Add the source's audio from start_seconds for duration_seconds to an mp4/webm, replacing it atomically.

    Returns False (file untouched) when the source has no audio (or none in that span), the output is not
    mp4/webm or the bundled ffmpeg has no encoder for it; the video stream and infotext comment are kept.
    """
    video = Path(video_path)
    start = _check_seconds("start_seconds", start_seconds, positive=False)
    duration = _check_seconds("duration_seconds", duration_seconds, positive=True)
    fmt = video.suffix.lower().lstrip(".")
    if fmt not in AUDIO_ENCODERS:
        return False
    if not video.is_file():
        raise CCDMError(f"video file not found: {video}")
    encoder = audio_encoder(fmt)
    if encoder is None or not source_has_audio(source_path):
        return False
    source = Path(source_path)
    try:
        _atomic_write(video, lambda tmp: _run_mux(_mux_command(video, source, tmp, fmt, encoder, start, duration),
                                                  tmp))
    except _NoAudioInSpan:
        return False
    return True
