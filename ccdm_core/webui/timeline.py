"""The keyframe timeline of the txt2vid tab: its Gradio layout, the state the page passes to Python, and the
keyframes restored from pasted infotext.

The page code (javascript/ccdm_timeline.js) owns the timeline. It writes the keyframes as a JSON list into the
hidden textbox `#ccdm_keyframes_json` with a synthetic `input` event (CONVENTIONS item 14); Python parses that
into the engine's frozen `Keyframe`s here. gradio is imported only by the layout function, so parsing is tested
without it.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import html
import io
import json
import numbers
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import CCDMError
from ..infotext import parse_infotext
from ..keyframes import Keyframe, image_digest
from .settings import (KEY_KEYFRAME_IMAGES, KEY_KEYFRAMES, STRENGTH_RANGE, CCDMSettingsError,
                       keyframe_strengths_from_infotext)

ROOT_ID = "ccdm_timeline"
STATE_ID = "ccdm_keyframes_json"
STATUS_ID = "ccdm_timeline_status"
CN_OPTIONS_ID = "ccdm_controlnet_options"  # ControlNet's preprocessors and models for the cards, as JSON
MAX_IMAGE_SIDE = 1024  # the page downscales dropped images to this before they travel
STATE_FIELDS = ("frame", "strength", "prompt", "image")
PASSTHROUGH_FIELDS = ("controlnet",)  # owned by the per-keyframe ControlNet feature: kept by frame, not checked here
_HASH_ITEM = re.compile(r"^\s*(\d+)\s*:\s*([0-9a-fA-F]{6,64})\s*$")


@dataclasses.dataclass(frozen=True)
class TimelineState:
    """The timeline's keyframes (sorted by frame) and the pass-through fields of each, by frame."""

    keyframes: Tuple[Keyframe, ...] = ()
    extras: Mapping[int, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


def _fail(message: str) -> CCDMSettingsError:
    return CCDMSettingsError("keyframes", message)


def _state_items(value: Any) -> List[Any]:
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            raise _fail(f"the timeline state is not valid JSON ({err})") from None
    if not isinstance(value, list):
        raise _fail(f"the timeline state must be a JSON list of keyframes, got {type(value).__name__}")
    return value


def parse_timeline_state(value: Any, frames: int, check_images: bool = True) -> TimelineState:
    """The hidden textbox's JSON -> keyframes inside the clip, one per frame; messages name the keyframe."""
    keyframes: Dict[int, Keyframe] = {}
    extras: Dict[int, Dict[str, Any]] = {}
    for index, item in enumerate(_state_items(value)):
        kf, extra = _state_keyframe(index, item, frames, check_images)
        if kf.frame in keyframes:
            raise _fail(f"keyframe #{index}: two keyframes at frame {kf.frame}; accepted: one keyframe per frame")
        keyframes[kf.frame] = kf
        if extra:
            extras[kf.frame] = extra
    return TimelineState(tuple(keyframes[f] for f in sorted(keyframes)), extras)


def _state_keyframe(index: int, item: Any, frames: int, check_images: bool) -> Tuple[Keyframe, Dict[str, Any]]:
    if not isinstance(item, dict) or "frame" not in item:
        raise _fail(f"keyframe #{index}: must be an object with {', '.join(STATE_FIELDS)}")
    unknown = sorted(set(item) - set(STATE_FIELDS) - set(PASSTHROUGH_FIELDS))
    if unknown:
        accepted = ", ".join(STATE_FIELDS + PASSTHROUGH_FIELDS)
        raise _fail(f"keyframe #{index}: unknown field {unknown[0]!r}; accepted: {accepted}")
    frame = _frame(index, item["frame"], frames)
    label = f"keyframe at frame {frame}"
    strength = _strength(label, item.get("strength", 1.0))
    prompt = item.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise _fail(f"{label}: prompt must be text or null, got {type(prompt).__name__}")
    image = item.get("image")
    if image is not None and check_images:
        check_data_url(image, label)
    extra = {k: item[k] for k in PASSTHROUGH_FIELDS if item.get(k) is not None}
    try:
        return Keyframe(frame=frame, image=image, strength=strength, prompt=prompt or None), extra
    except CCDMError as err:
        raise _fail(str(err)) from None


def _frame(index: int, value: Any, frames: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise _fail(f"keyframe #{index}: frame must be an integer, got {value!r}")
    if not 0 <= int(value) < frames:
        raise _fail(f"keyframe #{index} at frame {int(value)} is outside the clip; accepted frames 0..{frames - 1}")
    return int(value)


def _strength(label: str, value: Any) -> float:
    low, high = STRENGTH_RANGE
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(f"{label}: strength must be a number in {low:g}..{high:g}, got {value!r}")
    if not low <= float(value) <= high:
        raise _fail(f"{label}: strength {value:g} is out of range; accepted {low:g}..{high:g}")
    return float(value)


def check_data_url(url: Any, label: str) -> None:
    """A `data:image/...;base64,` URL whose payload decodes to a readable image (else a message naming `label`)."""
    from PIL import Image

    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise _fail(f"{label}: image must be a data URL (data:image/png;base64,...), got {_excerpt(url)}")
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise _fail(f"{label}: broken data URL (expected 'data:image/...;base64,' before the data)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{label}: broken data URL (the base64 data does not decode)") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError):  # what PIL raises for unknown or truncated image data
        raise _fail(f"{label}: broken data URL (the data is not a readable image)") from None


def _excerpt(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- infotext: positions and strengths, images by content hash ------------------------------------------------

def parse_image_hashes(text: str) -> Dict[int, str]:
    """`CCDM keyframe images: 0:3f2a9c01de, 12:...` -> {0: "3f2a9c01de", 12: ...}."""
    out: Dict[int, str] = {}
    for item in filter(str.strip, str(text).split(",")):
        m = _HASH_ITEM.match(item)
        if not m:
            raise _fail(f"keyframe image item {item.strip()!r} is not FRAME:HASH; accepted e.g. '0:3f2a9c01de'")
        out[int(m.group(1))] = m.group(2).lower()
    return out


def _current_by_hash(current: Any) -> Dict[str, Dict[str, Any]]:
    """The timeline's present keyframe objects by image sha256 (unreadable state: none)."""
    try:
        items = _state_items(current)
    except CCDMSettingsError:
        return {}
    out = {}
    for item in items:
        digest = image_digest(item.get("image")) if isinstance(item, dict) else None
        if digest:
            out[digest] = item
    return out


def restore_keyframes(infotext: str, current: Any) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    """Keyframes from pasted infotext: positions and strengths, with the images (and their prompts) of the current
    timeline whose sha256 matches; (None, "") when the infotext has no keyframes. Returns (keyframes, message)."""
    _, _, params = parse_infotext(infotext or "")
    if KEY_KEYFRAMES not in params:
        return None, ""
    try:
        strengths = keyframe_strengths_from_infotext(params)
        hashes = parse_image_hashes(params.get(KEY_KEYFRAME_IMAGES, ""))
    except CCDMSettingsError as err:
        return None, f"Keyframes not restored: {err}"
    present = _current_by_hash(current)
    out, missing = [], []
    for frame in sorted(strengths):
        item: Dict[str, Any] = {"frame": frame, "strength": strengths[frame], "prompt": None, "image": None}
        wanted = hashes.get(frame)
        match = next((kf for digest, kf in present.items() if wanted and digest.startswith(wanted)), None)
        if match is not None:
            item.update({k: v for k, v in match.items() if k not in ("frame", "strength")})
        elif wanted:
            missing.append(f"{frame} ({wanted})")
        out.append(item)
    message = f"Restored {len(out)} keyframe(s) from the infotext."
    if missing:
        message += " Images not on the timeline, drop them again: frame " + ", ".join(missing) + "."
    return out, message


def pasted_keyframes(infotext: str, current: Any) -> Tuple[Any, str]:
    """For the paste button: (new value of the state textbox or None to leave it, status HTML)."""
    keyframes, message = restore_keyframes(infotext, current)
    status = f"<p class='ccdm-timeline-message'>{html.escape(message)}</p>" if message else ""
    return (json.dumps(keyframes) if keyframes is not None else None), status


# ---- layout ----------------------------------------------------------------------------------------------------

def root_html(frames_elem_id: str, fps_elem_id: str, frames_gallery_id: str = "") -> str:
    """The element the page code fills; it names the frame count, fps and frames-gallery components to follow."""
    attrs = {"id": ROOT_ID, "class": "ccdm-timeline", "tabindex": "0", "data-frames-elem": frames_elem_id,
             "data-fps-elem": fps_elem_id, "data-state-elem": STATE_ID, "data-gallery-elem": frames_gallery_id,
             "data-cn-options-elem": CN_OPTIONS_ID, "data-max-side": str(MAX_IMAGE_SIDE)}
    text = " ".join(f'{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
    return f"<div {text}><p class='ccdm-timeline-loading'>Keyframe timeline (loading the page code)</p></div>"


def timeline_panel(frames_elem_id: str, fps_elem_id: str, frames_gallery_id: str = "",
                   controlnet_options: Any = "") -> Dict[str, Any]:
    """The timeline strip, its hidden JSON state textbox, a status line and the hidden ControlNet options box
    (gradio 3.41 layout). `controlnet_options`: the options JSON or a function gradio calls at each page load."""
    import gradio as gr

    c: Dict[str, Any] = {}
    with gr.Column(variant="panel", elem_id=f"{ROOT_ID}_panel"):
        c["timeline"] = gr.HTML(value=root_html(frames_elem_id, fps_elem_id, frames_gallery_id),
                                elem_id=f"{ROOT_ID}_html")
        c["state"] = gr.Textbox(value="", visible=False, label="Keyframes (JSON)", elem_id=STATE_ID)
        c["status"] = gr.HTML(value="", elem_id=STATUS_ID)
        # gradio 3.41 keeps invisible components in the page (display: none), so the page code can read it
        c["controlnet_options"] = gr.Textbox(value=controlnet_options, visible=False, label="ControlNet options",
                                             elem_id=CN_OPTIONS_ID)
    for name in ("state", "controlnet_options"):
        c[name].do_not_save_to_config = True  # images are large, lists change: never into ui-config.json
    return c
