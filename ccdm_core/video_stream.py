"""Write a clip frame by frame: mp4/webm are piped into ffmpeg as frames arrive, so long clips never sit in memory.

The encoders, their options, the BT.709 tagging, even-size padding, infotext and the atomic write are those of
video.write_video (its helpers are imported), so both write the same file for the same frames. gif, webp and
png (APNG) are written by Pillow in one go: their frames are collected and handed to video.write_video.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import video
from .errors import CCDMError


def _checked(frames: Iterable) -> Iterator[np.ndarray]:
    """The frames, checked one by one against the first; an empty stream is an error."""
    like = None
    for index, frame in enumerate(frames):
        array = video.check_frame(frame, like, index)
        like = array.shape
        yield array
    if like is None:
        raise CCDMError("frames is empty; need at least 1 frame of shape (h, w, 3)")


def _ffmpeg_command(encoder: str, fmt: str, size: Tuple[int, int], fps: float, infotext: Optional[str],
                    out: Path) -> List[str]:
    """video._write_ffmpeg's command line, reading raw RGB frames of `size` (w, h) from stdin."""
    rate = max(Fraction(fps).limit_denominator(1001), Fraction(1, 1001))
    cmd = [video._ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{size[0]}x{size[1]}", "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
           "-an", "-c:v", encoder, "-pix_fmt", "yuv420p", *video._BT709, *video._ENCODER_OPTIONS[encoder]]
    if infotext is not None:
        cmd += ["-metadata", f"comment={infotext}"]
    return cmd + ["-f", fmt, str(out)]


def _padded(frame: np.ndarray, fmt: str) -> np.ndarray:
    return video._pad_even(frame[None])[0] if fmt == "mp4" else frame


def _feed(proc: subprocess.Popen, first: np.ndarray, rest: Iterator[np.ndarray], fmt: str) -> None:
    """Write frames to ffmpeg's stdin until the stream ends or ffmpeg stops reading."""
    try:
        proc.stdin.write(memoryview(_padded(first, fmt)).cast("B"))
        for frame in rest:
            proc.stdin.write(memoryview(_padded(frame, fmt)).cast("B"))
    except BrokenPipeError:
        pass  # ffmpeg exited early; its return code and log say why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


def _pipe_ffmpeg(frames: Iterator[np.ndarray], tmp: Path, fps: float, fmt: str, infotext: Optional[str]) -> None:
    """Encode the frame stream into `tmp` with the encoder video.write_video would pick."""
    encoder = video._pick_encoder(fmt)
    first = next(frames)
    h, w = _padded(first, fmt).shape[:2]
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty ffmpeg cannot block the writer
        proc = subprocess.Popen(_ffmpeg_command(encoder, fmt, (w, h), fps, infotext, tmp),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _feed(proc, first, frames, fmt)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        log.seek(0)
        if code != 0:
            raise CCDMError(f"ffmpeg ({encoder}) failed: {video._last_line(log.read())}")


def write_video_stream(frames: Iterable[np.ndarray], path: Union[str, os.PathLike], fps: float,
                       fmt: Optional[str] = None, infotext: Optional[str] = None) -> Path:
    """video.write_video for a stream of frames: mp4/webm piped to ffmpeg frame by frame, atomically."""
    path = Path(path)
    fmt = video._resolve_format(path, fmt)
    fps = video._check_fps(fps)
    infotext = video._check_infotext(infotext)
    if fmt not in video._ENCODERS:
        return video.write_video(list(frames), path, fps, fmt, infotext)
    stream = _checked(frames)
    try:
        video._atomic_write(path, lambda tmp: _pipe_ffmpeg(stream, tmp, fps, fmt, infotext))
    except CCDMError as exc:
        raise CCDMError(f"cannot write {path}: {exc}") from None
    return path
