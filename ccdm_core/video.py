"""Video files for decoded clips: mp4/webm via the bundled ffmpeg, gif/webp/APNG via Pillow, with infotext."""

from __future__ import annotations

import functools
import math
import numbers
import os
import re
import secrets
import struct
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
from einops import rearrange
from PIL import Image, PngImagePlugin

from ccdm_core.errors import CCDMError

FORMATS = ("mp4", "gif", "webm", "webp", "png")

INFOTEXT_KEY = "parameters"  # the WebUI's PNG text key for generation parameters
STILL_FPS = 10.0  # reported for files that carry no frame timing (browsers' default GIF delay: 100 ms)

_PILLOW_FORMATS = {"gif": "GIF", "webp": "WEBP", "png": "PNG"}
_DURATION_UNIT_MS = {"gif": 10, "webp": 1, "png": 1}  # GIF delays are stored in centiseconds
_ENCODERS = {"mp4": ("libx264",), "webm": ("libvpx-vp9", "libvpx")}
_ENCODER_OPTIONS = {
    "libx264": ["-preset", "medium", "-crf", "18", "-movflags", "+faststart"],
    "libvpx-vp9": ["-crf", "30", "-b:v", "0", "-deadline", "good", "-cpu-used", "4", "-row-mt", "1"],
    "libvpx": ["-crf", "10", "-b:v", "4M", "-deadline", "good", "-cpu-used", "4"],
}
# Convert and tag as BT.709 so that players and ffmpeg's own decoder agree on the colours.
_BT709 = ["-vf", "scale=out_color_matrix=bt709:out_range=tv", "-colorspace", "bt709",
          "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_UNICODE_PREFIX, _ASCII_PREFIX = b"UNICODE\0", b"ASCII\0\0\0"

FramesLike = Union[np.ndarray, Sequence[Union[np.ndarray, Image.Image]]]


# ---------------------------------------------------------------- validation


def _as_frames(frames: FramesLike) -> np.ndarray:
    """Stack and check frames into a C-contiguous uint8 array of shape (f, h, w, 3)."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise CCDMError("frames is empty; need at least 1 frame of shape (h, w, 3)")
        arrays = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in frames]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise CCDMError(f"frames have different shapes {sorted(shapes)}; all frames must share one (h, w, 3)")
        dtypes = {a.dtype for a in arrays}
        if dtypes != {np.dtype(np.uint8)}:
            raise CCDMError(f"frames must be uint8 arrays or PIL images, got dtype {sorted(map(str, dtypes))}")
        frames = np.stack(arrays)
    if not isinstance(frames, np.ndarray):
        raise CCDMError(f"frames must be a uint8 array (f, h, w, 3) or a list of frames, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise CCDMError(f"frames must be uint8 (0..255), got {frames.dtype}; use tensor_to_frames for [-1, 1] tensors")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise CCDMError(f"frames must have shape (f, h, w, 3) with RGB last, got {tuple(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise CCDMError(f"frames must have f >= 1, h >= 1 and w >= 1, got shape {tuple(frames.shape)}")
    return np.ascontiguousarray(frames)


def check_frame(frame, like: Optional[Tuple[int, ...]] = None, index: int = 0) -> np.ndarray:
    """One frame as a C-contiguous uint8 (h, w, 3) array (PIL images converted), of shape `like` when given: the
    per-frame check of the streaming writer and of interpolation."""
    array = np.asarray(frame.convert("RGB")) if isinstance(frame, Image.Image) else np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3 or min(array.shape[:2]) < 1:
        raise CCDMError(f"frame {index} must be a uint8 RGB array of shape (h, w, 3) or a PIL image, "
                        f"got {array.dtype} {tuple(array.shape)}")
    if like is not None and array.shape != tuple(like):
        raise CCDMError(f"frame {index} has shape {tuple(array.shape)} but frame 0 has {tuple(like)}; "
                        "all frames must share one (h, w, 3)")
    return np.ascontiguousarray(array)


def _check_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise CCDMError(f"fps must be a positive finite number (e.g. 8 or 12.5), got {fps!r}")
    return float(fps)


def _check_infotext(infotext: Optional[str]) -> Optional[str]:
    if infotext is not None and not isinstance(infotext, str):
        raise CCDMError(f"infotext must be a str or None, got {type(infotext).__name__}")
    if infotext and "\0" in infotext:
        raise CCDMError("infotext must not contain NUL characters")
    return infotext or None  # an empty infotext is not stored


def _resolve_format(path: Path, fmt: Optional[str]) -> str:
    ext = path.suffix.lower().lstrip(".")
    name = (fmt if fmt is not None else ext).lower()
    if name not in FORMATS:
        raise CCDMError(f"unknown video format {name!r} for {path.name}; accepted formats: {', '.join(FORMATS)}")
    if fmt is not None and name != ext:
        raise CCDMError(f"format {name!r} does not match the extension of {path.name}; "
                        f"use a .{name} path or leave fmt=None")
    return name


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a hidden temporary file beside `path` (same extension), then os.replace onto it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- ffmpeg (mp4, webm)


@functools.lru_cache(maxsize=None)
def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise CCDMError("mp4 and webm need the imageio-ffmpeg package; install it or use gif, webp or png") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=None)
def _available_encoders() -> frozenset:
    out = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-encoders"], stdin=subprocess.DEVNULL,
                         capture_output=True, check=False).stdout.decode("utf-8", "replace")
    return frozenset(m.group(1) for m in re.finditer(r"^\s*V\S*\s+(\S+)", out, re.MULTILINE))


def _pick_encoder(fmt: str) -> str:
    for name in _ENCODERS[fmt]:
        if name in _available_encoders():
            return name
    raise CCDMError(f"the bundled ffmpeg has no {fmt} encoder (needs one of {', '.join(_ENCODERS[fmt])}); "
                    "use gif, webp or png instead")


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Replicate the last row/column so H.264 yuv420p gets even sizes; the file reads back padded."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _write_ffmpeg(frames: np.ndarray, tmp: Path, fps: float, fmt: str, infotext: Optional[str]) -> None:
    encoder = _pick_encoder(fmt)
    if fmt == "mp4":
        frames = _pad_even(frames)
    _, h, w, _ = frames.shape
    rate = max(Fraction(fps).limit_denominator(1001), Fraction(1, 1001))
    cmd = [_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
           "-an", "-c:v", encoder, "-pix_fmt", "yuv420p", *_BT709, *_ENCODER_OPTIONS[encoder]]
    if infotext is not None:
        cmd += ["-metadata", f"comment={infotext}"]
    cmd += ["-f", fmt, str(tmp)]
    data = memoryview(np.ascontiguousarray(frames)).cast("B")
    proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise CCDMError(f"ffmpeg ({encoder}) failed: {_last_line(proc.stderr)}")


def _parse_stream(stderr: str, path: Path) -> Tuple[int, int, float]:
    """Width, height and fps of the decoded stream from ffmpeg's log (the rawvideo output section)."""
    section = stderr.split("Output #0", 1)[-1]
    for line in section.splitlines():
        if "Stream #" not in line or " Video: " not in line:
            continue
        size = re.search(r", (\d+)x(\d+)", line)
        rate = re.search(r"([\d.]+)(k?) fps", line) or re.search(r"([\d.]+)(k?) tbr", line)
        if size and rate:
            fps = float(rate.group(1)) * (1000 if rate.group(2) else 1)
            return int(size.group(1)), int(size.group(2)), fps
    raise CCDMError(f"cannot find the size and frame rate of the video stream in {path}")


def _read_ffmpeg(path: Path) -> Tuple[np.ndarray, float]:
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        raise CCDMError(f"cannot read video {path}: {_last_line(proc.stderr)}")
    w, h, fps = _parse_stream(proc.stderr.decode("utf-8", "replace"), path)
    n, rest = divmod(len(proc.stdout), w * h * 3)
    if n == 0 or rest:
        raise CCDMError(f"cannot read video {path}: decoded {len(proc.stdout)} bytes, not whole {w}x{h} frames")
    return np.frombuffer(proc.stdout, np.uint8).reshape(n, h, w, 3).copy(), fps


def _parse_ffmetadata(text: str) -> dict:
    """Global tags of ffmpeg's FFMETADATA1 text ('\\' escapes '=', ';', '#', '\\' and newlines), keys lowercased."""
    tags, key, cur, escaped = {}, None, [], False
    for ch in text + "\n":
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "=" and key is None:
            key, cur = "".join(cur), []
        elif ch == "\n":
            line = "".join(cur)
            if key is None and line.startswith("["):
                break  # [STREAM] / [CHAPTER] sections follow the global tags
            if key is not None and not key.startswith((";", "#")):
                tags.setdefault(key.lower(), line)
            key, cur = None, []
        else:
            cur.append(ch)
    return tags


def _ffmpeg_infotext(path: Path) -> Optional[str]:
    cmd = [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
           "-f", "ffmetadata", "pipe:1"]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        raise CCDMError(f"cannot read metadata of {path}: {_last_line(proc.stderr)}")
    return _parse_ffmetadata(proc.stdout.decode("utf-8", "replace")).get("comment")


# ---------------------------------------------------------------- Pillow (gif, webp, png)


def _durations_ms(n: int, fps: float, unit_ms: int) -> list:
    """Per-frame durations in multiples of unit_ms whose running sum tracks i * 1000 / fps (no drift)."""
    ends = [round((i + 1) * 1000.0 / fps / unit_ms) for i in range(n)]
    return [max(1, end - start) * unit_ms for start, end in zip([0] + ends[:-1], ends)]


def _exif_user_comment(text: str) -> bytes:
    """Minimal big-endian TIFF/EXIF block holding UserComment as UNICODE (UTF-16BE, as piexif writes it)."""
    payload = _UNICODE_PREFIX + text.encode("utf-16-be")
    header = struct.pack(">2sHI", b"MM", 42, 8)
    ifd0 = struct.pack(">HHHII", 1, _EXIF_IFD, 4, 1, 26) + struct.pack(">I", 0)  # LONG offset of the Exif IFD
    exif_ifd = struct.pack(">HHHII", 1, _USER_COMMENT, 7, len(payload), 44) + struct.pack(">I", 0)  # UNDEFINED
    return header + ifd0 + exif_ifd + payload


def _decode_user_comment(value: Union[bytes, str, None]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    prefix, body = value[:8], value[8:]
    if prefix == _UNICODE_PREFIX:
        big_endian = body[:1] == b"\0" or body[1:2] != b"\0"  # ASCII-range text shows its zero byte first
        return body.decode("utf-16-be" if big_endian else "utf-16-le", "replace")
    if prefix in (_ASCII_PREFIX, b"\0" * 8):
        return body.rstrip(b"\0").decode("utf-8", "replace")
    return value.rstrip(b"\0").decode("utf-8", "replace")


def _png_info(infotext: Optional[str]) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text(INFOTEXT_KEY, infotext)  # tEXt (latin-1) or iTXt (UTF-8) as the text needs
    return info


def _write_pillow(frames: np.ndarray, tmp: Path, fps: float, fmt: str, infotext: Optional[str]) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    options = {"save_all": True, "append_images": images[1:], "loop": 0,
               "duration": _durations_ms(len(images), fps, _DURATION_UNIT_MS[fmt])}
    if fmt == "gif" and infotext is not None:
        options["comment"] = infotext.encode("utf-8")
    elif fmt == "webp":
        options["quality"] = 90
        if infotext is not None:
            options["exif"] = _exif_user_comment(infotext)
    elif fmt == "png":
        options["pnginfo"] = _png_info(infotext)
    images[0].save(tmp, format=_PILLOW_FORMATS[fmt], **options)


def _open_image(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CCDMError(f"cannot read video {path}: {exc}") from exc


def _constant_rate(frames: list, durations: list) -> Tuple[np.ndarray, float]:
    """Repeat frames shown k frame intervals long k times; Pillow merges identical neighbours when saving."""
    clip = np.stack(frames)
    d = np.asarray(durations, dtype=np.float64)
    if d.sum() <= 0:
        return clip, STILL_FPS
    interval = float(np.median(d[d > 0]))
    for _ in range(2):  # the median may be a rounded delay; refine with the mean over counted intervals
        counts = np.maximum(1, np.rint(d / interval)).astype(np.int64)
        interval = float(d.sum() / counts.sum())
    if (counts > 1).any():
        clip = np.repeat(clip, counts, axis=0)
    return clip, 1000.0 / interval


def _read_pillow(path: Path) -> Tuple[np.ndarray, float]:
    with _open_image(path) as im:
        frames, durations = [], []
        try:
            for index in range(getattr(im, "n_frames", 1)):
                im.seek(index)
                im.load()
                frames.append(np.asarray(im.convert("RGB")))
                durations.append(float(im.info.get("duration") or 0))
        except (OSError, EOFError, SyntaxError, ValueError) as exc:
            raise CCDMError(f"cannot read video {path}: frame {len(frames)}: {exc}") from exc
    return _constant_rate(frames, durations)


def _pillow_infotext(path: Path, fmt: str) -> Optional[str]:
    with _open_image(path) as im:
        if fmt == "png":
            return im.info.get(INFOTEXT_KEY)
        if fmt == "gif":
            comment = im.info.get("comment")
            return comment.decode("utf-8", "replace") if isinstance(comment, bytes) and comment else comment
        return _decode_user_comment(im.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT))


# ---------------------------------------------------------------- public API


def write_video(frames: FramesLike, path: Union[str, os.PathLike], fps: float, fmt: Optional[str] = None,
                infotext: Optional[str] = None) -> Path:
    """Write frames (f, h, w, 3) uint8 atomically as mp4 (H.264), webm (VP9), gif, webp or png (APNG).

    mp4 frames with an odd height or width get one edge-replicated row/column (yuv420p needs even sizes)
    and read back padded. GIF delays are whole centiseconds: they alternate so that their average matches
    fps (exactly when frames * 100 / fps is whole); above 50 fps browsers slow GIFs down.
    """
    path = Path(path)
    fmt = _resolve_format(path, fmt)
    frames = _as_frames(frames)
    fps = _check_fps(fps)
    infotext = _check_infotext(infotext)
    writer = _write_ffmpeg if fmt in _ENCODERS else _write_pillow
    try:
        _atomic_write(path, lambda tmp: writer(frames, tmp, fps, fmt, infotext))
    except CCDMError as exc:
        raise CCDMError(f"cannot write {path}: {exc}") from None
    return path


def _existing(path: Union[str, os.PathLike]) -> Tuple[Path, str]:
    path = Path(path)
    fmt = _resolve_format(path, None)
    if not path.is_file():
        raise CCDMError(f"video file not found: {path}")
    return path, fmt


def read_video(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, float]:
    """Frames (f, h, w, 3) uint8 at a constant rate, and that rate in frames per second."""
    path, fmt = _existing(path)
    return _read_ffmpeg(path) if fmt in _ENCODERS else _read_pillow(path)


def read_infotext(path: Union[str, os.PathLike]) -> Optional[str]:
    """The infotext stored by write_video (or by the WebUI for png/webp), or None."""
    path, fmt = _existing(path)
    return _ffmpeg_infotext(path) if fmt in _ENCODERS else _pillow_infotext(path, fmt)


def save_frames_png(frames: FramesLike, folder: Union[str, os.PathLike], stem: str,
                    infotext: Optional[str] = None) -> list:
    """One PNG per frame, `{stem}-{index:05d}.png`, each with the `parameters` text chunk; atomic per file."""
    if not isinstance(stem, str) or not stem or any(sep in stem for sep in ("/", "\\", "\0")):
        raise CCDMError(f"stem must be a non-empty file name without path separators, got {stem!r}")
    frames = _as_frames(frames)
    infotext = _check_infotext(infotext)
    folder = Path(folder)
    paths = []
    for index, frame in enumerate(frames):
        path = folder / f"{stem}-{index:05d}.png"
        image = Image.fromarray(frame)
        _atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=_png_info(infotext)))
        paths.append(path)
    return paths


def tensor_to_frames(x) -> np.ndarray:
    """Decoded video in [-1, 1], layout `c f h w` or `b c f h w` (b == 1), to uint8 frames (f, h, w, 3)."""
    import torch

    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise CCDMError(f"x must be a float torch tensor in [-1, 1], got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim == 5:
        if x.shape[0] != 1:
            raise CCDMError(f"x with layout 'b c f h w' must have b == 1, got b={x.shape[0]}")
        x = rearrange(x, "b c f h w -> (b c) f h w")
    if x.ndim != 4 or x.shape[0] != 3:
        raise CCDMError(f"x must have layout 'c f h w' or 'b c f h w' with c == 3, got shape {tuple(x.shape)}")
    frames = rearrange(x.detach(), "c f h w -> f h w c")
    frames = ((torch.nan_to_num(frames.float()).clamp(-1, 1) + 1) * 127.5).round()
    return frames.to(device="cpu", dtype=torch.uint8).contiguous().numpy()
