"""Keyframes: images pinned at frame positions with strengths and optional prompts; text forms and guidance."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import math
import re
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .control_hints import ControlSpec, control_spec_from_dict
from .errors import CCDMError

ImageLike = Union[str, bytes, np.ndarray, "PIL.Image.Image", None]  # noqa: F821 (PIL imported lazily)


@dataclasses.dataclass(frozen=True)
class Keyframe:
    """An image (path, data URL, base64, array or PIL image; None for a prompt-only keyframe) at `frame`."""

    frame: int
    image: ImageLike = None
    strength: float = 1.0
    prompt: Optional[str] = None
    controlnet: Optional[ControlSpec] = None  # a ControlNet condition for this keyframe (WebUI only)

    def __post_init__(self):
        if isinstance(self.frame, bool) or not isinstance(self.frame, int) or self.frame < 0:
            raise CCDMError(f"keyframe frame must be an integer >= 0, got {self.frame!r}")
        strength = self.strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise CCDMError(f"keyframe at frame {self.frame}: strength must be a number in 0..1, got {strength!r}")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise CCDMError(f"keyframe at frame {self.frame}: prompt must be a string")
        try:
            object.__setattr__(self, "controlnet", control_spec_from_dict(self.controlnet))
        except CCDMError as err:
            raise CCDMError(f"keyframe at frame {self.frame}: {err}") from None


def check_keyframes(keyframes: Sequence[Keyframe], num_frames: int) -> List[Keyframe]:
    """Sorted keyframes, each inside the clip and at most one per frame."""
    seen = set()
    for kf in keyframes:
        if kf.frame >= num_frames:
            raise CCDMError(f"keyframe at frame {kf.frame} is outside the clip; accepted frames 0..{num_frames - 1}")
        if kf.frame in seen:
            raise CCDMError(f"two keyframes at frame {kf.frame}; accepted: one keyframe per frame")
        seen.add(kf.frame)
    return sorted(keyframes, key=lambda k: k.frame)


# ---- text forms ------------------------------------------------------------------------------------------------

_SCHEDULE_ITEM = re.compile(r"^\s*(\d+)\s*:\s*\(\s*([-+0-9.eE]+)\s*\)\s*$")


def parse_value_schedule(text: str) -> Dict[int, float]:
    """Deforum-style numeric schedule `0:(1.0), 12:(0.6)` -> {0: 1.0, 12: 0.6}."""
    out: Dict[int, float] = {}
    for item in filter(str.strip, text.split(",")):
        m = _SCHEDULE_ITEM.match(item)
        if not m:
            raise CCDMError(f"schedule item {item.strip()!r} is not FRAME:(VALUE); accepted e.g. '0:(1.0), 12:(0.6)'")
        frame, value = int(m.group(1)), float(m.group(2))
        if not math.isfinite(value):
            raise CCDMError(f"schedule value at frame {frame} is not finite")
        if frame in out:
            raise CCDMError(f"schedule names frame {frame} twice")
        out[frame] = value
    return out


def format_value_schedule(values: Dict[int, float]) -> str:
    return ", ".join(f"{frame}:({values[frame]:g})" for frame in sorted(values))


def parse_prompt_schedule(text: str) -> Dict[int, str]:
    """Prompt schedule `{"0": "a cat", "12": "a dog"}` -> {0: "a cat", 12: "a dog"}."""
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise CCDMError(f"prompt schedule is not JSON ({err.msg}); accepted e.g. {{\"0\": \"a cat\"}}") from err
    if not isinstance(raw, dict):
        raise CCDMError('prompt schedule must be a JSON object like {"0": "a cat", "12": "a dog"}')
    out = {}
    for key, value in raw.items():
        if not str(key).strip().isdigit() or not isinstance(value, str):
            raise CCDMError(f"prompt schedule entry {key!r}: keys are frame numbers, values are prompt strings")
        out[int(key)] = value
    return out


def parse_keyframes_json(text_or_list) -> List[Keyframe]:
    """JSON list `[{"frame": 0, "image": "...", "strength": 1.0, "prompt": "..."}]` -> keyframes."""
    items = text_or_list
    if isinstance(text_or_list, str):
        try:
            items = json.loads(text_or_list) if text_or_list.strip() else []
        except ValueError as err:
            raise CCDMError(f"keyframes are not valid JSON ({err.msg})") from err
    if not isinstance(items, list):
        raise CCDMError("keyframes must be a JSON list of objects with frame, image, strength, prompt")
    allowed = {"frame", "image", "strength", "prompt", "controlnet"}
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "frame" not in item:
            raise CCDMError(f"keyframe #{i}: must be an object with at least 'frame'")
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise CCDMError(f"keyframe #{i}: unknown field {unknown[0]!r}; accepted: {', '.join(sorted(allowed))}")
        out.append(Keyframe(frame=item["frame"], image=item.get("image"), strength=item.get("strength", 1.0),
                            prompt=item.get("prompt"), controlnet=item.get("controlnet")))
    return out


def parse_keyframe_arg(text: str) -> Keyframe:
    """CLI form `FRAME=PATH[@STRENGTH]`."""
    m = re.match(r"^(\d+)=(.+?)(?:@([0-9.]+))?$", text)
    if not m:
        raise CCDMError(f"--keyframe {text!r}: expected FRAME=PATH or FRAME=PATH@STRENGTH, e.g. 12=cat.png@0.8")
    return Keyframe(frame=int(m.group(1)), image=m.group(2), strength=float(m.group(3) or 1.0))


# ---- images ----------------------------------------------------------------------------------------------------

def load_image(image: ImageLike, label: str):
    """A PIL RGB image from a path, data URL, base64 string, bytes, uint8 array or PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise CCDMError(f"{label}: image arrays must be uint8 HxWx3 or HxWx4, got {image.dtype} {image.shape}")
        return Image.fromarray(image).convert("RGB")
    try:
        data = _image_bytes(image, label)
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise CCDMError(f"{label}: not a readable image ({type(err).__name__})") from err


def _image_bytes(image, label: str) -> bytes:
    if isinstance(image, bytes):
        return image
    if not isinstance(image, str) or not image:
        raise CCDMError(f"{label}: no image given; accepted: a file path, a data URL or base64 PNG/JPEG")
    if image.startswith("data:"):
        header, _, payload = image.partition(",")
        if ";base64" not in header:
            raise CCDMError(f"{label}: data URL is not base64-encoded")
        return _b64(payload, label)
    if len(image) > 512 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", image):
        return _b64(image, label)
    try:
        with open(image, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise CCDMError(f"{label}: cannot read image file {image!r} ({err.strerror})") from err


_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]{513,}")


def image_digest(image: ImageLike) -> Optional[str]:
    """sha256 (hex) of an image given as data URL, base64 text or bytes; None for other forms or broken text."""
    if not isinstance(image, (str, bytes)) or not image:
        return None
    if isinstance(image, str) and not image.startswith("data:") and not _BASE64_TEXT.fullmatch(image):
        return None  # a file path names a file, not its content
    try:
        return hashlib.sha256(_image_bytes(image, "keyframe")).hexdigest()
    except CCDMError:
        return None


def _b64(payload: str, label: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as err:
        raise CCDMError(f"{label}: broken base64 image data") from err


def fit_image(image, width: int, height: int) -> np.ndarray:
    """Resize to cover (width, height) and centre-crop; uint8 HxWx3."""
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)


@torch.no_grad()
def encode_keyframes(vae_encode, keyframes: Sequence[Keyframe], width: int, height: int,
                     scale_factor: float) -> Dict[int, torch.Tensor]:
    """VAE-encode each keyframe image once: frame -> scaled latent `c h w` (fp32, CPU)."""
    out = {}
    for kf in keyframes:
        if kf.image is None:
            continue
        if isinstance(kf.image, torch.Tensor):  # already a latent (e.g. anchor-first)
            out[kf.frame] = kf.image.float().cpu()
            continue
        pixels = fit_image(load_image(kf.image, f"keyframe at frame {kf.frame}"), width, height)
        x = torch.from_numpy(pixels.copy()).float().div(127.5).sub(1.0).permute(2, 0, 1)[None]
        out[kf.frame] = (vae_encode(x) * scale_factor)[0].float().cpu()
    return out


# ---- guidance --------------------------------------------------------------------------------------------------

def keyframe_decay(step: int, total: int, end_fraction: float = 0.6) -> float:
    """Keyframe guidance weight over sampling: 1 at the first step, falling linearly to 0 at end_fraction."""
    if total <= 1:
        return 1.0
    progress = step / (total - 1)
    return max(0.0, 1.0 - progress / end_fraction) if end_fraction > 0 else 0.0


def apply_keyframes(denoised: torch.Tensor, latents: Dict[int, torch.Tensor], strengths: Dict[int, float],
                    weight: float) -> torch.Tensor:
    """Blend each keyframe's latent into its frame of the prediction `b c f h w` with strength x weight."""
    if not latents or weight <= 0:
        return denoised
    out = denoised.clone()
    for frame, latent in latents.items():
        w = float(strengths.get(frame, 1.0)) * weight
        if w <= 0:
            continue
        target = latent.to(out.device, out.dtype).expand_as(out[:, :, frame])
        out[:, :, frame] = target if w >= 1 else torch.lerp(out[:, :, frame], target, w)
    return out


def prompt_schedule_weights(frames: int, keys: Sequence[int]) -> np.ndarray:
    """Per-frame interpolation weights over the scheduled prompts (linear between keys, held outside)."""
    keys = sorted(keys)
    weights = np.zeros((frames, len(keys)), dtype=np.float64)
    for n in range(frames):
        if n <= keys[0]:
            weights[n, 0] = 1.0
        elif n >= keys[-1]:
            weights[n, -1] = 1.0
        else:
            j = max(i for i, k in enumerate(keys) if k <= n)
            t = (n - keys[j]) / (keys[j + 1] - keys[j])
            weights[n, j], weights[n, j + 1] = 1.0 - t, t
    return weights


def scheduled_conditioning(encode, frames: int, schedule: Dict[int, str]) -> torch.Tensor:
    """Per-frame conditioning `1 f T D`: embeddings of the scheduled prompts interpolated between keyframes."""
    keys = sorted(schedule)
    embeds = encode([schedule[k] for k in keys]).float()  # (k, T, D)
    weights = torch.from_numpy(prompt_schedule_weights(frames, keys)).float().to(embeds.device)
    return torch.einsum("fk,ktd->ftd", weights, embeds)[None]
