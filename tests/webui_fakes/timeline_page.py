"""Serve CCDM's txt2vid tab (with the keyframe timeline) under gradio 3.41.2 outside the WebUI, for the browser test.

Usage, with the gradio-3 venv's python: `timeline_page.py PORT [--controlnet]`. The extension's javascript/*.js
and style.css are served under /ccdm-static/ and loaded by a `_js` load hook (gradio 3.41 has no `head=`); the hook
then calls the same init the WebUI calls through onUiLoaded. The page mirrors the WebUI's layout where the page
code depends on it (`#tabs`, `#txt2img_gallery`, `#image_buttons_txt2img`, `switch_to_txt2img()`, ControlNet
1.1.4xx's txt2img block with one unit: `#txt2img_controlnet` > accordion > unit image and enable checkbox) and adds
test-only buttons: one fills the tab's frames gallery (a stand-in for a run), one shows what Python parsed from the
timeline's state, one shows what Python received in the ControlNet unit's image.

ControlNet is absent unless `--controlnet` is given or GET /ccdm-test/controlnet/on is called (.../off removes
it again): then a stand-in of its `scripts.external_code` module sits in sys.modules, where
ccdm_core.webui.controlnet looks first, and the `#ccdm_controlnet_options` box lists its preprocessors and models
at the next page load. CCDM_FAKE_WEBUI_ROOT names the fake WebUI's data folder (models/ccdm may be empty).
"""
import json
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from fastapi.responses import FileResponse  # noqa: E402
from PIL import Image  # noqa: E402

# What the WebUI injects for the extension: every javascript/*.js (in name order) and the root style.css.
STATIC = {p.name: p for p in sorted((ROOT / "javascript").glob("*.js"))}
STATIC["style.css"] = ROOT / "style.css"
LOADER = """() => {
    if (window.ccdmPageLoader) return [];
    window.ccdmPageLoader = true;
    const css = document.createElement('link');
    css.rel = 'stylesheet';
    css.href = '/ccdm-static/style.css';
    document.head.appendChild(css);
    const loaded = %s.map((name) => new Promise((resolve, reject) => {
        const js = document.createElement('script');
        js.src = '/ccdm-static/' + name;
        js.onload = resolve;
        js.onerror = () => reject(new Error('cannot load ' + name));
        document.head.appendChild(js);
    }));
    Promise.all(loaded).then(() => window.ccdmTimeline.init());  // as the WebUI's onUiLoaded would
    // the WebUI's ui.js defines this: its first tab is txt2img
    window.switch_to_txt2img = window.switch_to_txt2img || function () {
        document.querySelector('#tabs').querySelectorAll('button')[0].click();
        return Array.from(arguments);
    };
    return [];
}""" % json.dumps([name for name in STATIC if name.endswith(".js")])
EXTERNAL_CODE = "scripts.external_code"  # where ccdm_core.webui.controlnet finds ControlNet
CN_MODULES = ["none", "canny", "depth_midas", "openpose", "reference_only", "ip-adapter_clip_sd15"]
CN_MODELS = ["None", "control_v11p_sd15_canny [d14c016b]", "control_v11f1p_sd15_depth [cfd03158]"]


def fake_external_code() -> types.ModuleType:
    """A stand-in of ControlNet 1.1.4xx's `external_code`: the names CCDM checks for, with fixed lists."""
    module = types.ModuleType(EXTERNAL_CODE)

    class ControlNetUnit:
        def __init__(self, **kwargs):
            self.enabled = kwargs.get("enabled", True)

    module.ControlNetUnit = ControlNetUnit
    module.find_cn_script = lambda script_runner: None
    module.get_models = lambda update=False: list(CN_MODELS)
    module.get_modules = lambda alias_names=False: list(CN_MODULES)
    return module


def set_controlnet(present: bool) -> None:
    if present:
        sys.modules[EXTERNAL_CODE] = fake_external_code()
    else:
        sys.modules.pop(EXTERNAL_CODE, None)


def fake_frames(count: int = 12, size: int = 64):
    """Distinct frames, as a run would put them into the tab's frames gallery."""
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    out = []
    for i in range(count):
        hue = i / max(1, count - 1)
        pixels = np.stack([np.outer(ramp, np.ones(size)) * hue, np.full((size, size), 255 * (1 - hue)),
                           np.outer(np.ones(size), ramp)], axis=-1)
        out.append(Image.fromarray(pixels.astype(np.uint8)))
    return out


def parsed_state(state: str, frames: float) -> str:
    """What Python makes of the timeline's state: the keyframes (and the ControlNet conditions the settings
    validated), or the error naming the keyframe."""
    from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError
    from ccdm_core.webui.timeline import parse_timeline_state

    try:
        parsed = parse_timeline_state(state, int(frames))
        settings = CCDMSettings(frames=int(frames), keyframes=state or None)
    except CCDMSettingsError as err:
        return json.dumps({"error": str(err)})
    return json.dumps({"keyframes": [{"frame": kf.frame, "strength": kf.strength, "prompt": kf.prompt,
                                      "image_chars": len(kf.image or "")} for kf in parsed.keyframes],
                       "extras": {str(k): v for k, v in parsed.extras.items()},
                       "controlnet": {str(kf.frame): kf.controlnet.to_dict() for kf in settings.keyframes
                                      if kf.controlnet is not None}})


def controlnet_block() -> gr.Image:
    """ControlNet 1.1.4xx's txt2img block with one unit (its element ids and component kinds, closed)."""
    with gr.Group(elem_id="txt2img_controlnet"):
        with gr.Accordion("ControlNet v1.1.419 (stand-in)", open=False, elem_id="controlnet"):
            image = gr.Image(source="upload", tool="sketch", type="numpy", label="Single Image",
                             elem_id="txt2img_controlnet_ControlNet_input_image")
            gr.Checkbox(label="Enable", value=False, elem_id="txt2img_controlnet_ControlNet_controlnet_enable_checkbox")
    return image


def received_image(value) -> str:
    """What Python received in the ControlNet unit's image (the sketch tool sends {"image", "mask"})."""
    image = value.get("image") if isinstance(value, dict) else value
    return json.dumps({"shape": list(image.shape) if image is not None else None})


def build_page(tab: gr.Blocks, sample: Image.Image) -> gr.Blocks:
    by_id = {b.elem_id: b for b in tab.blocks.values() if getattr(b, "elem_id", None)}
    with gr.Blocks(analytics_enabled=False, title="CCDM timeline test page") as demo:
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                gr.Gallery(value=[sample], elem_id="txt2img_gallery", columns=4, preview=True)
                with gr.Row(elem_id="image_buttons_txt2img", elem_classes="image-buttons"):
                    gr.Button("\U0001f4be", elem_id="save_txt2img", elem_classes=["tool"])
                cn_image = controlnet_block()
            with gr.Tab("txt2vid", id="ccdm_txt2vid", elem_id="tab_ccdm_txt2vid"):
                tab.render()
        with gr.Row():
            fill = gr.Button("Fill frames (stand-in for a run)", elem_id="page_fill_frames")
            check = gr.Button("Parse the state in Python", elem_id="page_parse_state")
            check_cn = gr.Button("ControlNet image in Python", elem_id="page_cn_image")
        parsed = gr.Textbox(label="Parsed by Python", elem_id="page_parsed", interactive=True)
        fill.click(fn=lambda: fake_frames(), inputs=[], outputs=[by_id["ccdm_txt2vid_gallery"]])
        check.click(fn=parsed_state, inputs=[by_id["ccdm_keyframes_json"], by_id["ccdm_txt2vid_frames"]],
                    outputs=[parsed])
        check_cn.click(fn=received_image, inputs=[cn_image], outputs=[parsed])
        demo.load(fn=None, inputs=[], outputs=[], _js=LOADER)
    return demo


def main() -> None:
    port = int(sys.argv[1])
    set_controlnet("--controlnet" in sys.argv[2:])
    from ccdm_core.webui.tab import build_tab

    sample = Image.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (64, 1))[..., None].repeat(3, -1))
    demo = build_page(build_tab(), sample).queue()
    app = FastAPI()

    @app.get("/ccdm-static/{name}")
    def static(name: str):
        if name not in STATIC:
            raise HTTPException(status_code=404)
        return FileResponse(STATIC[name], headers={"Cache-Control": "no-store"})

    @app.get("/ccdm-test/controlnet/{state}")
    def controlnet(state: str):
        if state not in ("on", "off"):
            raise HTTPException(status_code=404)
        set_controlnet(state == "on")
        return {"controlnet": state}

    app = gr.mount_gradio_app(app, demo, path="/")
    print(f"SERVING http://127.0.0.1:{port}/", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
