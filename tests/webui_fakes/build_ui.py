"""Build CCDM's WebUI side headless under gradio 3.41.2 with the fake `modules`, exercise it, print a JSON report.

Run by tests/test_webui_ui.py with the gradio-3 venv's python; CCDM_FAKE_WEBUI_ROOT holds models/ccdm.
"""
import json
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT)]

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from modules import script_callbacks, scripts, shared  # noqa: E402

report = {"gradio": gr.__version__}


def build_scripts_and_tab(script_class):
    """What the WebUI does at UI build: settings, both script UIs, the extension tabs."""
    for callback in script_callbacks.registered["ui_settings"]:
        callback()
    report["options"] = sorted(shared.opts.data_labels)
    built = {}
    with gr.Blocks() as demo:
        for is_img2img in (False, True):
            script = script_class()
            script.is_img2img, script.is_txt2img = is_img2img, not is_img2img
            controls = script.ui(is_img2img)
            built[is_img2img] = script
            report["img2img" if is_img2img else "txt2img"] = {
                "components": [type(c).__name__ for c in controls], "value": controls[0].value,
                "infotext_fields": len(script.infotext_fields)}
        tabs = [tab for callback in script_callbacks.registered["ui_tabs"] for tab in callback()]
    report["tabs"] = [[label, elem_id] for _, label, elem_id in tabs]
    report["camera_controls"] = camera_controls(demo, [tab for tab, _, _ in tabs])
    report["camera_events"] = camera_events(demo, [tab for tab, _, _ in tabs])
    json.dumps(demo.get_config_file())  # the page config serialises
    return built


def camera_controls(demo, tabs):
    """The built camera controls by elem_id: type, label, choices, value, range (the script's and the tab's)."""
    found = {}
    for blocks in [demo] + tabs:
        for block in blocks.blocks.values():
            elem_id = getattr(block, "elem_id", None) or ""
            if "_camera" in elem_id:
                config = block.get_config()
                found[elem_id] = {"type": type(block).__name__, "label": config.get("label"),
                                  "choices": config.get("choices"), "value": config.get("value"),
                                  "range": [config.get("minimum"), config.get("maximum"), config.get("step")]}
    return found


def camera_events(demo, tabs):
    """elem_id -> the distinct events that read or set a camera control: [trigger, "input"/"output", position]."""
    found = {}
    for blocks in [demo] + tabs:
        by_id = {block._id: block for block in blocks.blocks.values()}
        for dep in blocks.dependencies:
            for role in ("inputs", "outputs"):
                for index, block_id in enumerate(dep[role]):
                    elem_id = getattr(by_id.get(block_id), "elem_id", None) or ""
                    event = [dep["trigger"], role[:-1], index]
                    if "_camera" in elem_id and event not in found.setdefault(elem_id, []):
                        found[elem_id].append(event)
    return found


def paste_into_script(script, infotext):
    """connect_paste's reading of infotext_fields: key -> params.get, callable -> call."""
    from ccdm_core.infotext import parse_infotext

    _, _, params = parse_infotext(infotext)
    out = []
    for component, key in script.infotext_fields:
        value = key(params) if callable(key) else params.get(key)
        out.append(value.get("value", "<update>") if isinstance(value, dict) else value)
    return out


def main():
    namespace = runpy.run_path(str(ROOT / "scripts" / "ccdm_script.py"), run_name="ccdm_script")
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, scripts.Script)]
    report["script_classes"] = [c.__name__ for c in classes]
    report["callbacks"] = sorted(script_callbacks.registered)
    built = build_scripts_and_tab(classes[0])

    from ccdm_core.webui import tab, ui
    from ccdm_core.webui.runtime import list_modules

    label = list_modules()[0].label
    report["module_label"] = label
    info = f"a cat\nNegative prompt: dog\nSteps: 9, Sampler: DDIM, CFG scale: 6.5, Seed: 3, Size: 256x320, " \
           f"CCDM motion module: renamed [{label[-11:-1]}], CCDM frames: 12, CCDM fps: 10, CCDM context: 8/2/loop, " \
           f"CCDM fusion: 0.25/0/keyframe, CCDM keyframes: \"0:(1), 4:(0.5)\", CCDM anchor first: true, " \
           f"CCDM camera: pan left 0.5, CCDM motion LoRAs: \"zoom [abcdef0123]:0.5, pan [1234567890]:1\""
    report["script_paste"] = paste_into_script(built[False], info)
    old_script = info.split(", CCDM fusion")[0]
    report["script_paste_old"] = paste_into_script(built[False], old_script)
    report["script_paste_plain"] = paste_into_script(built[False], "a cat\nSteps: 9, Sampler: DDIM")
    report["script_paste_bad_camera"] = paste_into_script(built[False], info.replace("pan left 0.5", "pan left 7"))
    report["tab_paste"] = [u.get("value", "<update>") if isinstance(u, dict) else u for u in tab.paste(info)]
    old = info.split(", CCDM fusion")[0]
    report["tab_paste_old"] = [u.get("value", "<update>") if isinstance(u, dict) else u for u in tab.paste(old)]
    plain = "a cat\nSteps: 9, Sampler: DDIM"
    report["tab_paste_plain"] = [u.get("value", "<update>") if isinstance(u, dict) else u for u in tab.paste(plain)]
    report["tab_fields"] = list(tab.REQUEST_FIELDS + tab.VIDEO_FIELDS)
    report["collected"] = ui.settings_from_controls(
        {"enabled": True, "motion_module": label, "frames": 12.0, "fps": 10, "context_length": 8.0,
         "context_overlap": 2.0, "closed_loop": True, "formats": ["gif", "bogus"], "fusion_strength": 0,
         "cross_frame_strength": 0.75, "fusion_mode": "uniform", "keyframes": None, "camera": "tilt-up",
         "camera_strength": 1})
    keyframes = json.dumps([{"frame": 3, "image": "data:image/png;base64,AAAA", "strength": 0.5}])
    request = tab.request_from_inputs(["a cat", "", "Euler", 9.0, 6.5, 256.0, 320.0, 3.0, label, 12.0, 10, 8.0, 2.0,
                                       True, ["gif"], 0.25, 1, "keyframe", True, "zoom-out", 0.5, keyframes,
                                       2.0, 3.0, "pad", 0.45, False, 2.0, 2.0, "box", 0.5, 0.25, "initial",
                                       ["zoom", "pan"], "0.5"])
    report["request"] = request.to_dict()

    app = FastAPI()
    for callback in script_callbacks.registered["app_started"]:
        callback(None, app)
    client = TestClient(app)
    listed = client.get("/ccdm/v1/motion-modules")
    report["modules_route"] = [listed.status_code, listed.json()]
    from modules import shared

    shared.sd_model = __import__("types").SimpleNamespace(is_sdxl=True)  # an SDXL checkpoint is loaded
    listed = client.get("/ccdm/v1/motion-modules")
    report["modules_route_sdxl"] = [listed.status_code, listed.json()]
    shared.sd_model = None
    report["loras_route"] = loras_route(client)
    bad = client.post("/ccdm/v1/txt2vid", json={"prompt": "x", "colour": "red"})
    report["bad_route"] = [bad.status_code, bad.json()]
    bad = client.post("/ccdm/v1/txt2vid", json={"prompt": "x", "frames": 5000})
    report["bad_frames"] = [bad.status_code, bad.json()]
    bad = client.post("/ccdm/v1/txt2vid", json={"prompt": "x", "frames": 8, "keyframes": [{"frame": 8}]})
    report["bad_keyframes"] = [bad.status_code, bad.json()]
    bad = client.post("/ccdm/v1/txt2vid", json={"prompt": "x", "fusion_mode": "blend"})
    report["bad_mode"] = [bad.status_code, bad.json()]
    bad = client.post("/ccdm/v1/txt2vid", json={"prompt": "x", "camera": "sideways"})
    report["bad_camera"] = [bad.status_code, bad.json()]
    bad = client.post("/ccdm/v1/txt2vid", json={"prompt": "x", "camera_strength": 1.5})
    report["bad_camera_strength"] = [bad.status_code, bad.json()]
    report["camera_route"] = route_settings(client, {"prompt": "a cat", "sampler_name": "Euler", "frames": 8,
                                                     "context_length": 8, "camera": "rotate-clockwise",
                                                     "camera_strength": 0.35})
    print("REPORT " + json.dumps(report))


def loras_route(client):
    """GET the motion-LoRA route with one motion LoRA in models/ccdm/lora and an image LoRA in models/Lora."""
    import torch
    from safetensors.torch import save_file

    from modules import paths_internal

    key = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.processor."
    for folder, name, keys in (("ccdm/lora", "v2_lora_TiltUp", [key + "to_q_lora.down.weight"]),
                               ("Lora", "style", ["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"])):
        path = Path(paths_internal.models_path) / folder / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: torch.zeros(2, 2) for k in keys}, str(path))
    answer = client.get("/ccdm/v1/motion-loras")
    return [answer.status_code, answer.json()]


def route_settings(client, body):
    """POST the txt2vid route with the run itself stood in for: (status, the request the run got, by field)."""
    from ccdm_core.webui import runtime

    seen = []

    def run_txt2vid(request):
        seen.append(request.to_dict())
        return runtime.Txt2VidResult(clips=[], images=[], info="", seed=1, interrupted=False)

    real, runtime.run_txt2vid = runtime.run_txt2vid, run_txt2vid
    try:
        answer = client.post("/ccdm/v1/txt2vid", json=body)
    finally:
        runtime.run_txt2vid = real
    return [answer.status_code, seen[0] if seen else answer.json()]


if __name__ == "__main__":
    main()
