"""Source videos for video-to-video: frames picked by start/stride/count, fitted to the output size, streamed."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import math
import numbers
import os
import re
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ccdm_core.errors import CCDMError
from ccdm_core.hashing import file_sha256
from ccdm_core.video import _atomic_write, _constant_rate, _ffmpeg_exe, _last_line, _open_image, _parse_stream

SOURCE_FITS = ("crop", "pad")
MAX_SOURCE_FRAMES = 1024
DEFAULT_MAX_SOURCE_MB = 500
DEFAULT_FOLDER_FPS = 8.0
MAX_SOURCE_STRIDE = 1000
MAX_SOURCE_SIDE = 16384
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FIELD = "source_video"

_MB = 1024 * 1024
_BASE64_ACCEPTED = "accepted: a data URL or base64 of a video file"
_SCALE_FLAGS = "bicubic+accurate_rnd"  # Pillow resizes with bicubic too
_PILLOW_ERRORS = (OSError, EOFError, SyntaxError, ValueError, Image.DecompressionBombError)
_PATH_LIKE = re.compile(r"^(/|\\|~|\.{1,2}[/\\]|file:|[A-Za-z]:[/\\])")

Progress = Callable[[int, int], None]
PathLike = Union[str, "os.PathLike[str]"]

# The ffmpeg process of the latest read_source call, kept so that tests can check it was ended and reaped.
_last_ffmpeg: Optional[subprocess.Popen] = None


# ---------------------------------------------------------------- options and result


def _check_int(name: str, value: object, low: int, high: Optional[int], accepted: str) -> int:
    """An int (numpy ints too, bools not) within low..high, else a CCDMError naming the field."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        raise CCDMError(f"{name} must be {accepted}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """Which source frames to take and how to fit them: every source_stride-th frame from source_start."""

    source_start: int = 0
    source_stride: int = 1
    frames: Optional[int] = None
    source_fit: str = "crop"
    max_frames: int = MAX_SOURCE_FRAMES

    def __post_init__(self) -> None:
        """Validate every field up front so that a bad request fails before ffmpeg starts."""
        fields = {
            "source_start": _check_int("source_start", self.source_start, 0, None, "an integer >= 0"),
            "source_stride": _check_int("source_stride", self.source_stride, 1, MAX_SOURCE_STRIDE,
                                        f"an integer in 1..{MAX_SOURCE_STRIDE}"),
            "max_frames": _check_int("max_frames", self.max_frames, 1, MAX_SOURCE_FRAMES,
                                     f"an integer in 1..{MAX_SOURCE_FRAMES}"),
        }
        if self.frames is not None:
            limit = fields["max_frames"]
            fields["frames"] = _check_int("frames", self.frames, 1, limit,
                                          f"None (all the source gives) or an integer in 1..{limit}")
        if self.source_fit not in SOURCE_FITS:
            raise CCDMError(f"source_fit must be one of {', '.join(SOURCE_FITS)}, got {self.source_fit!r}")
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def limit(self) -> int:
        """How many frames to decode at most: the request, or the cap."""
        return self.frames if self.frames is not None else self.max_frames


@dataclasses.dataclass(frozen=True)
class SourceClip:
    """Frames taken from a source video, fitted to the output size, with where in the source they came from."""

    frames: np.ndarray
    fps: float
    source_fps: float
    indices: Tuple[int, ...]
    source_size: Tuple[int, int]
    sha256: str
    has_audio: bool
    start_seconds: float
    duration_seconds: float


@dataclasses.dataclass
class _Decoded:
    """What one reader produced, before the clip's timing is derived."""

    frames: List[np.ndarray]
    indices: List[int]
    source_fps: float
    source_size: Tuple[int, int]
    has_audio: bool = False


# ---------------------------------------------------------------- geometry


def _rescale(a: int, b: int, c: int) -> int:
    """a * b / c rounded half up, as ffmpeg's av_rescale does for the scale filter's aspect ratio."""
    return (a * b + c // 2) // c


def _scaled_size(in_w: int, in_h: int, width: int, height: int, fit: str) -> Tuple[int, int]:
    """Size the source is resized to: covering width x height (crop) or fitting inside it (pad)."""
    pick = max if fit == "crop" else min
    return max(1, pick(_rescale(height, in_w, in_h), width)), max(1, pick(_rescale(width, in_h, in_w), height))


def _check_fit(width: int, height: int, fit: str) -> Tuple[int, int]:
    """Validate the output size and fit mode shared by fit_frame and read_source."""
    width = _check_int("width", width, 1, MAX_SOURCE_SIDE, f"an integer in 1..{MAX_SOURCE_SIDE}")
    height = _check_int("height", height, 1, MAX_SOURCE_SIDE, f"an integer in 1..{MAX_SOURCE_SIDE}")
    if fit not in SOURCE_FITS:
        raise CCDMError(f"source_fit must be one of {', '.join(SOURCE_FITS)}, got {fit!r}")
    return width, height


def fit_frame(frame: np.ndarray, width: int, height: int, fit: str = "crop") -> np.ndarray:
    """Resize one (h, w, 3) uint8 frame to width x height with the ffmpeg path's geometry: crop or letterbox."""
    width, height = _check_fit(width, height, fit)
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise CCDMError(f"frame must be a uint8 array (h, w, 3), got {array.dtype} {tuple(array.shape)}")
    in_h, in_w = array.shape[:2]
    new_w, new_h = _scaled_size(in_w, in_h, width, height, fit)
    if (new_w, new_h) != (in_w, in_h):
        array = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.Resampling.BICUBIC))
    if fit == "crop":
        x, y = (new_w - width) // 2, (new_h - height) // 2
        return np.ascontiguousarray(array[y:y + height, x:x + width])
    out = np.zeros((height, width, 3), np.uint8)
    x, y = (width - new_w) // 2, (height - new_h) // 2
    out[y:y + new_h, x:x + new_w] = array
    return out


def _fit_filter(width: int, height: int, fit: str) -> str:
    """fit_frame's geometry as ffmpeg filters: to rgb24 first (as read_video), then scale, crop or pad.

    Converting before scaling keeps the colours of read_video + fit_frame (scaling yuv420p directly
    interpolates the half-size chroma differently); offsets are truncated like fit_frame (crop would round).
    """
    mode = "increase" if fit == "crop" else "decrease"
    scale = f"format=rgb24,scale={width}:{height}:force_original_aspect_ratio={mode}:flags={_SCALE_FLAGS}"
    if fit == "crop":
        return f"{scale},crop={width}:{height}:trunc((iw-ow)/2):trunc((ih-oh)/2)"
    return f"{scale},pad={width}:{height}:trunc((ow-iw)/2):trunc((oh-ih)/2):black"


# ---------------------------------------------------------------- file types and uploads


def _sniff_extension(head: bytes) -> str:
    """A file extension from the magic bytes; '.bin' (ffmpeg probes the content itself) when unknown."""
    if head[4:8] == b"ftyp":
        return ".mov" if head[8:12] == b"qt  " else ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".webm" if b"webm" in head[:64] else ".mkv"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"RIFF") and head[8:12] in (b"WEBP", b"AVI "):
        return ".webp" if head[8:12] == b"WEBP" else ".avi"
    return ".bin"


def looks_like_path(text: str) -> bool:
    """Whether upload text looks like a server path (refused: a source is never read from the server's disk)."""
    return bool(_PATH_LIKE.match(text.strip()))


def _base64_payload(data: object, field: str) -> str:
    """The base64 text of a data URL or of plain base64, whitespace removed."""
    if not isinstance(data, str) or not data.strip():
        got = "an empty string" if isinstance(data, str) else type(data).__name__
        raise CCDMError(f"{field} must be a data URL or base64 text, got {got}; {_BASE64_ACCEPTED}")
    text = data.strip()
    if text[:5].lower() == "data:":
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header.lower():
            raise CCDMError(f"{field} is a data URL without ';base64,' data; {_BASE64_ACCEPTED}")
    elif looks_like_path(text):
        raise CCDMError(f"{field} looks like a server path, which is never read; {_BASE64_ACCEPTED}")
    return "".join(text.split())


def _decode_base64(data: object, field: str, max_mb: float) -> bytes:
    """Decoded upload bytes, refusing bad base64 and, before decoding, anything over max_mb."""
    payload = _base64_payload(data, field)
    size = len(payload) * 3 // 4 - payload[-2:].count("=")
    if size > max_mb * _MB:
        raise CCDMError(f"{field} is {size / _MB:.1f} MB; accepted: up to {max_mb:g} MB")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CCDMError(f"{field} is not valid base64 ({exc}); {_BASE64_ACCEPTED}") from None
    if not raw:
        raise CCDMError(f"{field} decodes to no bytes; {_BASE64_ACCEPTED}")
    return raw


def _check_max_mb(max_mb: object) -> float:
    """A positive finite size limit in MB."""
    if isinstance(max_mb, bool) or not isinstance(max_mb, numbers.Real) or not 0 < max_mb < math.inf:
        raise CCDMError(f"max_mb must be a positive number of megabytes, got {max_mb!r}")
    return float(max_mb)


def source_from_base64(data: str, folder: PathLike, max_mb: float = DEFAULT_MAX_SOURCE_MB,
                       field: str = FIELD) -> Path:
    """Save an uploaded video (data URL or base64; never a path) as a new file in folder; return its path."""
    raw = _decode_base64(data, field, _check_max_mb(max_mb))
    folder = Path(folder)
    path = folder / f"source-{secrets.token_hex(8)}{_sniff_extension(raw[:64])}"
    _atomic_write(path, lambda tmp: tmp.write_bytes(raw))
    return path


# ---------------------------------------------------------------- selection


def _available(total: int, options: SourceOptions) -> int:
    """How many frames source_start/source_stride pick from a source of total frames."""
    return max(0, -(-(total - options.source_start) // options.source_stride))


def _past_end(options: SourceOptions, total: Optional[int]) -> CCDMError:
    """The error for a source_start with no frame at or after it."""
    if total is None:
        has = "ffmpeg decoded no frame from there"
    elif total:
        has = f"the source has {total} frames (accepted: 0..{total - 1})"
    else:
        has = "the source has no frames"
    return CCDMError(f"source_start {options.source_start} is past the end of {FIELD}: {has}")


def _too_few(options: SourceOptions, available: int) -> CCDMError:
    """The error for an explicit frames count the source cannot give."""
    return CCDMError(f"frames {options.frames}: the source gives only {available} frames from source_start "
                     f"{options.source_start} with source_stride {options.source_stride}")


def _picked(total: int, options: SourceOptions) -> range:
    """The source indices to take from a source whose frame count is known."""
    available = _available(total, options)
    if available == 0:
        raise _past_end(options, total)
    if options.frames is not None and options.frames > available:
        raise _too_few(options, available)
    count = min(available, options.limit)
    return range(options.source_start, options.source_start + count * options.source_stride,
                 options.source_stride)


# ---------------------------------------------------------------- ffmpeg streams


def _select_filter(options: SourceOptions) -> Optional[str]:
    """Keep frames n >= start with (n - start) % stride == 0; None when every frame is kept."""
    start, stride = options.source_start, options.source_stride
    if start == 0 and stride == 1:
        return None
    return f"select=gte(n\\,{start})*not(mod(n-{start}\\,{stride}))"


@functools.lru_cache(maxsize=None)
def _sync_option() -> str:
    """ffmpeg >= 5.1 has -fps_mode (and 7+ dropped -vsync); older builds only know -vsync."""
    out = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-h", "long"], stdin=subprocess.DEVNULL,
                         capture_output=True, check=False).stdout.decode("utf-8", "replace")
    return "-fps_mode" if "-fps_mode" in out else "-vsync"


def _ffmpeg_command(path: Path, width: int, height: int, options: SourceOptions) -> List[str]:
    """Decode only the picked frames, scaled and cropped/padded by ffmpeg, as raw rgb24 on stdout."""
    chain = [f for f in (_select_filter(options), _fit_filter(width, height, options.source_fit)) if f]
    return [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-i", str(path), "-map", "0:V:0",
            "-an", "-sn", "-dn", "-vf", ",".join(chain), _sync_option(), "passthrough",
            "-frames:v", str(options.limit), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


def _read_exact(stream, size: int) -> Optional[bytearray]:
    """One whole frame from the pipe, or None at the end of the stream."""
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    if got == 0:
        return None
    if got < size:
        raise CCDMError(f"{FIELD}: ffmpeg's output ended inside a frame ({got} of {size} bytes)")
    return buf


def _finish(proc: subprocess.Popen, reader: threading.Thread, stop: bool) -> None:
    """End ffmpeg (terminated when we stopped early), reap it and collect its log: no zombie, no open pipe."""
    try:
        proc.stdout.close()
        if stop and proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        reader.join(timeout=10)
        proc.stderr.close()


def _stream_frames(cmd: List[str], width: int, height: int, limit: int,
                   progress: Optional[Progress]) -> Tuple[List[np.ndarray], int, str]:
    """Frames read from ffmpeg's stdout (stopping after limit) while a thread drains its stderr."""
    global _last_ffmpeg
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _last_ffmpeg = proc
    chunks: List[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    frames: List[np.ndarray] = []
    ended = False
    try:
        while len(frames) < limit:
            buf = _read_exact(proc.stdout, width * height * 3)
            if buf is None:
                ended = True
                break
            frames.append(np.frombuffer(buf, np.uint8).reshape(height, width, 3))
            if progress is not None:
                progress(len(frames), limit)
    finally:
        _finish(proc, reader, stop=not ended)
    return frames, (proc.returncode if ended else 0), b"".join(chunks).decode("utf-8", "replace")


def _input_section(log: str) -> str:
    """The stream lines of ffmpeg's 'Input #0' section (metadata lines left out: they may hold any text)."""
    section = log.split("Output #0", 1)[0].split("Stream mapping:", 1)[0]
    lines = [ln for ln in section.splitlines() if re.match(r"\s*Stream #0:\d+", ln)]
    return "\n".join(ln for ln in lines if "(attached pic)" not in ln)


def _has_audio(log: str) -> bool:
    """Whether ffmpeg's log lists an audio stream of the input."""
    return re.search(r"^\s*Stream #0:\d+\S*: Audio: ", _input_section(log), re.MULTILINE) is not None


def _exact_rate(fps: float) -> float:
    """ffmpeg prints rates with 2 decimals; a non-integer rate next to n * 1000/1001 (29.97...) is that."""
    ntsc = round(fps * 1.001) / 1.001
    return ntsc if fps != round(fps) and abs(fps - ntsc) < 0.006 else fps


def _probe_log(path: Path) -> str:
    """ffmpeg's description of a file (its stderr without any output); error if ffmpeg cannot open it."""
    proc = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    log = proc.stderr.decode("utf-8", "replace")
    if "Input #0" not in log:
        raise CCDMError(f"{FIELD}: cannot read {path.name}: {_last_line(proc.stderr)}")
    return log


def _count_frames(path: Path) -> Optional[int]:
    """The number of video packets (= frames) in the file, by a fast copy to nowhere; None if unknown."""
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:V:0", "-c", "copy",
           "-f", "null", "-"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    counts = re.findall(r"frame=\s*(\d+)", proc.stderr.decode("utf-8", "replace"))
    return int(counts[-1]) if proc.returncode == 0 and counts else None


def _read_with_ffmpeg(path: Path, width: int, height: int, options: SourceOptions,
                      progress: Optional[Progress]) -> _Decoded:
    """Decode only the picked frames with ffmpeg, never the whole file into memory."""
    cmd = _ffmpeg_command(path, width, height, options)
    frames, returncode, log = _stream_frames(cmd, width, height, options.limit, progress)
    if returncode != 0:
        if "Input #0" in log and not re.search(r": Video: ", _input_section(log)):
            raise CCDMError(f"{FIELD}: {path.name} has no video stream; accepted: a video file")
        raise CCDMError(f"{FIELD}: cannot read {path.name}: {_last_line(log.encode())}")
    if not frames:
        raise _past_end(options, _count_frames(path))
    if options.frames is not None and len(frames) < options.frames:
        raise _too_few(options, len(frames))
    try:
        in_w, in_h, fps = _parse_stream(_input_section(log), path)
    except CCDMError as exc:
        raise CCDMError(f"{FIELD}: {exc}") from None
    indices = [options.source_start + i * options.source_stride for i in range(len(frames))]
    return _Decoded(frames, indices, _exact_rate(fps), (in_w, in_h), _has_audio(log))


# ---------------------------------------------------------------- Pillow (gif, animated png, animated webp)


def _is_pillow_source(path: Path) -> bool:
    """GIF, PNG/APNG and WebP go through Pillow (exact frame delays; ffmpeg builds before 8 lack animated WebP)."""
    with open(path, "rb") as fh:
        return _sniff_extension(fh.read(64)) in (".gif", ".png", ".webp")


def _pillow_timeline(im: Image.Image) -> Tuple[np.ndarray, float]:
    """For each frame at the file's constant rate, the stored frame shown then (long delays repeat)."""
    stored = getattr(im, "n_frames", 1)
    durations = []
    for index in range(stored):
        im.seek(index)
        im.load()
        durations.append(float(im.info.get("duration") or 0))
    return _constant_rate([np.int64(i) for i in range(stored)], durations)


def _pillow_frames(im: Image.Image, stored: Sequence[int], width: int, height: int, fit: str,
                   progress: Optional[Progress]) -> List[np.ndarray]:
    """Seek forward through the needed stored frames, fitting each once (repeats share the fitted copy)."""
    frames: List[np.ndarray] = []
    last, fitted = -1, None
    for index in stored:
        if index != last:
            im.seek(index)
            fitted, last = fit_frame(np.asarray(im.convert("RGB")), width, height, fit), index
        frames.append(fitted.copy())
        if progress is not None:
            progress(len(frames), len(stored))
    return frames


def _pillow_call(path: Path, action: Callable[[], object]):
    """Run a Pillow step, turning Pillow's decode errors into a CCDMError naming the source."""
    try:
        return action()
    except CCDMError:
        raise
    except _PILLOW_ERRORS as exc:
        raise CCDMError(f"{FIELD}: cannot read {path.name}: {exc}") from None


def _read_with_pillow(path: Path, width: int, height: int, options: SourceOptions,
                      progress: Optional[Progress]) -> _Decoded:
    """Read a GIF/APNG/WebP one frame at a time at its constant rate, as read_video numbers the frames."""
    try:
        im = _open_image(path)
    except CCDMError as exc:
        raise CCDMError(f"{FIELD}: {exc}") from None
    with im:
        timeline, fps = _pillow_call(path, lambda: _pillow_timeline(im))
        picked = _picked(len(timeline), options)
        stored = [int(timeline[i]) for i in picked]
        frames = _pillow_call(path, lambda: _pillow_frames(im, stored, width, height, options.source_fit,
                                                            progress))
        return _Decoded(frames, list(picked), fps, im.size)


# ---------------------------------------------------------------- folders of numbered frames


def _natural_key(name: str) -> Tuple:
    """Sort key that orders the numbers in names by value: frame2 before frame10."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _folder_files(folder: Path) -> List[Path]:
    """The frame images of a folder in natural order (hidden files and other types left out)."""
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")]
    if not files:
        raise CCDMError(f"{FIELD} folder {folder} has no frame images; accepted: "
                        f"numbered {', '.join(e.lstrip('.') for e in FRAME_EXTENSIONS)} files")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _folder_sha256(files: Sequence[Path]) -> str:
    """sha256 over the sorted names and contents (each length-prefixed), the identity of a frame folder."""
    digest = hashlib.sha256()
    for path in files:
        name = path.name.encode("utf-8")
        digest.update(len(name).to_bytes(8, "big") + name + path.stat().st_size.to_bytes(8, "big"))
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_MB), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _load_frame_file(path: Path) -> np.ndarray:
    """One folder frame as RGB, its first frame if it is animated."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except _PILLOW_ERRORS as exc:
        raise CCDMError(f"{FIELD}: cannot read frame {path.name}: {exc}") from None


def _read_folder(files: Sequence[Path], width: int, height: int, options: SourceOptions, fps: float,
                 progress: Optional[Progress]) -> _Decoded:
    """Load only the picked frame files, fitting each."""
    picked = _picked(len(files), options)
    frames, size = [], (0, 0)
    for index in picked:
        frame = _load_frame_file(files[index])
        if not frames:
            size = (frame.shape[1], frame.shape[0])
        frames.append(fit_frame(frame, width, height, options.source_fit))
        if progress is not None:
            progress(len(frames), len(picked))
    return _Decoded(frames, list(picked), fps, size)


# ---------------------------------------------------------------- public API


def _check_size(size: int, max_mb: float) -> None:
    """Refuse sources over the size limit by name, before anything is decoded."""
    if size > max_mb * _MB:
        raise CCDMError(f"{FIELD} is {size / _MB:.1f} MB; accepted: up to {max_mb:g} MB "
                        "(setting: max source video size, in MB)")


def _check_folder_fps(fps: object) -> float:
    """The frame rate given to a folder of frames."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf:
        raise CCDMError(f"folder_fps must be a positive finite number (e.g. 8 or 12.5), got {fps!r}")
    return float(fps)


def _decode(path: Path, width: int, height: int, options: SourceOptions, progress: Optional[Progress],
            max_mb: float, folder_fps: float) -> Tuple[_Decoded, str]:
    """Dispatch to the folder, Pillow or ffmpeg reader after the existence and size checks; with the sha256."""
    if path.is_dir():
        files = _folder_files(path)
        _check_size(sum(p.stat().st_size for p in files), max_mb)
        return _read_folder(files, width, height, options, folder_fps, progress), _folder_sha256(files)
    if not path.is_file():
        raise CCDMError(f"{FIELD} not found: {path}; accepted: a video file or a folder of numbered frames")
    size = path.stat().st_size
    if size == 0:
        raise CCDMError(f"{FIELD} {path.name} is empty (0 bytes)")
    _check_size(size, max_mb)
    reader = _read_with_pillow if _is_pillow_source(path) else _read_with_ffmpeg
    return reader(path, width, height, options, progress), file_sha256(path)


def read_source(path: PathLike, width: int, height: int, options: SourceOptions = SourceOptions(),
                progress: Optional[Progress] = None, *, max_mb: float = DEFAULT_MAX_SOURCE_MB,
                folder_fps: float = DEFAULT_FOLDER_FPS) -> SourceClip:
    """Take the frames options pick from a video file or frame folder, fitted to width x height (streamed)."""
    if not isinstance(options, SourceOptions):
        raise CCDMError(f"options must be a SourceOptions, got {type(options).__name__}")
    width, height = _check_fit(width, height, options.source_fit)
    decoded, sha256 = _decode(Path(path), width, height, options, progress, _check_max_mb(max_mb),
                              _check_folder_fps(folder_fps))
    fps, stride = decoded.source_fps, options.source_stride
    return SourceClip(frames=np.stack(decoded.frames), fps=fps / stride, source_fps=fps,
                      indices=tuple(decoded.indices), source_size=decoded.source_size, sha256=sha256,
                      has_audio=decoded.has_audio, start_seconds=options.source_start / fps,
                      duration_seconds=len(decoded.frames) * stride / fps)
