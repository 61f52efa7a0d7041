"""Training videos: the list of (video, caption) from a folder, WebVid-style CSV or JSONL, and clip decoding."""
from __future__ import annotations

import collections
import csv
import dataclasses
import json
import re
from pathlib import Path
from typing import Deque, Iterable, List, Optional, Tuple

import numpy as np
from PIL import Image

from ccdm_core.errors import CCDMError

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".mpg", ".mpeg", ".gif", ".webp")
PILLOW_EXTS = (".gif", ".webp")  # animated images: decoded through the engine's reader (Pillow)
PATH_COLUMNS = ("path", "video", "file", "filename", "filepath")
CAPTION_COLUMNS = ("caption", "name", "text")  # WebVid calls the caption `name`
CAPTION_FILES = (".csv", ".jsonl")


@dataclasses.dataclass(frozen=True)
class VideoItem:
    """One training video: the paths it may be at (the first that exists is read) and its caption."""

    candidates: Tuple[str, ...]
    caption: str

    @property
    def name(self) -> str:
        return self.candidates[0]

    def resolve(self) -> Optional[Path]:
        for candidate in self.candidates:
            if Path(candidate).is_file():
                return Path(candidate)
        return None


class ClipError(Exception):
    """A video that cannot give a training clip; `reason` is one of missing, corrupt, too short."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def caption_from_name(path: Path) -> str:
    """A file name as a caption: `a_cat-walking.mp4` -> `a cat walking`."""
    return re.sub(r"[_\-\s]+", " ", path.stem).strip()


def load_items(data: str, video_root: str = "") -> List[VideoItem]:
    """Videos and captions of `data`: a CSV, a JSONL, or a folder (with one caption file, or captioned by name)."""
    path = Path(data)
    if path.is_dir():
        listed = sorted(p for p in path.iterdir() if p.suffix.lower() in CAPTION_FILES and p.is_file())
        if len(listed) > 1:
            raise CCDMError(f"{path} holds {len(listed)} caption files ({', '.join(p.name for p in listed)}); "
                            f"accepted: at most one .csv or .jsonl, or pass the file itself as --data")
        items = _from_file(listed[0], video_root) if listed else _from_folder(path)
    elif path.is_file() and path.suffix.lower() in CAPTION_FILES:
        items = _from_file(path, video_root)
    else:
        raise CCDMError(f"--data {data!r} is neither a folder nor a .csv/.jsonl file; accepted: a folder of videos, "
                        f"a WebVid-style CSV (videoid, name, page_dir or a path column) or JSONL (video, caption)")
    if not items:
        raise CCDMError(f"no videos listed in {data} (video extensions: {', '.join(VIDEO_EXTS)})")
    return items


def _from_folder(folder: Path) -> List[VideoItem]:
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    return [VideoItem((str(p),), caption_from_name(p)) for p in videos]


def _from_file(path: Path, video_root: str) -> List[VideoItem]:
    root = Path(video_root) if video_root else path.parent
    rows = _read_jsonl(path) if path.suffix.lower() == ".jsonl" else _read_csv(path)
    return [_item(row, root, path, number) for number, row in rows]


def _read_csv(path: Path) -> Iterable[Tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower() for c in reader.fieldnames or []}
        if not columns & set(CAPTION_COLUMNS) or not (columns & set(PATH_COLUMNS) or "videoid" in columns):
            raise CCDMError(f"{path.name}: columns {sorted(columns)} lack a caption ({'/'.join(CAPTION_COLUMNS)}) "
                            f"or a video ({'/'.join(PATH_COLUMNS)}, or videoid [+ page_dir])")
        rows = [(n, {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}) for n, row
                in enumerate(reader, start=2)]
    return rows


def _read_jsonl(path: Path) -> Iterable[Tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise CCDMError(f"{path.name}:{number}: not JSON ({err}); accepted: one "
                                f'{{"video": path, "caption": text}} per line') from err
            if not isinstance(row, dict):
                raise CCDMError(f"{path.name}:{number}: expected an object like {{\"video\": ..., \"caption\": ...}}")
            rows.append((number, {str(k).lower(): row[k] for k in row}))
    return rows


def _item(row: dict, root: Path, source: Path, number: int) -> VideoItem:
    caption = next((str(row[c]) for c in CAPTION_COLUMNS if row.get(c) is not None), None)
    given = next((str(row[c]) for c in PATH_COLUMNS if row.get(c)), None)
    if caption is None or not (given or row.get("videoid")):
        raise CCDMError(f"{source.name}:{number}: needs a caption ({'/'.join(CAPTION_COLUMNS)}) and a video "
                        f"({'/'.join(PATH_COLUMNS)} or videoid)")
    if given:
        path = Path(given)
        return VideoItem((str(path if path.is_absolute() else root / path),), caption)
    video_id, page_dir = str(row["videoid"]), str(row.get("page_dir") or "")
    folders = [root / page_dir, root / "videos" / page_dir, root] if page_dir else [root, root / "videos"]
    # WebVid's download scripts store `<page_dir>/<videoid>.mp4`; other tools flatten the folders.
    return VideoItem(tuple(str(folder / f"{video_id}{ext}") for folder in folders for ext in (".mp4", ".webm")),
                     caption)


# ---------------------------------------------------------------- decoding


def clip_span(count: int, stride: int) -> int:
    """Source frames covered by `count` frames taken every `stride` frames."""
    return (count - 1) * stride + 1


def choose_window(total: int, want: int, need: int, stride: int, rng: np.random.Generator) -> Tuple[int, int]:
    """(start, count): up to `want` (at least `need`) frames every `stride`, starting at a random frame."""
    available = (total - 1) // stride + 1 if total > 0 else 0
    count = min(want, available)
    if count < need:
        raise ClipError("too short", f"{total} frames, a clip needs {clip_span(need, stride)} (stride {stride})")
    return int(rng.integers(0, total - clip_span(count, stride) + 1)), count


def read_clip(path: Path, want: int, need: int, stride: int, rng: np.random.Generator,
              decoder: str = "auto") -> np.ndarray:
    """uint8 frames `f h w 3` (need <= f <= want) taken every `stride` frames from a random start."""
    if path.suffix.lower() in PILLOW_EXTS:
        return _read_pillow(path, want, need, stride, rng)
    if decoder in ("auto", "opencv") and _has_opencv():
        return _read_opencv(path, want, need, stride, rng)
    if decoder == "opencv":
        raise CCDMError("--decoder opencv needs opencv-python-headless; install it or use --decoder ffmpeg")
    return _read_ffmpeg(path, want, need, stride, rng)


def _has_opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _read_pillow(path: Path, want: int, need: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    from ccdm_core.video import read_video

    try:
        frames, _ = read_video(path)
    except CCDMError as err:
        raise ClipError("corrupt", str(err)) from err
    start, count = choose_window(len(frames), want, need, stride, rng)
    return frames[start: start + clip_span(count, stride): stride]


def _read_opencv(path: Path, want: int, need: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ClipError("corrupt", "OpenCV cannot open it")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:  # some containers carry no frame count: stream it with ffmpeg instead
            return _read_ffmpeg(path, want, need, stride, rng)
        start, count = choose_window(total, want, need, stride, rng)
        if start and not capture.set(cv2.CAP_PROP_POS_FRAMES, start):
            raise ClipError("corrupt", f"cannot seek to frame {start}")
        frames = []
        for offset in range(clip_span(count, stride)):
            ok, frame = capture.read()
            if not ok:
                raise ClipError("corrupt", f"decoding stopped at frame {start + offset} of {total}")
            if offset % stride == 0:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        return np.stack(frames)
    finally:
        capture.release()


def _read_ffmpeg(path: Path, want: int, need: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """Stream with imageio-ffmpeg; the frame count is estimated from duration x fps, so keep the last span read."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        estimate = int(round(float(meta.get("duration") or 0) * float(meta.get("fps") or 0)))
        start, count = choose_window(estimate, want, need, stride, rng)
        span = clip_span(count, stride)
        recent: Deque[bytes] = collections.deque(maxlen=span)
        for index, data in enumerate(reader):
            recent.append(data)
            if index + 1 >= start + span:
                break
        reader.close()
    except (RuntimeError, OSError, StopIteration, KeyError) as err:
        raise ClipError("corrupt", str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
    taken = list(recent)[::stride]
    if len(taken) < need:
        raise ClipError("too short", f"{len(recent)} frames decoded, a clip needs {clip_span(need, stride)}")
    return np.stack([np.frombuffer(d, np.uint8).reshape(height, width, 3) for d in taken])


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre square of each frame, resized to `size` x `size` (Lanczos via Pillow): uint8 `f size size 3`."""
    _, height, width, _ = frames.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = frames[:, top: top + side, left: left + side]
    if side == size:
        return np.ascontiguousarray(square)
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.LANCZOS, reducing_gap=3.0))
                     for f in square])
