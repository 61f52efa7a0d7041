"""The "Video source" controls (video to video) of the txt2vid tab and the img2img accordion, and their preview."""
from __future__ import annotations

import html
from typing import Any, Dict, List, Tuple

import gradio as gr

from ..errors import CCDMError
from ..init_frames import parse_source_label
from .settings import KEY_SOURCE, SOURCE_FITS, STRIDE_RANGE, CCDMSettings

SOURCE_FIELDS = ("source_start", "source_stride", "source_fit", "denoising_strength", "keep_audio")
PREVIEW_SIZE = 160  # thumbnails of the first and last frames used, fitted as the run will fit them
FILE_TYPES = ["video", ".gif", ".webp", ".png", ".mkv", ".webm", ".mov"]


def source_controls(elem_prefix: str, defaults: CCDMSettings, with_strength: bool = True) -> Dict[str, Any]:
    """Upload, start, stride, fit, strength (img2img has its own), keep audio, and the preview; keyed by field."""
    c: Dict[str, Any] = {}
    with gr.Accordion("Video source (video to video)", open=False, elem_id=f"{elem_prefix}_source"):
        c["source_upload"] = gr.File(label="Video source (mp4, webm, mov, mkv, gif, webp, png)", type="file",
                                     file_types=FILE_TYPES, elem_id=f"{elem_prefix}_source_video")
        with gr.Row():
            c["source_start"] = gr.Number(value=defaults.source_start, precision=0, minimum=0,
                                          label="Source start (first frame)", elem_id=f"{elem_prefix}_source_start")
            c["source_stride"] = gr.Number(value=defaults.source_stride, precision=0, minimum=STRIDE_RANGE[0],
                                           maximum=STRIDE_RANGE[1], label="Source stride (every n-th frame)",
                                           elem_id=f"{elem_prefix}_source_stride")
            c["source_fit"] = gr.Radio(choices=list(SOURCE_FITS), value=defaults.source_fit,
                                       label="Fit (crop: cover and centre-crop; pad: letterbox)",
                                       elem_id=f"{elem_prefix}_source_fit")
        with gr.Row():
            if with_strength:
                c["denoising_strength"] = gr.Slider(minimum=0.0, maximum=1.0, step=0.01,
                                                    value=defaults.denoising_strength,
                                                    label="Denoising strength (1 = ignore the source's pixels)",
                                                    elem_id=f"{elem_prefix}_denoising_strength")
            c["keep_audio"] = gr.Checkbox(value=defaults.keep_audio, label="Keep the source's audio (MP4, WebM)",
                                          elem_id=f"{elem_prefix}_keep_audio")
        c["source_preview"] = gr.HTML(elem_id=f"{elem_prefix}_source_preview")
        c["source_thumbs"] = gr.Gallery(label="First and last frame used", columns=2, height=PREVIEW_SIZE + 40,
                                        preview=False, elem_id=f"{elem_prefix}_source_thumbs")
    for name in ("source_upload", "source_preview", "source_thumbs"):
        c[name].do_not_save_to_config = True
    return c


def wire_preview(c: Dict[str, Any], frames_control) -> None:
    """The preview follows the upload and the options that change which frames are used. A new upload takes all
    the frames the source gives (frames 0) unless the user then sets a count; one event does both, so the preview
    never shows the previous count."""
    outputs = [c["source_preview"], c["source_thumbs"]]
    options = [c["source_start"], c["source_stride"], frames_control, c["source_fit"]]
    c["source_upload"].upload(fn=preview_new_upload, inputs=[c["source_upload"], c["source_start"],
                                                              c["source_stride"], c["source_fit"]],
                              outputs=[frames_control] + outputs, show_progress=False)
    c["source_upload"].clear(fn=lambda: ("", []), inputs=[], outputs=outputs, show_progress=False)
    for control in options:
        control.change(fn=preview_source, inputs=[c["source_upload"]] + options, outputs=outputs,
                       show_progress=False)


def preview_new_upload(upload: Any, source_start: Any, source_stride: Any, source_fit: Any):
    """A new upload: frames 0 (all the source gives) and the preview of that."""
    return (0, *preview_source(upload, source_start, source_stride, 0, source_fit))


def preview_source(upload: Any, source_start: Any, source_stride: Any, frames: Any,
                   source_fit: Any) -> Tuple[str, List[Any]]:
    """What a run will take from the upload: count, fps, source size and rate, first and last thumbnail."""
    from .video_source import upload_path

    path = upload_path(upload)
    if path is None:
        return "", []
    from ..sources import SourceOptions, read_source

    try:
        options = SourceOptions(source_start=int(source_start or 0), source_stride=int(source_stride or 1),
                                frames=int(frames) if frames else None, source_fit=str(source_fit or "crop"))
        clip = read_source(path, PREVIEW_SIZE, PREVIEW_SIZE, options)
    except (CCDMError, ValueError, TypeError) as err:
        return f"<p class='ccdm-error'>Video source: {html.escape(str(err))}</p>", []
    first, last = clip.indices[0], clip.indices[-1]
    width, height = clip.source_size
    audio = ", with audio" if clip.has_audio else ""
    text = (f"<p>{len(clip.frames)} frames at {clip.fps:g} fps (source frames {first}..{last}; source "
            f"{width}x{height} at {clip.source_fps:g} fps{audio}; sha256 {clip.sha256[:10]})</p>")
    return text, [clip.frames[0], clip.frames[-1]]


def settings_from_source_controls(values: Dict[str, Any]) -> Dict[str, Any]:
    """Typed values of the source controls (integers from gradio's floats)."""
    out = {k: v for k, v in values.items() if k in SOURCE_FIELDS}
    for name in ("source_start", "source_stride"):
        if isinstance(out.get(name), float) and out[name].is_integer():
            out[name] = int(out[name])
    if "keep_audio" in out:
        out["keep_audio"] = bool(out["keep_audio"])
    if isinstance(out.get("denoising_strength"), int) and not isinstance(out["denoising_strength"], bool):
        out["denoising_strength"] = float(out["denoising_strength"])
    return out


def _pasted(field: str):
    def read(params: Dict[str, str]):
        try:
            return parse_source_label(params[KEY_SOURCE])[field] if KEY_SOURCE in params else gr.update()
        except CCDMError:
            return gr.update()
    return read


def pasted_source_note(params: Dict[str, str]):
    """Paste of a video-to-video infotext: the options come back, the video must be given again."""
    if KEY_SOURCE not in params:
        return gr.update()
    digest = str(params[KEY_SOURCE]).split()[0]
    return (f"<p>Pasted the source options of a video-to-video clip; give its video again (sha256 "
            f"{html.escape(digest)}...): a video is not stored in the infotext.</p>")


def source_infotext_fields(c: Dict[str, Any]) -> List[Tuple[Any, Any]]:
    fields = [(c["source_start"], _pasted("source_start")), (c["source_stride"], _pasted("source_stride")),
              (c["source_preview"], pasted_source_note)]
    if "denoising_strength" in c:
        fields.append((c["denoising_strength"], "Denoising strength"))
    return fields
