"""CCDM's WebUI settings: one frozen, JSON-able object (script args, API body, infotext), validated by field name.

Nothing here imports the WebUI or gradio, so parsing, serialisation and the infotext round trip are unit-tested.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from ..camera import CAMERA_CHOICES, MOVES, camera_infotext, resolve_camera
from ..errors import CCDMError
from ..fusion import FusionMode
from ..freeinit import FreeInitSettings, freeinit_infotext, parse_freeinit
from ..freeinit import INFOTEXT_KEY as KEY_FREEINIT
from ..init_frames import DEFAULT_STRENGTH, SOURCE_KEY, parse_source_label
from ..interpolate import INTERPOLATE_RANGE
from ..sources import SOURCE_FITS, looks_like_path
from ..keyframes import (Keyframe, check_keyframes, format_value_schedule, image_digest, parse_keyframes_json,
                         parse_value_schedule)

SCHEMA_VERSION = 1
FRAMES_RANGE = (1, 1024)
FPS_RANGE = (0.1, 120.0)
CONTEXT_RANGE = (1, 1024)
SIZE_RANGE = (64, 2048)
STEPS_RANGE = (1, 500)
CFG_RANGE = (0.0, 50.0)
SEED_RANGE = (-1, 2**32 - 1)

# Infotext keys (what the WebUI writes into PNG info and reads back on paste).
KEY_MODULE = "CCDM motion module"
KEY_FRAMES = "CCDM frames"
KEY_FPS = "CCDM fps"
KEY_CONTEXT = "CCDM context"
KEY_FUSION = "CCDM fusion"
KEY_KEYFRAMES = "CCDM keyframes"
KEY_KEYFRAME_IMAGES = "CCDM keyframe images"  # `0:<sha256 first 10 hex>, 12:...`, matched on paste
KEY_ANCHOR_FIRST = "CCDM anchor first"  # written only when on: `true`
KEY_CAMERA = "CCDM camera"  # written only when camera guidance acted: `zoom in 1` (the move, then the strength)
KEY_SOURCE = SOURCE_KEY  # video to video: `<sha256 first 10 hex> <start>/<stride>/<frames>`; the video is not in it
KEY_STRENGTH = "Denoising strength"  # the WebUI's own key, written for a video-to-video run
STRIDE_RANGE = (1, 1000)
KEY_INTERPOLATE = "CCDM interpolate"
KEY_MOTION_LORAS = "CCDM motion LoRAs"  # `name [shorthash]:strength, ...`
_LORA_ENTRY = re.compile(r"^\s*(.+?)\s*\[([0-9a-f]{10}|unsaved)\]\s*:\s*([-+0-9.eE]+)\s*$")
FREEINIT_FIELDS = ("iterations", "filter", "spatial", "temporal", "noise")
_DATA_URL = re.compile(r"^data:[^,]*;base64,", re.IGNORECASE)
_BASE64 = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")
FUSION_MODES = tuple(m.value for m in FusionMode)
STRENGTH_RANGE = (0.0, 1.0)
_FUSION = re.compile(r"^\s*([-+0-9.eE]+)\s*/\s*([-+0-9.eE]+)\s*/\s*([a-z]+)\s*$")
_CONTEXT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*(/\s*loop\s*)?$")
_CAMERA = re.compile(r"^\s*([a-z][a-z ]*?)\s+([-+0-9.eE]+)\s*$")


class VideoFormat(str, enum.Enum):
    """Output formats; `png` is an animated PNG (single PNG frames are the "save frames" setting)."""

    MP4 = "mp4"
    GIF = "gif"
    WEBM = "webm"
    WEBP = "webp"
    PNG = "png"


FORMAT_NAMES = tuple(f.value for f in VideoFormat)


class CCDMSettingsError(CCDMError):
    """Bad settings: names the field; `status_code`/`detail` make the WebUI's API answer HTTP 422."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status_code = 422  # read by the WebUI's API exception handler through vars(e)
        self.detail = f"{field}: {message}"


def _int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise CCDMSettingsError(field, f"must be an integer in {low}..{high}, got {value!r}")
    if not low <= int(value) <= high:
        raise CCDMSettingsError(field, f"{int(value)} is out of range; accepted {low}..{high}")
    return int(value)


def _float(field: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise CCDMSettingsError(field, f"must be a number in {low:g}..{high:g}, got {value!r}")
    if not low <= float(value) <= high:
        raise CCDMSettingsError(field, f"{value:g} is out of range; accepted {low:g}..{high:g}")
    return float(value)


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise CCDMSettingsError(field, f"must be true or false, got {value!r}")
    return value


def _str(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise CCDMSettingsError(field, f"must be a string, got {type(value).__name__}")
    return value


def _formats(value: Any) -> Tuple[VideoFormat, ...]:
    if isinstance(value, (str, VideoFormat)) or not isinstance(value, (list, tuple)):
        raise CCDMSettingsError("formats", f"must be a list of formats from {list(FORMAT_NAMES)}, got {value!r}")
    result = []
    for item in value:
        name = item.value if isinstance(item, VideoFormat) else item
        if not isinstance(name, str) or name.lower() not in FORMAT_NAMES:
            raise CCDMSettingsError("formats", f"unknown format {item!r}; accepted: {', '.join(FORMAT_NAMES)}")
        fmt = VideoFormat(name.lower())
        if fmt not in result:
            result.append(fmt)
    if not result:
        raise CCDMSettingsError("formats", f"choose at least one of {', '.join(FORMAT_NAMES)}")
    return tuple(result)


@dataclasses.dataclass(frozen=True)
class CCDMSettings:
    """What the CCDM script does for a run; the API and the UI pass it as one object, fields by name."""

    enabled: bool = False
    motion_module: str = ""  # a listed name, a file name, a full sha256 or a shorthash; "" = the default module
    frames: int = 16
    fps: float = 8.0
    context_length: int = 16
    context_overlap: int = 4
    closed_loop: bool = False
    formats: Tuple[VideoFormat, ...] = (VideoFormat.MP4,)
    fusion_strength: float = 0.5  # multi-frame fusion of the denoised prediction; 0 = off
    cross_frame_strength: float = 0.5  # cross-frame attention; 0 = off
    fusion_mode: str = FusionMode.TEMPORAL.value
    keyframes: Tuple[Keyframe, ...] = ()  # images as data URLs or base64; not in the infotext
    anchor_first: bool = False  # frame 0 rendered by the plain text-to-image model first, then a keyframe
    camera: str = "auto"  # camera-move guidance: auto (the move the prompt names) | none | zoom-in, pan-left, ...
    camera_strength: float = 1.0  # how strongly frames follow frame 0 along the camera path; 0 = off
    # video to video: the source (a data URL or base64 of the file, never a server path; not in the infotext) and
    # how it is read; with a source, frames 0 and fps 0 mean "what the source gives" (its count, its fps / stride)
    source_video: str = ""
    source_start: int = 0
    source_stride: int = 1
    source_fit: str = "crop"
    denoising_strength: float = DEFAULT_STRENGTH
    keep_audio: bool = True
    # FreeInit (re-sampling from the low frequencies of each result) and frame interpolation of the written clip
    freeinit_iterations: int = 1
    freeinit_filter: str = "butterworth"
    freeinit_spatial: float = 0.25
    freeinit_temporal: float = 0.25
    freeinit_noise: str = "fresh"
    interpolate: int = 1
    motion_loras: Tuple[Tuple[str, float], ...] = ()  # [{"name": file stem, "strength": -2..2}, ...]

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise in place once
        set_(self, "enabled", _bool("enabled", self.enabled))
        set_(self, "motion_module", _str("motion_module", self.motion_module).strip())
        set_(self, "source_video", _source_video(self.source_video))
        set_(self, "frames", _int("frames", self.frames, 0, FRAMES_RANGE[1]))  # 0: all a source video gives
        if self.fps != 0:  # 0: a source video's fps / stride
            set_(self, "fps", _float("fps", self.fps, *FPS_RANGE))
        set_(self, "context_length", _int("context_length", self.context_length, *CONTEXT_RANGE))
        set_(self, "context_overlap", _int("context_overlap", self.context_overlap, 0, CONTEXT_RANGE[1]))
        if self.context_overlap >= self.context_length:
            raise CCDMSettingsError("context_overlap", f"{self.context_overlap} must be smaller than context_length "
                                    f"{self.context_length}; accepted 0..{self.context_length - 1}")
        set_(self, "closed_loop", _bool("closed_loop", self.closed_loop))
        set_(self, "formats", _formats(self.formats))
        set_(self, "fusion_strength", _float("fusion_strength", self.fusion_strength, *STRENGTH_RANGE))
        set_(self, "cross_frame_strength", _float("cross_frame_strength", self.cross_frame_strength, *STRENGTH_RANGE))
        set_(self, "fusion_mode", _fusion_mode(self.fusion_mode))
        set_(self, "keyframes", _keyframes(self.keyframes, self.frames or FRAMES_RANGE[1]))
        set_(self, "anchor_first", _bool("anchor_first", self.anchor_first))
        set_(self, "camera", _camera(self.camera))
        set_(self, "camera_strength", _float("camera_strength", self.camera_strength, *STRENGTH_RANGE))
        set_(self, "source_start", _int("source_start", self.source_start, 0, 10**7))
        set_(self, "source_stride", _int("source_stride", self.source_stride, *STRIDE_RANGE))
        if self.source_fit not in SOURCE_FITS:
            raise CCDMSettingsError("source_fit", f"unknown fit {self.source_fit!r}; accepted: "
                                    f"{', '.join(SOURCE_FITS)}")
        set_(self, "denoising_strength", _float("denoising_strength", self.denoising_strength, *STRENGTH_RANGE))
        set_(self, "keep_audio", _bool("keep_audio", self.keep_audio))
        self.freeinit()  # validates the FreeInit fields by name
        set_(self, "interpolate", _int("interpolate", self.interpolate, *INTERPOLATE_RANGE))
        set_(self, "motion_loras", _motion_loras(self.motion_loras))

    def freeinit(self) -> FreeInitSettings:
        values = {name: getattr(self, f"freeinit_{name}") for name in FREEINIT_FIELDS}
        try:
            return FreeInitSettings(**values)
        except CCDMError as err:
            field = str(err).split(" ", 1)[0]
            raise CCDMSettingsError(field if field.startswith("freeinit_") else "freeinit", str(err)) from None

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: Any, defaults: Optional["CCDMSettings"] = None) -> "CCDMSettings":
        """Parse a settings object (dict, JSON text, None or CCDMSettings); missing fields come from `defaults`."""
        base = defaults if defaults is not None else cls()
        if data is None:
            return base
        if isinstance(data, CCDMSettings):
            return data
        if isinstance(data, str):
            data = _json_object(data)
        if not isinstance(data, Mapping):
            raise CCDMSettingsError("settings", f"must be an object with fields {', '.join(cls.field_names())}, "
                                    f"got {type(data).__name__}")
        fields = _known_fields(data, cls.field_names())
        if fields.get("source_video"):  # a source gives the count and the rate unless they are asked for
            fields = {"frames": 0, "fps": 0, **fields}
        return dataclasses.replace(base, **fields)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able dict by field name, with the schema version."""
        out: Dict[str, Any] = {"schema": SCHEMA_VERSION}
        for name in self.field_names():
            out[name] = getattr(self, name)
        out["formats"] = [f.value for f in self.formats]
        out["keyframes"] = [keyframe_dict(kf) for kf in self.keyframes]
        out["motion_loras"] = [{"name": n, "strength": s} for n, s in self.motion_loras]
        return out

    def context_label(self) -> str:
        return f"{self.context_length}/{self.context_overlap}{'/loop' if self.closed_loop else ''}"

    def camera_move(self, prompt: str = "") -> Optional[str]:
        """The camera move a run with this `prompt` follows (None: off, strength 0, one frame, or no move named in
        the prompt under `auto`), as the standalone `VideoSettings.camera_move`."""
        move = resolve_camera(self.camera, prompt or "")
        return move if self.camera_strength > 0 and self.frames > 1 else None

    def infotext_params(self, motion_label: str, prompt: str = "") -> Dict[str, Any]:
        """The `CCDM ...` infotext entries of a run (motion_label: `name [shorthash]`; prompt: the run's first
        prompt, which names the camera move under `auto`)."""
        out = {KEY_MODULE: motion_label, KEY_FRAMES: self.frames, KEY_FPS: _number_text(self.fps),
               KEY_CONTEXT: self.context_label(), KEY_FUSION: self.fusion_label()}
        if self.keyframes:
            out[KEY_KEYFRAMES] = format_value_schedule({kf.frame: kf.strength for kf in self.keyframes})
            hashes = keyframe_image_hashes(self.keyframes)
            if hashes:
                out[KEY_KEYFRAME_IMAGES] = hashes
        if self.anchor_first:
            out[KEY_ANCHOR_FIRST] = "true"
        out.update(self.camera_params(prompt))
        out.update(freeinit_infotext(self.freeinit()))
        if self.interpolate > 1:
            out[KEY_INTERPOLATE] = self.interpolate
        return out

    def source_params(self, sha256: str) -> Dict[str, Any]:
        """The video-to-video infotext entries of a run whose source file has this sha256."""
        label = f"{sha256[:10]} {self.source_start}/{self.source_stride}/{self.frames}"
        return {KEY_SOURCE: label, KEY_STRENGTH: _number_text(self.denoising_strength)}

    def camera_params(self, prompt: str = "") -> Dict[str, str]:
        """`{KEY_CAMERA: "zoom in 1"}` when camera guidance acts for this prompt, else {}."""
        entry = camera_infotext(self.camera_move(prompt), self.camera_strength)
        return {KEY_CAMERA: text for text in entry.values() if text}

    def fusion_label(self) -> str:
        return f"{self.fusion_strength:g}/{self.cross_frame_strength:g}/{self.fusion_mode}"


def _motion_loras(value: Any) -> Tuple[Tuple[str, float], ...]:
    """`[{"name": ..., "strength": ...}, ...]` (or pairs) -> ((name, strength), ...), by field."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise CCDMSettingsError("motion_loras", f'must be a list of {{"name": ..., "strength": ...}}, got {value!r}')
    out = []
    for item in value:
        name, strength = (item.get("name"), item.get("strength", 1.0)) if isinstance(item, Mapping) else \
            (tuple(item) + (1.0,))[:2] if isinstance(item, (list, tuple)) else (None, None)
        if not isinstance(name, str) or not name.strip():
            raise CCDMSettingsError("motion_loras", f"each entry needs a name (a motion LoRA's file name), got {item!r}")
        out.append((name.strip(), _float("motion_loras", strength, -2.0, 2.0)))
    return tuple(out)


def _source_video(value: Any) -> str:
    """A data URL or base64 text of a video file (checked by its alphabet here, decoded when the run starts)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CCDMSettingsError("source_video", f"must be a data URL or base64 of a video file, got "
                                f"{type(value).__name__}")
    if value and (looks_like_path(value) or not (_DATA_URL.match(value) or _BASE64.match(value[:4096]))):
        raise CCDMSettingsError("source_video", "is neither a data URL nor base64; accepted: a data URL or base64 "
                                "of a video file (a server path is never read)")
    return value


def _fusion_mode(value: Any) -> str:
    name = value.value if isinstance(value, FusionMode) else value
    if not isinstance(name, str) or name.strip().lower() not in FUSION_MODES:
        raise CCDMSettingsError("fusion_mode", f"unknown mode {value!r}; accepted: {', '.join(FUSION_MODES)}")
    return name.strip().lower()


def _camera(value: Any) -> str:
    """A camera choice (`zoom-in`; case, spaces for hyphens and surrounding blanks are forgiven)."""
    name = value.strip().lower().replace(" ", "-") if isinstance(value, str) else value
    if name not in CAMERA_CHOICES:
        raise CCDMSettingsError("camera", f"unknown camera move {value!r}; accepted: {', '.join(CAMERA_CHOICES)}")
    return name


def _keyframes(value: Any, frames: int) -> Tuple[Keyframe, ...]:
    """Keyframes from a JSON list/text or Keyframe objects: inside the clip, one per frame, images as text."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)) and all(isinstance(kf, Keyframe) for kf in value):
        items = list(value)
    else:
        try:
            items = parse_keyframes_json(list(value) if isinstance(value, tuple) else value)
        except CCDMError as err:
            raise CCDMSettingsError("keyframes", str(err)) from None
    for kf in items:
        if kf.image is not None and (not isinstance(kf.image, str) or not kf.image.strip()):
            raise CCDMSettingsError("keyframes", f"keyframe at frame {kf.frame}: image must be a data URL or "
                                    "base64 PNG/JPEG text")
    try:
        return tuple(check_keyframes(items, frames))
    except CCDMError as err:
        raise CCDMSettingsError("keyframes", str(err)) from None


def keyframe_image_hashes(keyframes) -> str:
    """`0:<sha256 first 10 hex>, 12:...` for the keyframes whose image is data (the infotext names images so)."""
    digests = {kf.frame: image_digest(kf.image) for kf in keyframes}
    return ", ".join(f"{frame}:{digest[:10]}" for frame, digest in sorted(digests.items()) if digest)


def keyframe_dict(kf: Keyframe) -> Dict[str, Any]:
    """A keyframe as the JSON object the API and the keyframes textbox use."""
    return {"frame": kf.frame, "image": kf.image, "strength": kf.strength, "prompt": kf.prompt,
            "controlnet": kf.controlnet.to_dict() if kf.controlnet is not None else None}


def _json_object(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as err:
        raise CCDMSettingsError("settings", f"is not valid JSON ({err})") from None


def _known_fields(data: Mapping, names: Tuple[str, ...]) -> Dict[str, Any]:
    unknown = [str(k) for k in data if k not in names and k != "schema"]
    if unknown:
        raise CCDMSettingsError(unknown[0], f"unknown field; accepted fields: {', '.join(names)}")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise CCDMSettingsError("schema", f"unsupported schema version {schema!r}; accepted: {SCHEMA_VERSION}")
    return {k: v for k, v in data.items() if k != "schema"}


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_context(text: str) -> Tuple[int, int, bool]:
    """`16/4` or `16/4/loop` -> (context_length, context_overlap, closed_loop)."""
    m = _CONTEXT.match(str(text))
    if not m:
        raise CCDMSettingsError("context", f"cannot read {text!r}; expected LENGTH/OVERLAP or LENGTH/OVERLAP/loop")
    return int(m.group(1)), int(m.group(2)), bool(m.group(3))


def settings_from_infotext(params: Mapping[str, str], base: Optional[CCDMSettings] = None) -> Optional[CCDMSettings]:
    """Settings from parsed infotext parameters; None when the infotext has no CCDM entries."""
    if KEY_FRAMES not in params and KEY_MODULE not in params:
        return None
    base = base if base is not None else CCDMSettings()
    values: Dict[str, Any] = {"enabled": True}
    if KEY_MODULE in params:
        values["motion_module"] = str(params[KEY_MODULE])
    if KEY_FRAMES in params:
        values["frames"] = _number_from_text("frames", params[KEY_FRAMES])
    if KEY_FPS in params:
        values["fps"] = _number_from_text("fps", params[KEY_FPS])
    if KEY_CONTEXT in params:
        length, overlap, loop = parse_context(params[KEY_CONTEXT])
        values.update(context_length=length, context_overlap=overlap, closed_loop=loop)
    if KEY_FUSION in params:
        values.update(parse_fusion(params[KEY_FUSION]))
    values["anchor_first"] = parse_anchor_first(params)
    values.update(camera_from_infotext(params))
    values.update(source_from_infotext(params))
    values.update(steadier_from_infotext(params))
    values["motion_loras"] = motion_loras_from_infotext(params)
    return dataclasses.replace(base, **values)


def motion_loras_from_infotext(params: Mapping[str, str]) -> Tuple[Tuple[str, float], ...]:
    """`CCDM motion LoRAs: ZoomIn [0123456789]:0.8, PanLeft [...]:1` -> ((name, strength), ...); absent: none."""
    if KEY_MOTION_LORAS not in params:
        return ()
    out = []
    for entry in str(params[KEY_MOTION_LORAS]).split(", "):
        m = _LORA_ENTRY.match(entry)
        if not m:
            raise CCDMSettingsError("motion_loras", f"cannot read {entry!r}; expected NAME [HASH]:STRENGTH")
        out.append((m.group(1), _number_from_text("motion_loras", m.group(3))))
    return tuple(out)


def steadier_from_infotext(params: Mapping[str, str]) -> Dict[str, Any]:
    """FreeInit and interpolation of a CCDM infotext; absent entries mean off (they are written only when on)."""
    values: Dict[str, Any] = {"freeinit_iterations": 1, "interpolate": 1}
    if KEY_FREEINIT in params:
        try:
            parsed = parse_freeinit(params[KEY_FREEINIT])
        except CCDMError as err:
            raise CCDMSettingsError("freeinit", str(err)) from None
        values.update({f"freeinit_{k}": v for k, v in parsed.items() if k in FREEINIT_FIELDS})
    if KEY_INTERPOLATE in params:
        values["interpolate"] = _number_from_text("interpolate", params[KEY_INTERPOLATE])
    return values


def source_from_infotext(params: Mapping[str, str]) -> Dict[str, Any]:
    """The video-to-video options of a `CCDM source` entry (start, stride, frames) and its strength; the video
    itself is not in the infotext and must be given again."""
    if KEY_SOURCE not in params:
        return {}
    try:
        values = parse_source_label(params[KEY_SOURCE])
    except CCDMError as err:
        raise CCDMSettingsError("source", str(err)) from None
    values.pop("source_sha256")
    if KEY_STRENGTH in params:
        values["denoising_strength"] = _number_from_text("denoising_strength", params[KEY_STRENGTH])
    return values


def camera_from_infotext(params: Mapping[str, str]) -> Dict[str, Any]:
    """The camera fields of a CCDM infotext: `CCDM camera: zoom in 1` -> camera `zoom-in` (forced: the move was
    read from the prompt under `auto`, and the pasted prompt may be edited), camera_strength 1. The key is written
    only when camera guidance acted, so a CCDM infotext without it was made without it: camera `none`, and the
    strength is left as it is (it did nothing)."""
    if KEY_CAMERA not in params:
        return {"camera": "none"}
    return parse_camera(params[KEY_CAMERA])


def parse_camera(text: str) -> Dict[str, Any]:
    """`zoom in 1` -> {"camera": "zoom-in", "camera_strength": 1}."""
    m = _CAMERA.match(str(text).lower())
    if not m or m.group(1) not in MOVES:
        raise CCDMSettingsError("camera", f"cannot read {text!r}; expected MOVE STRENGTH, e.g. zoom in 1, with MOVE "
                                f"one of: {', '.join(MOVES)}")
    strength = _number_from_text("camera_strength", m.group(2))
    _float("camera_strength", strength, *STRENGTH_RANGE)
    return {"camera": m.group(1).replace(" ", "-"), "camera_strength": strength}


def parse_anchor_first(params: Mapping[str, str]) -> bool:
    """`CCDM anchor first: true` (absent: off; the key is written only when anchor-first was on)."""
    text = str(params.get(KEY_ANCHOR_FIRST, "false")).strip().lower()
    if text not in ("true", "false"):
        raise CCDMSettingsError("anchor_first", f"cannot read {text!r}; accepted: true, false")
    return text == "true"


def parse_fusion(text: str) -> Dict[str, Any]:
    """`0.5/0.5/temporal` -> fusion_strength, cross_frame_strength, fusion_mode (validated by the settings)."""
    m = _FUSION.match(str(text))
    if not m:
        raise CCDMSettingsError("fusion", f"cannot read {text!r}; expected FUSION/CROSS_FRAME/MODE, e.g. "
                                "0.5/0.5/temporal")
    return {"fusion_strength": _number_from_text("fusion_strength", m.group(1)),
            "cross_frame_strength": _number_from_text("cross_frame_strength", m.group(2)),
            "fusion_mode": m.group(3)}


def keyframe_strengths_from_infotext(params: Mapping[str, str]) -> Dict[int, float]:
    """`CCDM keyframes: 0:(1), 12:(0.6)` -> {frame: strength} (the images are not in the infotext)."""
    if KEY_KEYFRAMES not in params:
        return {}
    try:
        return parse_value_schedule(str(params[KEY_KEYFRAMES]))
    except CCDMError as err:
        raise CCDMSettingsError("keyframes", str(err)) from None


def _number_from_text(field: str, text: Any) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise CCDMSettingsError(field, f"cannot read {text!r} as a number") from None
    return int(value) if value.is_integer() else value


@dataclasses.dataclass(frozen=True)
class Txt2VidRequest:
    """The body of `POST /ccdm/v1/txt2vid` and the txt2vid tab's inputs; `video` holds the settings fields."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    sampler_name: str = "Euler a"
    return_frames: bool = False
    report_per_frame: bool = False  # the response's `report` with its per-pair lists
    video: CCDMSettings = dataclasses.field(default_factory=lambda: CCDMSettings(enabled=True))

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "prompt", _str("prompt", self.prompt))
        set_(self, "negative_prompt", _str("negative_prompt", self.negative_prompt))
        set_(self, "seed", _int("seed", self.seed, *SEED_RANGE))
        set_(self, "steps", _int("steps", self.steps, *STEPS_RANGE))
        set_(self, "cfg_scale", _float("cfg_scale", self.cfg_scale, *CFG_RANGE))
        for name in ("width", "height"):
            value = _int(name, getattr(self, name), *SIZE_RANGE)
            if value % 8:
                low, high = SIZE_RANGE
                raise CCDMSettingsError(name, f"{value} is not a multiple of 8; accepted {low}..{high} in steps of 8")
            set_(self, name, value)
        set_(self, "sampler_name", _str("sampler_name", self.sampler_name).strip())
        set_(self, "return_frames", _bool("return_frames", self.return_frames))
        set_(self, "report_per_frame", _bool("report_per_frame", self.report_per_frame))
        if not isinstance(self.video, CCDMSettings):
            raise CCDMSettingsError("video", "must be CCDMSettings")

    @classmethod
    def from_dict(cls, data: Any, defaults: Optional[CCDMSettings] = None) -> "Txt2VidRequest":
        """Parse the API body: the request fields plus the settings fields, all by name; unknown fields refused."""
        if isinstance(data, str):
            data = _json_object(data)
        if not isinstance(data, Mapping):
            raise CCDMSettingsError("body", f"must be a JSON object, got {type(data).__name__}")
        own = [f.name for f in dataclasses.fields(cls) if f.name != "video"]
        names = tuple(own) + CCDMSettings.field_names()
        fields = _known_fields(data, names)
        video_fields = {k: v for k, v in fields.items() if k in CCDMSettings.field_names()}
        video_fields["enabled"] = True  # the route always makes a video
        video = CCDMSettings.from_dict(video_fields, defaults)
        return cls(video=video, **{k: v for k, v in fields.items() if k in own})

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "video"}
        out.update(self.video.to_dict())
        return out
