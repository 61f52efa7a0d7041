"""Gradio 3.41 UI: the CCDM accordion of the always-on script, the motion-module picker, the settings section."""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gradio as gr

from ..camera import CAMERA_CHOICES
from . import env
from .discovery import label_hash
from .motion_lora_ui import LORA_FIELDS, lora_infotext_fields, lora_values, motion_lora_controls
from .source_ui import settings_from_source_controls, source_controls, source_infotext_fields, wire_preview
from .steady_ui import STEADY_FIELDS, steady_controls, steady_infotext_fields, steady_values
from .settings import (CONTEXT_RANGE, FORMAT_NAMES, FPS_RANGE, FRAMES_RANGE, FUSION_MODES, KEY_CAMERA, KEY_CONTEXT,
                       KEY_FPS, KEY_FRAMES, KEY_FUSION, KEY_MODULE, STRENGTH_RANGE, CCDMSettings, CCDMSettingsError,
                       camera_from_infotext, parse_anchor_first, parse_camera, parse_context, parse_fusion)

FORMAT_CHOICES = [("MP4", "mp4"), ("GIF", "gif"), ("WebM", "webm"), ("WebP", "webp"), ("PNG (animated)", "png")]
CONTEXT_SLIDER_MAX = 64
REFRESH_SYMBOL = "\U0001f504"
# Controls whose value lives in the settings object; they must not be reset from ui-config.json behind its back.
CONTROL_FIELDS = ("enabled", "motion_module", "frames", "fps", "context_length", "context_overlap", "closed_loop",
                  "formats", "fusion_strength", "cross_frame_strength", "fusion_mode", "keyframes", "anchor_first",
                  "camera", "camera_strength", "source_start", "source_stride", "source_fit", "denoising_strength",
                  "keep_audio") + STEADY_FIELDS + LORA_FIELDS
FUSION_FIELDS = ("fusion_strength", "cross_frame_strength", "fusion_mode")
CAMERA_FIELDS = ("camera", "camera_strength")
KEYFRAMES_PLACEHOLDER = '[{"frame": 0, "image": "data:image/png;base64,...", "strength": 1.0, "prompt": null}]'


def module_labels(refresh: bool = False) -> List[str]:
    from . import runtime

    return [entry.label for entry in runtime.list_modules(refresh)]


def _missing_html(labels: Sequence[str]) -> str:
    if labels:
        return ""
    from . import runtime

    return f"<p class='ccdm-missing'>CCDM: {runtime.missing_message()}</p>"


def _fit_html(labels: Sequence[str]) -> str:
    """Which listed modules do not fit the loaded checkpoint (an SD1.x module with SDXL loaded, or the reverse):
    they stay listed and are refused by name if picked. Asked on refresh (it reads each module once)."""
    from modules import shared

    from ..motion import BASES
    from . import runtime
    from .patches import model_base

    base = model_base(shared.sd_model)
    misfit = [e.label for e in runtime.list_modules() if e.label in labels and runtime.module_family(e) not in
              (None, base)]
    if not misfit:
        return ""
    return (f"<p class='ccdm-misfit'>Not for the loaded {BASES[base]} checkpoint (listed; refused if picked): "
            f"{', '.join(misfit)}</p>")


def default_module_label(labels: Sequence[str]) -> Optional[str]:
    wanted = str(env.opt("ccdm_default_motion_module") or "")
    digest = label_hash(wanted)
    for label in labels:
        if label == wanted or (digest and label_hash(label) == digest):
            return label
    return labels[0] if labels else None


def module_picker(elem_prefix: str) -> Tuple[gr.Dropdown, gr.Button, gr.HTML]:
    """Dropdown of `name [shorthash]`, a refresh button, and a message saying where to put a module."""
    labels = module_labels()
    with gr.Row():
        dropdown = gr.Dropdown(label="Motion module", choices=labels, value=default_module_label(labels),
                               elem_id=f"{elem_prefix}_motion_module", scale=6)
        refresh = gr.Button(value=REFRESH_SYMBOL, elem_id=f"{elem_prefix}_refresh", elem_classes=["tool"], scale=1,
                            min_width=40)
    message = gr.HTML(value=_missing_html(labels), visible=not labels, elem_id=f"{elem_prefix}_missing")

    def on_refresh(current):
        fresh = module_labels(refresh=True)
        value = current if current in fresh else default_module_label(fresh)
        note = _missing_html(fresh) or _fit_html(fresh)
        return gr.update(choices=fresh, value=value), gr.update(value=note, visible=bool(note))

    refresh.click(fn=on_refresh, inputs=[dropdown], outputs=[dropdown, message], show_progress=False)
    return dropdown, refresh, message


def video_controls(elem_prefix: str, defaults: CCDMSettings) -> Dict[str, Any]:
    """frames, fps, context length/overlap/closed loop and formats, keyed by settings field."""
    c: Dict[str, Any] = {}
    with gr.Row():
        c["frames"] = gr.Slider(minimum=0, maximum=FRAMES_RANGE[1], step=1, value=defaults.frames,
                                label="Frames (0: all a source video gives)", elem_id=f"{elem_prefix}_frames")
        c["fps"] = gr.Number(value=defaults.fps, label="FPS", minimum=FPS_RANGE[0], maximum=FPS_RANGE[1],
                             elem_id=f"{elem_prefix}_fps")
    with gr.Row():
        c["context_length"] = gr.Slider(minimum=CONTEXT_RANGE[0], maximum=CONTEXT_SLIDER_MAX, step=1,
                                        value=defaults.context_length, label="Context length",
                                        elem_id=f"{elem_prefix}_context_length")
        c["context_overlap"] = gr.Slider(minimum=0, maximum=CONTEXT_SLIDER_MAX - 1, step=1,
                                         value=defaults.context_overlap, label="Context overlap",
                                         elem_id=f"{elem_prefix}_context_overlap")
        c["closed_loop"] = gr.Checkbox(value=defaults.closed_loop, label="Closed loop",
                                       elem_id=f"{elem_prefix}_closed_loop")
    c["formats"] = gr.CheckboxGroup(choices=FORMAT_CHOICES, value=[f.value for f in defaults.formats],
                                    label="Formats", elem_id=f"{elem_prefix}_formats")
    c.update(fusion_controls(elem_prefix, defaults))
    return c


def fusion_controls(elem_prefix: str, defaults: CCDMSettings) -> Dict[str, Any]:
    """Fusion and cross-frame strengths, the fusion mode, the camera move, anchor-first, and the keyframes (JSON
    list; images as data URLs)."""
    c: Dict[str, Any] = {}
    with gr.Row():
        c["fusion_strength"] = gr.Slider(minimum=0.0, maximum=1.0, step=0.05, value=defaults.fusion_strength,
                                         label="Fusion strength (0 = off)", elem_id=f"{elem_prefix}_fusion_strength")
        c["cross_frame_strength"] = gr.Slider(minimum=0.0, maximum=1.0, step=0.05,
                                              value=defaults.cross_frame_strength,
                                              label="Cross-frame attention (0 = off)",
                                              elem_id=f"{elem_prefix}_cross_frame_strength")
        c["fusion_mode"] = gr.Dropdown(label="Fusion mode", choices=list(FUSION_MODES), value=defaults.fusion_mode,
                                       elem_id=f"{elem_prefix}_fusion_mode")
    c.update(camera_controls(elem_prefix, defaults))
    c.update(motion_lora_controls(elem_prefix, defaults))
    c.update(steady_controls(elem_prefix, defaults))
    c["anchor_first"] = gr.Checkbox(value=defaults.anchor_first, label="Anchor first (render frame 0 with the plain "
                                    "text-to-image model, then animate from it)", elem_id=f"{elem_prefix}_anchor_first")
    c["keyframes"] = gr.Textbox(label="Keyframes (JSON: frame, image as data URL or base64, strength, prompt)",
                                lines=2, value=_keyframes_text(defaults), placeholder=KEYFRAMES_PLACEHOLDER,
                                elem_id=f"{elem_prefix}_keyframes")
    c["keyframes"].do_not_save_to_config = True  # images are large: never into ui-config.json
    return c


def camera_controls(elem_prefix: str, defaults: CCDMSettings) -> Dict[str, Any]:
    """The camera move (auto: the move the prompt names, e.g. "camera zooms in") and how strongly frames follow it."""
    c: Dict[str, Any] = {}
    with gr.Row():
        c["camera"] = gr.Dropdown(label="Camera move (auto: read from the prompt)", choices=list(CAMERA_CHOICES),
                                  value=defaults.camera, elem_id=f"{elem_prefix}_camera")
        c["camera_strength"] = gr.Slider(minimum=STRENGTH_RANGE[0], maximum=STRENGTH_RANGE[1], step=0.05,
                                         value=defaults.camera_strength, label="Camera strength (0 = off)",
                                         elem_id=f"{elem_prefix}_camera_strength")
    return c


def _keyframes_text(settings: CCDMSettings) -> str:
    data = settings.to_dict()["keyframes"]
    return json.dumps(data) if data else ""


def settings_from_controls(values: Dict[str, Any]) -> Dict[str, Any]:
    """The settings object from control values (typed, not yet validated: a run reports bad combinations)."""
    out = dict(values)
    for name in ("frames", "context_length", "context_overlap"):
        if isinstance(out.get(name), float) and out[name].is_integer():
            out[name] = int(out[name])
    if out.get("fps") is not None:
        out["fps"] = float(out["fps"])
    out["enabled"] = bool(out.get("enabled"))
    out["closed_loop"] = bool(out.get("closed_loop"))
    if "anchor_first" in out:
        out["anchor_first"] = bool(out["anchor_first"])
    out["motion_module"] = out.get("motion_module") or ""
    out["formats"] = [f for f in (out.get("formats") or []) if f in FORMAT_NAMES]
    for name in ("fusion_strength", "cross_frame_strength", "camera_strength"):
        if isinstance(out.get(name), int) and not isinstance(out[name], bool):
            out[name] = float(out[name])
    if "keyframes" in out:
        out["keyframes"] = out["keyframes"] or ""  # JSON text; the settings parse and check it
    out.update(settings_from_source_controls(out))
    out.update(steady_values(out))
    out.update(lora_values(out))
    return out


def pasted_module(params: Dict[str, str]):
    """Infotext -> the listed module whose hash matches `CCDM motion module: name [hash]` (else the name)."""
    text = params.get(KEY_MODULE)
    if not text:
        return gr.update()
    labels = module_labels()
    digest = label_hash(text)
    for label in labels:
        if label == text or (digest and label_hash(label) and label_hash(label).startswith(digest)):
            return label
    if not digest:
        return gr.update()
    fresh = module_labels(refresh=True)
    match = [label for label in fresh if label_hash(label) and label_hash(label).startswith(digest)]
    return gr.update(choices=fresh, value=match[0]) if match else gr.update()


def _pasted_part(key: str, parse: Callable[[str], Any], part: Any):
    """Reader of one part of the infotext entry `key` (absent or unreadable: the control is left as it is)."""
    def read(params: Dict[str, str]):
        if key not in params:
            return gr.update()
        try:
            return parse(params[key])[part]
        except CCDMSettingsError:
            return gr.update()
    return read


def _pasted_context(index: int):
    """Reader of `CCDM context: 16/4/loop` for its length (0), overlap (1) or closed loop (2)."""
    return _pasted_part(KEY_CONTEXT, parse_context, index)


def pasted_fusion(field: str):
    """Reader of `CCDM fusion: 0.5/0.5/temporal` for one of its fields (absent: the control is left as it is)."""
    return _pasted_part(KEY_FUSION, parse_fusion, field)


def pasted_anchor_first(params: Dict[str, str]):
    """`CCDM anchor first: true`; off when the infotext has CCDM entries without it; else the control is left."""
    if KEY_FRAMES not in params and KEY_MODULE not in params:
        return gr.update()
    try:
        return parse_anchor_first(params)
    except CCDMSettingsError:
        return gr.update()


def pasted_camera(params: Dict[str, str]):
    """`CCDM camera: zoom in 1` -> `zoom-in` (the move the run followed, forced). The key is written only when camera
    guidance acted, so an infotext with CCDM entries but without it was made without it -> `none` (that reproduces
    the clip; `auto` would follow a move its prompt names at a strength that was 0). Without CCDM entries the
    infotext says nothing about CCDM: the control is left as it is, as it is when the entry cannot be read."""
    if KEY_FRAMES not in params and KEY_MODULE not in params:
        return gr.update()
    try:
        return camera_from_infotext(params)["camera"]
    except CCDMSettingsError:
        return gr.update()


def pasted_camera_strength(params: Dict[str, str]):
    """The strength of `CCDM camera: zoom in 0.5`; absent (guidance off): the slider is left as it is."""
    return _pasted_part(KEY_CAMERA, parse_camera, "camera_strength")(params)


def infotext_fields(controls: Dict[str, Any]) -> List[Tuple[Any, Any]]:
    """(component, infotext key or reader) pairs for the WebUI's paste and PNG Info (keyframe images are not in
    the infotext, so the keyframes box is not pasted)."""
    fields = [(controls["motion_module"], pasted_module), (controls["frames"], KEY_FRAMES), (controls["fps"], KEY_FPS),
              (controls["context_length"], _pasted_context(0)), (controls["context_overlap"], _pasted_context(1)),
              (controls["closed_loop"], _pasted_context(2))]
    fields += [(controls[name], pasted_fusion(name)) for name in FUSION_FIELDS if name in controls]
    if "anchor_first" in controls:
        fields.append((controls["anchor_first"], pasted_anchor_first))
    readers = {"camera": pasted_camera, "camera_strength": pasted_camera_strength}
    fields += [(controls[name], readers[name]) for name in CAMERA_FIELDS if name in controls]
    fields += steady_infotext_fields(controls)
    if "source_start" in controls:
        fields += source_infotext_fields(controls)
    fields += lora_infotext_fields(controls)
    if "enabled" in controls:
        fields.insert(0, (controls["enabled"], lambda d: KEY_FRAMES in d or KEY_MODULE in d))
    return fields


def build_script_ui(script, is_img2img: bool) -> List[Any]:
    """The CCDM accordion; returns [settings State] so the API passes one settings object by field name."""
    defaults = env.default_settings()
    prefix = script.elem_id("ccdm")
    with gr.Accordion("CCDM", open=False, elem_id=prefix):
        controls: Dict[str, Any] = {}
        controls["enabled"] = gr.Checkbox(value=False, label="Enable CCDM (each batch becomes a video; batch size "
                                          "= frames)", elem_id=f"{prefix}_enabled")
        controls["motion_module"], _, _ = module_picker(prefix)
        controls.update(video_controls(prefix, defaults))
        controls.update(source_controls(prefix, defaults, with_strength=False))
        gr.HTML("<p>img2img: the init image becomes the first frame of every video; a video source replaces it, one "
                "init frame per frame (the img2img denoising strength applies), and drives the enabled ControlNet "
                "units without an image of their own, frame by frame.</p>" if is_img2img else
                "<p>A video source drives the enabled ControlNet units without an image of their own, frame by "
                "frame; for init frames use img2img or the txt2vid tab.</p>")
        state = gr.State(value=_state_default(defaults, controls["motion_module"].value))
    _bind_state(controls, state)
    wire_preview(controls, controls["frames"])
    script.infotext_fields = infotext_fields(controls)
    return [state, controls["source_upload"]]


def _state_default(defaults: CCDMSettings, module_label: Optional[str]) -> Dict[str, Any]:
    data = defaults.to_dict()
    data["motion_module"] = module_label or ""
    return data


def _bind_state(controls: Dict[str, Any], state: gr.State) -> None:
    """Every control change rebuilds the whole settings object (so event order does not matter)."""
    names = [n for n in CONTROL_FIELDS if n in controls]
    components = [controls[n] for n in names]
    for component in components:
        component.do_not_save_to_config = True

    def collect(*values):
        return settings_from_controls(dict(zip(names, values)))

    for component in components:
        component.change(fn=collect, inputs=components, outputs=[state], show_progress=False)


def register_settings() -> None:
    """The "CCDM" section of the WebUI's settings."""
    from modules import shared

    section = env.SECTION
    options = {
        "ccdm_default_formats": shared.OptionInfo(
            env.OPTION_DEFAULTS["ccdm_default_formats"], "Default output formats", gr.CheckboxGroup,
            {"choices": FORMAT_CHOICES}, section=section),
        "ccdm_save_frames": shared.OptionInfo(False, "Also save every frame as a PNG with infotext", section=section),
        "ccdm_default_motion_module": shared.OptionInfo(
            "", "Default motion module", gr.Dropdown, lambda: {"choices": [""] + module_labels()},
            section=section),
        "ccdm_keep_module_in_memory": shared.OptionInfo(True, "Keep the motion module in memory between runs",
                                                        section=section),
        "ccdm_outdir": shared.OptionInfo(env.OPTION_DEFAULTS["ccdm_outdir"], "Output folder for txt2vid videos",
                                         section=section),
        "ccdm_source_max_mb": shared.OptionInfo(env.OPTION_DEFAULTS["ccdm_source_max_mb"],
                                                "Video to video: largest source video read (MB)", gr.Number,
                                                {"minimum": 1}, section=section),
        "ccdm_report": shared.OptionInfo(True, "Consistency report after each clip (warp error, flicker, motion)",
                                         section=section),
        "ccdm_report_json": shared.OptionInfo(False, "Also save the report as <clip>.report.json", section=section),
        "ccdm_camera_strength_with_lora": shared.OptionInfo(
            env.OPTION_DEFAULTS["ccdm_camera_strength_with_lora"], "Camera strength when a motion LoRA makes the "
            "camera move the prompt names (0 = the LoRA alone moves the camera)", gr.Slider,
            {"minimum": 0.0, "maximum": 1.0, "step": 0.05}, section=section),
    }
    for key, info in options.items():
        shared.opts.add_option(key, info)
