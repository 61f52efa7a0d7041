"""Against a live WebUI 1.6.0 with this extension installed: `CCDM_WEBUI_URL=http://127.0.0.1:7860 make test-webui`.

Needs the WebUI started with `--api`, an SD1.x checkpoint loaded and at least one motion module listed. Sizes and
steps are small (CCDM_WEBUI_SIZE, default 256; CCDM_WEBUI_STEPS, default 4) so a CPU WebUI finishes too.
"""
from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

URL = os.environ.get("CCDM_WEBUI_URL", "").rstrip("/")
SIZE = int(os.environ.get("CCDM_WEBUI_SIZE", "256"))
STEPS = int(os.environ.get("CCDM_WEBUI_STEPS", "4"))
TIMEOUT = float(os.environ.get("CCDM_WEBUI_TIMEOUT", "1800"))
MOTION = os.environ.get("CCDM_WEBUI_MOTION", "")  # a listed name, file name or hash; default: the first listed

pytestmark = [pytest.mark.webui, pytest.mark.skipif(not URL, reason="set CCDM_WEBUI_URL to a live WebUI 1.6.0")]


def call(path, body=None, method=None):
    """(status, JSON) of a request to the WebUI."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method or ("GET" if body is None else "POST"),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def pixels(b64_images):
    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(i))).convert("RGB")) for i in b64_images]


@pytest.fixture(scope="module")
def module_name():
    status, body = call("/ccdm/v1/motion-modules")
    assert status == 200, body
    return pick_module(body)


def pick_module(listing) -> str:
    """The label of CCDM_WEBUI_MOTION's module (or the first listed one) in a /ccdm/v1/motion-modules answer."""
    modules = listing["modules"]
    if not modules:
        pytest.skip(f"no motion module in {listing['folders']}")
    if not MOTION:
        return modules[0]["label"]
    for m in modules:
        if MOTION in (m["name"], m["filename"], m["sha256"], m["shorthash"], m["label"]):
            return m["label"]
    pytest.fail(f"CCDM_WEBUI_MOTION={MOTION!r} is not among {[m['label'] for m in modules]}")


def txt2img(**extra):
    body = {"prompt": "a red ball on grass", "negative_prompt": "blurry", "seed": 1234, "steps": STEPS,
            "width": SIZE, "height": SIZE, "batch_size": 2, "sampler_name": "Euler a", **extra}
    return call("/sdapi/v1/txt2img", body)


def test_motion_module_route_lists_hashes(module_name):
    status, body = call("/ccdm/v1/motion-modules")
    for entry in body["modules"]:
        assert len(entry["sha256"]) == 64 and entry["shorthash"] == entry["sha256"][:10]
        assert entry["label"] == f"{entry['name']} [{entry['shorthash']}]" and entry["format"]


def test_txt2vid_route_returns_a_clip_with_the_requested_frames(module_name, tmp_path):
    from ccdm_core.video import read_video

    body = {"prompt": "a red ball rolling on grass", "seed": 7, "steps": STEPS, "width": SIZE, "height": SIZE,
            "sampler_name": "Euler a", "motion_module": module_name, "frames": 8, "context_length": 8,
            "formats": ["mp4", "gif"], "return_frames": True}
    status, result = call("/ccdm/v1/txt2vid", body)
    assert status == 200, result
    assert result["format"] == "mp4" and result["frames"] == 8 and len(result["images"]) == 8
    assert "CCDM frames: 8" in result["info"] and "CCDM motion module: " in result["info"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(base64.b64decode(result["video"]))
    assert read_video(path)[0].shape[0] == 8


def test_script_via_txt2img_api_makes_video_frames(module_name):
    settings = {"enabled": True, "motion_module": module_name, "frames": 6, "context_length": 6, "formats": ["gif"]}
    status, body = txt2img(batch_size=1, alwayson_scripts={"CCDM": {"args": [settings]}})
    assert status == 200, body
    assert len(body["images"]) == 6
    info = json.loads(body["info"])
    # WebUI 1.6.0's API info has no `comments` (Processed.js): the clip's file is named in the UI only
    assert all("CCDM frames: 6" in text for text in info["infotexts"])
    assert info["extra_generation_params"]["CCDM frames"] == 6


@pytest.mark.parametrize("settings,field", [({"enabled": True, "motion_module": "no-such-module"}, "motion_module"),
                                            ({"enabled": True, "frames": 0}, "frames"),
                                            ({"enabled": True, "colour": "red"}, "colour"),
                                            ({"enabled": True, "camera": "sideways"}, "camera"),
                                            ({"enabled": True, "camera_strength": 2}, "camera_strength")])
def test_bad_settings_get_422_naming_the_field(module_name, settings, field):
    status, body = txt2img(alwayson_scripts={"CCDM": {"args": [settings]}})
    assert status == 422 and field in json.dumps(body)
    status, body = call("/ccdm/v1/txt2vid", {"prompt": "x", **{k: v for k, v in settings.items() if k != "enabled"}})
    assert status == 422 and field in json.dumps(body)


def test_camera_move_by_name_in_the_script_args_and_the_route(module_name):
    settings = {"enabled": True, "motion_module": module_name, "frames": 4, "context_length": 4, "context_overlap": 1,
                "formats": ["gif"], "camera": "zoom-in", "camera_strength": 0.5}
    status, body = txt2img(batch_size=1, alwayson_scripts={"CCDM": {"args": [settings]}})
    assert status == 200, body
    assert json.loads(body["info"])["extra_generation_params"]["CCDM camera"] == "zoom in 0.5"
    status, result = call("/ccdm/v1/txt2vid", {"prompt": "a red ball on grass, camera pans left", "steps": STEPS,
                                               "width": SIZE, "height": SIZE, "frames": 4, "context_length": 4,
                                               "context_overlap": 1, "motion_module": module_name,
                                               "formats": ["gif"]})
    assert status == 200, result
    assert "CCDM camera: pan left 1" in result["info"]  # camera auto: the move the prompt names


def test_disabled_and_after_runs_txt2img_is_bit_identical(module_name):
    status, baseline = txt2img()
    assert status == 200
    reference = pixels(baseline["images"])
    status, disabled = txt2img(alwayson_scripts={"CCDM": {"args": [{"enabled": False}]}})
    assert status == 200 and all(np.array_equal(a, b) for a, b in zip(reference, pixels(disabled["images"])))
    call("/ccdm/v1/txt2vid", {"prompt": "x", "steps": STEPS, "width": SIZE, "height": SIZE, "frames": 4,
                              "motion_module": module_name})  # a finished run
    txt2img(alwayson_scripts={"CCDM": {"args": [{"enabled": True, "motion_module": "no-such-module"}]}})  # failed
    _interrupted_run(module_name)
    status, after = txt2img()
    assert status == 200 and all(np.array_equal(a, b) for a, b in zip(reference, pixels(after["images"])))


def _interrupted_run(module_name):
    """Start a long video and interrupt it from another request."""
    body = {"prompt": "x", "steps": max(STEPS, 20), "width": SIZE, "height": SIZE, "frames": 8,
            "motion_module": module_name}
    worker = threading.Thread(target=call, args=("/ccdm/v1/txt2vid", body))
    worker.start()
    time.sleep(3)
    call("/sdapi/v1/interrupt", {})
    worker.join(TIMEOUT)
