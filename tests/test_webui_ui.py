"""`ui()` of the CCDM script and the txt2vid tab build headless under gradio 3.41.2 (the WebUI's pin), with a
stand-in `modules` package; paste, settings collection and the API routes' validation run there too.

It runs in the WebUI 1.6.0 environment (`make test` creates .venv/webui and runs the WebUI-side tests there; from
another interpreter CCDM_WEBUI_PYTHON may name one). Without it the test is skipped.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ccdm_core import new_motion_module, save_motion_module
from conftest import make_unet
from env_groups import webui_python

ROOT = Path(__file__).resolve().parents[1]
GRADIO3 = webui_python()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if not GRADIO3.exists():
        pytest.skip(f"no gradio 3.41.2 environment at {GRADIO3} (make test creates .venv/webui)")
    root = tmp_path_factory.mktemp("webui")
    sha = save_motion_module(new_motion_module(make_unet(), "animatediff-v2", max_frames=8),
                             root / "models" / "ccdm" / "tiny_v2.safetensors")
    env = {**os.environ, "CCDM_FAKE_WEBUI_ROOT": str(root), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([str(GRADIO3), str(ROOT / "tests" / "webui_fakes" / "build_ui.py")], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("REPORT "))
    data = json.loads(line[len("REPORT "):])
    data["sha"] = sha
    return data


def test_script_and_tab_build_under_gradio_3_41_2(report):
    assert report["gradio"] == "3.41.2"
    assert report["script_classes"] == ["CCDMScript"]  # registered once, from the thin entry script
    assert report["callbacks"] == ["app_started", "cfg_after_cfg", "cfg_denoiser", "script_unloaded", "ui_settings",
                                   "ui_tabs"]
    assert report["tabs"] == [["txt2vid", "ccdm_txt2vid"]]
    assert report["options"] == ["ccdm_camera_strength_with_lora", "ccdm_default_formats", "ccdm_default_motion_module", "ccdm_keep_module_in_memory",
                                 "ccdm_outdir", "ccdm_report", "ccdm_report_json", "ccdm_save_frames",
                                 "ccdm_source_max_mb"]
    label = f"tiny_v2 [{report['sha'][:10]}]"
    assert report["module_label"] == label
    for tab in ("txt2img", "img2img"):
        built = report[tab]
        # the settings State, then the accordion's video-source upload (a second script arg; the API leaves it out)
        assert built["components"] == ["State", "File"] and built["infotext_fields"] == 24
        assert built["value"] == {"schema": 1, "enabled": False, "motion_module": label, "frames": 16, "fps": 8.0,
                                  "context_length": 16, "context_overlap": 4, "closed_loop": False,
                                  "formats": ["mp4"], "fusion_strength": 0.5, "cross_frame_strength": 0.5,
                                  "fusion_mode": "temporal", "keyframes": [], "anchor_first": False,
                                  "camera": "auto", "camera_strength": 1.0, "source_video": "", "source_start": 0,
                                  "source_stride": 1, "source_fit": "crop", "denoising_strength": 0.6,
                                  "keep_audio": True, "freeinit_iterations": 1, "freeinit_filter": "butterworth",
                                  "freeinit_spatial": 0.25, "freeinit_temporal": 0.25, "freeinit_noise": "fresh",
                                  "interpolate": 1, "motion_loras": []}


def test_camera_controls_build_and_feed_the_settings(report):
    from ccdm_core.camera import CAMERA_CHOICES
    move = {"type": "Dropdown", "label": "Camera move (auto: read from the prompt)", "choices": list(CAMERA_CHOICES),
            "value": "auto", "range": [None, None, None]}
    strength = {"type": "Slider", "label": "Camera strength (0 = off)", "choices": None, "value": 1.0,
                "range": [0.0, 1.0, 0.05]}
    prefixes = ["script_txt2img_ccdm_ccdm", "script_img2img_ccdm_ccdm", "ccdm_txt2vid"]
    assert report["camera_controls"] == {f"{prefix}{suffix}": control for prefix in prefixes
                                         for suffix, control in (("_camera", move), ("_camera_strength", strength))}
    events = report["camera_events"]
    fields = report["tab_fields"]
    for tab in ("txt2img", "img2img"):  # every change rebuilds the settings State from CONTROL_FIELDS, in order
        assert events[f"script_{tab}_ccdm_ccdm_camera"] == [["change", "input", 13]]
        assert events[f"script_{tab}_ccdm_ccdm_camera_strength"] == [["change", "input", 14]]
    for name in ("camera", "camera_strength"):  # Generate reads it (after id_task), Paste sets it
        assert events[f"ccdm_txt2vid_{name}"] == [["click", "input", fields.index(name) + 1],
                                                  ["click", "output", fields.index(name)]]
    assert fields[-2:] == ["motion_lora_names", "motion_lora_strengths"]
    assert fields[-14:-2] == ["keyframes", "source_start", "source_stride", "source_fit", "denoising_strength",
                            "keep_audio", "interpolate", "freeinit_iterations", "freeinit_filter",
                            "freeinit_spatial", "freeinit_temporal", "freeinit_noise"]


def test_paste_selects_the_module_by_hash_and_fills_the_fields(report):
    label = f"tiny_v2 [{report['sha'][:10]}]"
    assert report["script_paste"] == [True, label, "12", "10", 8, 2, True, 0.25, 0, "keyframe", True, "pan-left",
                                      0.5, 1, 1, "<update>", "<update>", "<update>", "<update>",  # FreeInit off
                                      "<update>", "<update>", "<update>",  # no CCDM source: left as they are
                                      ["zoom", "pan"], "0.5, 1"]  # the motion LoRAs, in order, with strengths
    assert report["tab_paste"] == ["a cat", "dog", "DDIM", 9, 6.5, 256, 320, 3, label, 12, 10, 8, 2, True,
                                   "<update>", 0.25, 0, "keyframe", True, "pan-left", 0.5,
                                   "<update>"] + ["<update>"] * 5 + [1, 1] + ["<update>"] * 4 + [
                                   ["zoom", "pan"], "0.5, 1"]  # images: not in the infotext; no source; FreeInit
    # and interpolation off; the motion LoRAs
    assert report["tab_paste_old"] == ["a cat", "dog", "DDIM", 9, 6.5, 256, 320, 3, label, 12, 10, 8, 2, True,
                                       "<update>", "<update>", "<update>", "<update>", False, "none", "<update>",
                                       "<update>"] + ["<update>"] * 5 + [1, 1] + ["<update>"] * 4 + [[], ""]


def test_paste_sets_the_camera_a_ccdm_run_followed_and_leaves_it_otherwise(report):
    """`CCDM camera: pan left 0.5` -> pan-left, 0.5 (test above). A CCDM infotext without the entry was made without
    camera guidance: camera none, strength left. An infotext without CCDM entries, or an unreadable entry: both
    controls left as they are."""
    camera = slice(-13, -11)  # FreeInit/interpolation, source and motion LoRA readers follow the camera controls
    assert report["script_paste_old"][camera] == ["none", "<update>"]
    assert report["script_paste_plain"][camera] == ["<update>", "<update>"]
    assert report["tab_paste_plain"][-16:-13] == ["<update>", "<update>", "<update>"]
    assert report["script_paste_old"][-2:] == [[], ""]  # a CCDM clip without motion LoRAs: none picked
    assert report["script_paste_plain"][-2:] == report["tab_paste_plain"][-2:] == ["<update>", "<update>"]
    assert report["script_paste_bad_camera"][camera] == ["<update>", "<update>"]


def test_controls_and_tab_inputs_become_validated_settings(report):
    assert report["collected"] == {"enabled": True, "motion_module": f"tiny_v2 [{report['sha'][:10]}]",
                                   "frames": 12, "fps": 10.0, "context_length": 8, "context_overlap": 2,
                                   "closed_loop": True, "formats": ["gif"], "fusion_strength": 0.0,
                                   "cross_frame_strength": 0.75, "fusion_mode": "uniform", "keyframes": "",
                                   "camera": "tilt-up", "camera_strength": 1.0}
    assert isinstance(report["collected"]["camera_strength"], float)
    request = report["request"]
    assert (request["prompt"], request["steps"], request["width"], request["height"], request["seed"]) == (
        "a cat", 9, 256, 320, 3)
    assert request["frames"] == 12 and request["formats"] == ["gif"] and request["enabled"] is True
    assert (request["fusion_strength"], request["cross_frame_strength"], request["fusion_mode"]) == (
        0.25, 1.0, "keyframe")
    assert request["keyframes"] == [{"frame": 3, "image": "data:image/png;base64,AAAA", "strength": 0.5,
                                     "prompt": None, "controlnet": None}]
    assert (request["anchor_first"], request["camera"], request["camera_strength"]) == (True, "zoom-out", 0.5)
    assert [request[k] for k in ("source_start", "source_stride", "source_fit", "denoising_strength",
                                 "keep_audio")] == [2, 3, "pad", 0.45, False]
    assert [request[k] for k in ("interpolate", "freeinit_iterations", "freeinit_filter", "freeinit_spatial",
                                 "freeinit_temporal", "freeinit_noise")] == [2, 2, "box", 0.5, 0.25, "initial"]
    assert request["motion_loras"] == [{"name": "zoom", "strength": 0.5}, {"name": "pan", "strength": 1.0}]


def test_the_motion_lora_route_lists_motion_loras_only(report):
    status, body = report["loras_route"]
    assert status == 200 and body["loras"] == ["v2_lora_TiltUp"]  # models/Lora's image LoRA is not one
    assert [Path(f).parts[-2:] for f in body["folders"]] == [("ccdm", "lora"), ("models", "Lora")]


def test_api_routes_list_modules_and_reject_bad_fields_with_422(report):
    status, body = report["modules_route"]
    assert status == 200
    assert body["modules"] == [{"name": "tiny_v2", "label": f"tiny_v2 [{report['sha'][:10]}]",
                                "filename": "tiny_v2.safetensors", "sha256": report["sha"],
                                "shorthash": report["sha"][:10], "format": "ccdm", "base": "sd1", "fits": True}]
    assert body["checkpoint_base"] is None  # no checkpoint loaded
    status, body = report["modules_route_sdxl"]  # listed, not hidden, when it does not fit the checkpoint
    assert status == 200 and body["checkpoint_base"] == "sdxl"
    assert [(m["name"], m["base"], m["fits"]) for m in body["modules"]] == [("tiny_v2", "sd1", False)]
    status, body = report["bad_route"]
    assert status == 422 and body["detail"].startswith("colour: unknown field")
    status, body = report["bad_frames"]
    assert status == 422 and body["detail"] == "frames: 5000 is out of range; accepted 0..1024"
    status, body = report["bad_keyframes"]
    assert status == 422 and body["detail"] == ("keyframes: keyframe at frame 8 is outside the clip; "
                                                "accepted frames 0..7")
    status, body = report["bad_mode"]
    assert status == 422 and body["detail"].startswith("fusion_mode: unknown mode 'blend'")
    status, body = report["bad_camera"]
    assert status == 422 and body["detail"] == ("camera: unknown camera move 'sideways'; accepted: auto, none, "
                                                "zoom-in, zoom-out, pan-left, pan-right, tilt-up, tilt-down, "
                                                "rotate-clockwise, rotate-counterclockwise")
    status, body = report["bad_camera_strength"]
    assert status == 422 and body["detail"] == "camera_strength: 1.5 is out of range; accepted 0..1"


def test_txt2vid_route_passes_the_camera_fields_to_the_run(report):
    status, request = report["camera_route"]
    assert status == 200
    assert (request["camera"], request["camera_strength"], request["frames"]) == ("rotate-clockwise", 0.35, 8)
