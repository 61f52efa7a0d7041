"""The txt2vid tab: prompt, sampling and video controls, Generate/Interrupt/Skip, progress, video and frames."""
from __future__ import annotations

import html
from typing import Any, Dict, List

import gradio as gr

from ..infotext import parse_infotext
from . import env, timeline
from .controlnet import controlnet_options_json
from .settings import (KEY_CAMERA, KEY_FREEINIT, KEY_FUSION, KEY_SOURCE, SIZE_RANGE, CCDMSettingsError, Txt2VidRequest,
                       settings_from_infotext)
from .reporting import report_html, report_image
from .motion_lora_ui import LORA_FIELDS, lcm_hint, lora_control_values
from .steady_ui import STEADY_FIELDS
from .source_ui import SOURCE_FIELDS, pasted_source_note, source_controls, wire_preview
from .ui import FUSION_FIELDS, module_picker, pasted_module, settings_from_controls, video_controls

TAB_ID = "ccdm_txt2vid"
DEFAULT_SAMPLER = "Euler a"
# Starts the WebUI's progress bar and live preview for this tab's task id (progressbar.js: requestProgress).
SUBMIT_JS = """function() {
    var id = randomId();
    requestProgress(id, gradioApp().getElementById('ccdm_txt2vid_gallery_container'),
                    gradioApp().getElementById('ccdm_txt2vid_gallery'), function() {});
    var res = Array.from(arguments);
    res[0] = id;
    return res;
}"""
REQUEST_FIELDS = ("prompt", "negative_prompt", "sampler_name", "steps", "cfg_scale", "width", "height", "seed")
VIDEO_FIELDS = ("motion_module", "frames", "fps", "context_length", "context_overlap", "closed_loop", "formats",
                "fusion_strength", "cross_frame_strength", "fusion_mode", "anchor_first", "camera", "camera_strength",
                "keyframes", "source_start", "source_stride", "source_fit", "denoising_strength", "keep_audio"
                ) + STEADY_FIELDS + LORA_FIELDS


def _prompt_column() -> Dict[str, Any]:
    c: Dict[str, Any] = {}
    with gr.Row(elem_id=f"{TAB_ID}_toprow"):
        with gr.Column(scale=6):
            c["prompt"] = gr.Textbox(label="Prompt", lines=3, elem_id=f"{TAB_ID}_prompt",
                                     placeholder="Prompt (paste infotext here and press the paste button)")
            c["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{TAB_ID}_neg_prompt")
        with gr.Column(scale=1, min_width=160):
            c["generate"] = gr.Button("Generate", variant="primary", elem_id=f"{TAB_ID}_generate")
            with gr.Row():
                c["interrupt"] = gr.Button("Interrupt", elem_id=f"{TAB_ID}_interrupt")
                c["skip"] = gr.Button("Skip", elem_id=f"{TAB_ID}_skip")
            c["paste"] = gr.Button("\u2199\ufe0f Paste infotext", elem_id=f"{TAB_ID}_paste")
    return c


def _sampling_controls() -> Dict[str, Any]:
    c: Dict[str, Any] = {}
    names = env.sampler_names()
    default = DEFAULT_SAMPLER if DEFAULT_SAMPLER in names else (names[0] if names else None)
    c["sampler_name"] = gr.Dropdown(label="Sampling method", choices=names, value=default,
                                    elem_id=f"{TAB_ID}_sampler")
    c["sampler_hint"] = lcm_hint(c["sampler_name"])
    c["steps"] = gr.Slider(minimum=1, maximum=150, step=1, value=20, label="Sampling steps", elem_id=f"{TAB_ID}_steps")
    c["cfg_scale"] = gr.Slider(minimum=1.0, maximum=30.0, step=0.5, value=7.0, label="CFG Scale",
                               elem_id=f"{TAB_ID}_cfg_scale")
    with gr.Row():
        c["width"] = gr.Slider(minimum=SIZE_RANGE[0], maximum=SIZE_RANGE[1], step=8, value=512, label="Width",
                               elem_id=f"{TAB_ID}_width")
        c["height"] = gr.Slider(minimum=SIZE_RANGE[0], maximum=SIZE_RANGE[1], step=8, value=512, label="Height",
                                elem_id=f"{TAB_ID}_height")
    c["seed"] = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id=f"{TAB_ID}_seed")
    return c


def _output_column() -> Dict[str, Any]:
    c: Dict[str, Any] = {}
    with gr.Column(variant="panel", elem_id=f"{TAB_ID}_results"):
        with gr.Group(elem_id=f"{TAB_ID}_gallery_container"):
            c["video"] = gr.Video(label="Video", interactive=False, elem_id=f"{TAB_ID}_video")
            c["gallery"] = gr.Gallery(label="Frames", elem_id=f"{TAB_ID}_gallery", columns=8, preview=False)
        c["infotext"] = gr.Textbox(label="Infotext", lines=3, interactive=False, elem_id=f"{TAB_ID}_infotext")
        c["html_info"] = gr.HTML(elem_id=f"html_info_{TAB_ID}")
        with gr.Group(elem_id=f"{TAB_ID}_report"):  # how steady the clip is, and where it jumps
            c["report_html"] = gr.HTML(elem_id=f"{TAB_ID}_report_html")
            c["report_plot"] = gr.Image(label="Change between frames (warp error per pair)", interactive=False,
                                        elem_id=f"{TAB_ID}_report_plot")
    return c


def build_tab() -> gr.Blocks:
    """The txt2vid tab (for `on_ui_tabs`)."""
    with gr.Blocks(analytics_enabled=False) as tab:
        c = _prompt_column()
        with gr.Row():
            with gr.Column(variant="compact"):
                c.update(_sampling_controls())
                c["motion_module"], _, _ = module_picker(TAB_ID)
                c.update(video_controls(TAB_ID, env.default_settings()))
                _take_out(c.pop("keyframes"))  # the tab edits keyframes on the timeline below
                c.update(source_controls(TAB_ID, env.default_settings()))
            c.update(_output_column())
        panel = timeline.timeline_panel(f"{TAB_ID}_frames", f"{TAB_ID}_fps", f"{TAB_ID}_gallery",
                                        controlnet_options=controlnet_options_json)  # evaluated at page load
        c["keyframes"], c["timeline_status"] = panel["state"], panel["status"]  # the hidden JSON feeds the setting
        c["id_task"] = gr.Textbox(visible=False, elem_id=f"{TAB_ID}_id_task")
        _wire(c)
    return tab


def _take_out(component) -> None:
    """Remove a component built by a shared layout function from this tab's layout and blocks."""
    if component.parent is not None and component in component.parent.children:
        component.parent.children.remove(component)
    component.unrender()


def _wire(c: Dict[str, Any]) -> None:
    from modules import shared
    from modules.call_queue import wrap_gradio_gpu_call

    wire_preview(c, c["frames"])
    inputs = [c["id_task"]] + [c[n] for n in REQUEST_FIELDS + VIDEO_FIELDS] + [c["source_upload"]]
    # the WebUI's error wrapper puts its message into the last output: html_info stays last
    outputs = [c["video"], c["gallery"], c["infotext"], c["report_html"], c["report_plot"], c["html_info"]]
    c["generate"].click(fn=wrap_gradio_gpu_call(generate, extra_outputs=[None, None, "", "", None]), _js=SUBMIT_JS,
                        inputs=inputs, outputs=outputs, show_progress=False)
    c["interrupt"].click(fn=lambda: shared.state.interrupt(), inputs=[], outputs=[])
    c["skip"].click(fn=lambda: shared.state.skip(), inputs=[], outputs=[])
    paste_targets = [c[n] for n in REQUEST_FIELDS + VIDEO_FIELDS] + [c["timeline_status"], c["source_preview"]]
    c["paste"].click(fn=paste_with_timeline, inputs=[c["prompt"], c["keyframes"]], outputs=paste_targets,
                     show_progress=False)


def request_from_inputs(values: List[Any]) -> Txt2VidRequest:
    """The tab's input values (REQUEST_FIELDS then VIDEO_FIELDS) as a validated request."""
    data = dict(zip(REQUEST_FIELDS + VIDEO_FIELDS, values))
    video = settings_from_controls({k: data.pop(k) for k in VIDEO_FIELDS})
    for name in ("steps", "width", "height", "seed"):
        if isinstance(data.get(name), float) and data[name].is_integer():
            data[name] = int(data[name])
    if data.get("cfg_scale") is not None:
        data["cfg_scale"] = float(data["cfg_scale"])
    data["sampler_name"] = data.get("sampler_name") or ""
    video.pop("enabled", None)
    return Txt2VidRequest.from_dict({**data, **video})


def generate(id_task: str, *values):
    """Generate button (runs inside the WebUI's queue); returns video, frames, infotext, the consistency report
    (panel and plot), html. The last value is
    the "Video source" upload (video to video when a file is there)."""
    from . import runtime

    *values, upload = values
    request = request_from_inputs(list(values))
    keyframes = values[(REQUEST_FIELDS + VIDEO_FIELDS).index("keyframes")]
    timeline.parse_timeline_state(keyframes, request.video.frames or 1024)  # names a broken image before the run
    result = runtime.run_txt2vid(request, upload)
    return (_playable(result), result.images, result.info, report_html(result.report), report_image(result.report),
            _summary_html(result))


def _playable(result) -> Any:
    for clip in result.clips:
        for fmt in ("mp4", "webm"):
            if fmt in clip.videos:
                return str(clip.videos[fmt])
    return None


def _summary_html(result) -> str:
    if not result.clips:
        why = "interrupted" if result.interrupted else "nothing to write"
        return f"<p>CCDM: {why}; no video written (Settings > Saving images: save incomplete images).</p>"
    files = [str(p) for clip in result.clips for p in clip.videos.values()]
    return "<p>" + "<br>".join(html.escape(f"CCDM wrote {path}") for path in files) + "</p>"


def paste_with_timeline(text: str, current_keyframes: str):
    """Paste button of the tab: `paste`, then the timeline's keyframes (positions, strengths, and the images of
    the current timeline whose hash the infotext names), then the timeline's status line."""
    out = paste(text)
    keyframes, status = timeline.pasted_keyframes(text, current_keyframes)
    if keyframes is not None:
        out[(REQUEST_FIELDS + VIDEO_FIELDS).index("keyframes")] = gr.update(value=keyframes)
    return out + [status, pasted_source_note(parse_infotext(text or "")[2])]


def paste(text: str):
    """Paste button: fill the tab from infotext; the motion module is selected by its hash."""
    prompt, negative, params = parse_infotext(text or "")
    size = str(params.get("Size", ""))
    width, _, height = size.partition("x")
    values = {"prompt": prompt or gr.update(), "negative_prompt": negative, "sampler_name": params.get("Sampler"),
              "steps": params.get("Steps"), "cfg_scale": params.get("CFG scale"), "seed": params.get("Seed"),
              "width": width or None, "height": height or None}
    numbers = {"steps": int, "cfg_scale": float, "seed": int, "width": int, "height": int}
    for name, kind in numbers.items():
        try:
            values[name] = kind(float(values[name])) if values[name] not in (None, "") else None
        except ValueError:
            values[name] = None
    try:
        settings = settings_from_infotext(params) if params else None
    except CCDMSettingsError:
        settings = None
    video: Dict[str, Any] = {}
    if settings is not None:
        video = settings.to_dict()
        video["formats"] = None  # formats are a choice of this machine, not of the clip
        video["keyframes"] = None  # keyframe images are not in the infotext
        video["motion_module"] = pasted_module(params)
        if KEY_FUSION not in params:
            video.update(dict.fromkeys(FUSION_FIELDS))  # older clips: leave the fusion controls as they are
        if KEY_CAMERA not in params:
            video["camera_strength"] = None  # camera guidance was off (camera: none): the strength did nothing
        if KEY_SOURCE not in params:  # text to video: the source controls are left as they are
            video.update(dict.fromkeys(SOURCE_FIELDS))
        video.update(lora_control_values(settings.motion_loras))  # none when the CCDM infotext names none
        if KEY_FREEINIT not in params:  # FreeInit was off: 1 iteration, its other controls left as they are
            video.update(dict.fromkeys(f for f in STEADY_FIELDS if f not in ("interpolate", "freeinit_iterations")))
    out = [values.get(n) for n in REQUEST_FIELDS] + [video.get(n) for n in VIDEO_FIELDS]
    return [gr.update() if v is None else (v if isinstance(v, dict) else gr.update(value=v)) for v in out]
