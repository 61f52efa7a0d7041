"""ControlNet keyframes against a live WebUI 1.6.0 with this extension and sd-webui-controlnet 1.1.4xx installed:
`CCDM_WEBUI_URL=http://127.0.0.1:7860 make test-webui`. Skipped unless the WebUI answers `/controlnet/version`
and lists at least one SD1.5 ControlNet model and a motion module (sizes and steps as in test_webui_live.py).
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from test_webui_live import SIZE, STEPS, URL, call, pick_module, pixels, txt2img

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]
FRAMES = 6


@pytest.fixture(scope="module")
def setup():
    status, _ = call("/controlnet/version")
    if status != 200:
        pytest.skip("sd-webui-controlnet is not installed on this WebUI")
    status, models = call("/controlnet/model_list")
    sd15 = [m for m in (models or {}).get("model_list", []) if "sd15" in m.lower() and "canny" in m.lower()]
    sd15 = sd15 or [m for m in (models or {}).get("model_list", []) if "sd15" in m.lower()]
    if not sd15:
        pytest.skip("no SD1.5 ControlNet model in ControlNet's model list")
    status, body = call("/ccdm/v1/motion-modules")
    if status != 200 or not body["modules"]:
        pytest.skip("no CCDM motion module listed")
    module = "canny" if "canny" in sd15[0].lower() else "none"
    return {"motion": pick_module(body), "model": sd15[0], "module": module}


def edge_image() -> str:
    """A white ring on black: a strong, easily recognised edge map."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), "black")
    ImageDraw.Draw(image).ellipse((SIZE // 4, SIZE // 4, 3 * SIZE // 4, 3 * SIZE // 4), outline="white", width=6)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def txt2vid(setup, controlnet):
    keyframe = {"frame": 0, "image": edge_image(), "strength": 0.0, "controlnet": controlnet}
    body = {"prompt": "a ring of light", "seed": 11, "steps": STEPS, "width": SIZE, "height": SIZE,
            "sampler_name": "Euler a", "motion_module": setup["motion"], "frames": FRAMES,
            "context_length": FRAMES, "formats": ["gif"], "return_frames": True, "keyframes": [keyframe]}
    return call("/ccdm/v1/txt2vid", body)


def test_keyframe_controlnet_changes_the_frames_near_the_keyframe(setup):
    status, plain = txt2vid(setup, None)
    assert status == 200, plain
    spec = {"module": setup["module"], "model": setup["model"], "weight": 1.0, "radius": 2}
    status, controlled = txt2vid(setup, spec)
    assert status == 200, controlled
    assert controlled["frames"] == FRAMES and len(controlled["images"]) == FRAMES  # no detected maps among frames
    a, b = pixels(plain["images"]), pixels(controlled["images"])
    assert not np.array_equal(a[0], b[0])  # the keyframe's own frame follows its control image


@pytest.mark.parametrize("spec,message", [({"module": "canny", "model": "no-such-model"}, "controlnet.model"),
                                          ({"module": "canny", "model": "x", "weight": 5}, "controlnet.weight"),
                                          ({"module": "reference_only", "model": "x"}, "controlnet.module")])
def test_bad_keyframe_controlnet_is_refused_by_field(setup, spec, message):
    status, body = txt2vid(setup, spec)
    assert status == 422 and "keyframes" in json.dumps(body) and message in json.dumps(body)


def test_txt2img_is_unchanged_after_a_controlnet_video(setup):
    status, before = txt2img()
    assert status == 200
    txt2vid(setup, {"module": setup["module"], "model": setup["model"], "weight": 1.0, "radius": 1})
    status, after = txt2img()  # ControlNet's units, argument positions and hooks are as they were
    assert status == 200 and all(np.array_equal(x, y) for x, y in zip(pixels(before["images"]),
                                                                       pixels(after["images"])))


def test_accordion_api_takes_keyframe_controlnet(setup):
    settings = {"enabled": True, "motion_module": setup["motion"], "frames": FRAMES, "context_length": FRAMES,
                "formats": ["gif"], "keyframes": [{"frame": 0, "image": edge_image(), "strength": 0.0,
                                                   "controlnet": {"module": setup["module"], "model": setup["model"],
                                                                  "weight": 1.0, "radius": 1}}]}
    status, body = txt2img(batch_size=1, alwayson_scripts={"CCDM": {"args": [settings]}})
    assert status == 200, body
    assert len(body["images"]) == FRAMES
    info = json.loads(body["info"])  # WebUI 1.6.0's API info has no `comments` (Processed.js)
    assert all(f"CCDM frames: {FRAMES}" in text for text in info["infotexts"])
    assert any(key.startswith("ControlNet") for key in info["extra_generation_params"])  # the keyframe's unit ran
