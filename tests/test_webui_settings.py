"""WebUI settings object: parsing by field name, validation messages, serialisation, infotext round trip,
motion-module discovery and selection, output naming, install.py, and imports that need no WebUI packages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from ccdm_core.infotext import build_infotext, parse_infotext
from ccdm_core.webui.discovery import (MotionEntry, find_motion_files, label_hash, list_motion_modules,
                                       resolve_motion_module)
from ccdm_core.webui.settings import (KEY_CONTEXT, KEY_FPS, KEY_FRAMES, KEY_MODULE, CCDMSettings, CCDMSettingsError,
                                      Txt2VidRequest, VideoFormat, parse_context, settings_from_infotext)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_round_trip_by_field_name():
    s = CCDMSettings()
    assert s.enabled is False and s.formats == (VideoFormat.MP4,)
    data = s.to_dict()
    assert data == {"schema": 1, "enabled": False, "motion_module": "", "frames": 16, "fps": 8.0,
                    "context_length": 16, "context_overlap": 4, "closed_loop": False, "formats": ["mp4"],
                    "fusion_strength": 0.5, "cross_frame_strength": 0.5, "fusion_mode": "temporal", "keyframes": [],
                    "anchor_first": False, "camera": "auto", "camera_strength": 1.0, "source_video": "",
                    "source_start": 0, "source_stride": 1, "source_fit": "crop", "denoising_strength": 0.6,
                    "keep_audio": True, "freeinit_iterations": 1, "freeinit_filter": "butterworth",
                    "freeinit_spatial": 0.25, "freeinit_temporal": 0.25, "freeinit_noise": "fresh",
                    "interpolate": 1, "motion_loras": []}
    assert json.loads(json.dumps(data)) == data
    assert CCDMSettings.from_dict(data) == s
    assert CCDMSettings.from_dict(json.dumps(data)) == s


def test_partial_object_takes_the_rest_from_defaults():
    base = CCDMSettings(formats=("gif", "mp4"))
    s = CCDMSettings.from_dict({"enabled": True, "frames": 24, "formats": ["WEBM", "gif", "webm"]}, base)
    assert (s.enabled, s.frames, s.context_length) == (True, 24, 16)
    assert s.formats == (VideoFormat.WEBM, VideoFormat.GIF)  # case folded, duplicates dropped, order kept
    assert CCDMSettings.from_dict(None, base) is base


@pytest.mark.parametrize("data,field,words", [
    ({"colour": 1}, "colour", "unknown field; accepted fields: enabled, motion_module, frames"),
    ({"frames": 2000}, "frames", "accepted 0..1024"),
    ({"fps": 0.05}, "fps", "accepted 0.1..120"),
    ({"source_stride": 0}, "source_stride", "accepted 1..1000"),
    ({"source_start": -1}, "source_start", "accepted 0..10000000"),
    ({"source_fit": "stretch"}, "source_fit", "accepted: crop, pad"),
    ({"denoising_strength": 1.5}, "denoising_strength", "accepted 0..1"),
    ({"keep_audio": "no"}, "keep_audio", "true or false"),
    ({"source_video": "/etc/passwd"}, "source_video", "neither a data URL nor base64"),
    ({"source_video": 12}, "source_video", "must be a data URL or base64"),
    ({"freeinit_iterations": 6}, "freeinit_iterations", "in 1..5"),
    ({"freeinit_filter": "sharp"}, "freeinit_filter", "accepted: butterworth"),
    ({"freeinit_spatial": 0}, "freeinit_spatial", "in \\(0, 1\\]"),
    ({"interpolate": 9}, "interpolate", "accepted 1..8"),
    ({"motion_loras": "zoom"}, "motion_loras", "must be a list"),
    ({"motion_loras": [{"strength": 1}]}, "motion_loras", "needs a name"),
    ({"motion_loras": [{"name": "zoom", "strength": 3}]}, "motion_loras", "accepted -2..2"),
    ({"frames": "16"}, "frames", "must be an integer"),
    ({"frames": True}, "frames", "must be an integer"),
    ({"frames": 16.5}, "frames", "must be an integer"),
    ({"fps": float("nan")}, "fps", "must be a number"),
    ({"enabled": "yes"}, "enabled", "true or false"),
    ({"context_overlap": 16}, "context_overlap", "smaller than context_length 16; accepted 0..15"),
    ({"formats": "mp4"}, "formats", "must be a list"),
    ({"formats": []}, "formats", "at least one"),
    ({"formats": ["avi"]}, "formats", "unknown format 'avi'; accepted: mp4, gif, webm, webp, png"),
    ({"motion_module": 3}, "motion_module", "must be a string"),
    ({"schema": 2}, "schema", "unsupported schema version"),
])
def test_bad_settings_name_the_field(data, field, words):
    with pytest.raises(CCDMSettingsError, match=words) as info:
        CCDMSettings.from_dict(data)
    err = info.value
    assert err.field == field and str(err).startswith(field)
    assert vars(err)["status_code"] == 422 and vars(err)["detail"] == str(err)  # what the WebUI's API handler reads


@pytest.mark.parametrize("data", [[True, "mm", 16], 3, "{not json"])
def test_settings_must_be_an_object(data):
    with pytest.raises(CCDMSettingsError, match="settings"):
        CCDMSettings.from_dict(data)


def test_txt2vid_request_fields_by_name():
    body = {"prompt": "a cat", "seed": 5, "steps": 4, "width": 64, "height": 128, "sampler_name": "Euler",
            "frames": 8, "formats": ["gif"], "return_frames": True}
    r = Txt2VidRequest.from_dict(body)
    assert (r.prompt, r.seed, r.steps, r.width, r.height, r.return_frames) == ("a cat", 5, 4, 64, 128, True)
    assert r.video.enabled and r.video.frames == 8 and r.video.formats == (VideoFormat.GIF,)
    again = Txt2VidRequest.from_dict(r.to_dict())
    assert again == r


@pytest.mark.parametrize("body,field", [({"prompt": "x", "strength": 1}, "strength"), ({"width": 100}, "width"),
                                        ({"height": 4096}, "height"), ({"steps": 0}, "steps"),
                                        ({"seed": -2}, "seed"), ({"frames": -1}, "frames"), ({"prompt": 1}, "prompt")])
def test_txt2vid_request_bad_fields(body, field):
    with pytest.raises(CCDMSettingsError) as info:
        Txt2VidRequest.from_dict(body)
    assert info.value.field == field


@given(frames=st.integers(1, 1024), fps=st.sampled_from([0.5, 1, 7.5, 8, 12, 24, 29.97, 120]),
       length=st.integers(1, 64), data=st.data(), loop=st.booleans())
@hsettings(max_examples=60, deadline=None)
def test_infotext_round_trip(frames, fps, length, data, loop):
    overlap = data.draw(st.integers(0, length - 1))
    s = CCDMSettings(enabled=True, motion_module="mm_sd_v15_v2 [0123456789]", frames=frames, fps=fps,
                     context_length=length, context_overlap=overlap, closed_loop=loop, camera="none")
    params = {"Steps": 20, "Sampler": "Euler a", "Seed": 7, "Size": "512x512", **s.infotext_params(s.motion_module)}
    prompt, negative, parsed = parse_infotext(build_infotext("a cat, walking", "blurry", params))
    assert (prompt, negative) == ("a cat, walking", "blurry")
    back = settings_from_infotext(parsed)
    assert back == s
    assert label_hash(parsed[KEY_MODULE]) == "0123456789"


def test_infotext_without_ccdm_is_none_and_context_forms():
    assert settings_from_infotext({"Steps": "20"}) is None
    assert parse_context("16/4") == (16, 4, False) and parse_context("24 / 2 / loop") == (24, 2, True)
    with pytest.raises(CCDMSettingsError, match="context"):
        parse_context("16-4")
    s = settings_from_infotext({KEY_FRAMES: "12", KEY_FPS: "12.5", KEY_CONTEXT: "8/2/loop"})
    assert (s.enabled, s.frames, s.fps, s.context_length, s.context_overlap, s.closed_loop) == (True, 12, 12.5, 8, 2,
                                                                                               True)


# ---------------------------------------------------------------- discovery


def _touch(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_discovery_finds_motion_files_and_hashes_through_the_callback(tmp_path):
    a, b = tmp_path / "ccdm", tmp_path / "animatediff"
    _touch(a / "mm_v2.ckpt", b"one")
    _touch(a / "sub" / "ccdm_x.safetensors", b"two")
    _touch(a / "notes.txt", b"x")
    _touch(a / ".hidden.pth", b"x")
    _touch(b / "mm_v2.ckpt", b"three")  # same name in another folder
    _touch(b / "v3.pth", b"four")
    calls = []
    entries = list_motion_modules([str(a), str(tmp_path / "missing"), str(b)],
                                  lambda path, name: calls.append(name) or f"{len(calls):02d}" + "ab" * 31)
    names = [e.name for e in entries]
    assert names == ["mm_v2", "sub/ccdm_x", "mm_v2 (animatediff)", "v3"]
    assert calls == names
    assert entries[0].label == "mm_v2 [01abababab]" and entries[0].shorthash == "01abababab"
    assert entries[3].filename == "v3.pth"


def test_discovery_dedupes_the_same_real_file(tmp_path):
    _touch(tmp_path / "a" / "m.safetensors", b"x")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert [n for n, _ in find_motion_files([str(tmp_path / "a"), str(tmp_path / "b")])] == ["m"]


def test_select_by_label_name_filename_hash_and_shorthash():
    entries = [MotionEntry("mm_v2", "/m/mm_v2.ckpt", "aa" * 32), MotionEntry("v3", "/m/v3.pth", "ab" + "cd" * 31),
               MotionEntry("nohash", "/m/nohash.safetensors", None)]
    assert resolve_motion_module(entries, "") is entries[0]
    assert resolve_motion_module(entries, "v3 [abcdcdcdcd]") is entries[1]
    assert resolve_motion_module(entries, "v3") is entries[1]
    assert resolve_motion_module(entries, "v3.pth") is entries[1]
    assert resolve_motion_module(entries, "AB" + "cd" * 31) is entries[1]
    assert resolve_motion_module(entries, "abcdcdcdcd") is entries[1]
    assert resolve_motion_module(entries, "renamed [aaaaaaaaaa]") is entries[0]  # pasted infotext: by hash
    assert resolve_motion_module(entries, "nohash") is entries[2]
    with pytest.raises(CCDMSettingsError, match="no motion module 'mm_v9'; accepted: a listed name") as info:
        resolve_motion_module(entries, "mm_v9")
    assert info.value.field == "motion_module" and info.value.status_code == 422
    with pytest.raises(CCDMSettingsError, match="no motion module"):
        resolve_motion_module(entries, "ffffffffff")


def test_ambiguous_hash_and_no_modules():
    entries = [MotionEntry("a", "/a.ckpt", "ab" * 32), MotionEntry("b", "/b.ckpt", "ab" * 31 + "cd")]
    with pytest.raises(CCDMSettingsError, match="matches several modules"):
        resolve_motion_module(entries, "ababababab")
    with pytest.raises(CCDMSettingsError, match=r"no motion module found; put .* into /x/models/ccdm or /y"):
        resolve_motion_module([], "anything", ["/x/models/ccdm", "/y"])


# ---------------------------------------------------------------- install.py and imports


def test_install_installs_only_what_is_missing(monkeypatch):
    fake = types.ModuleType("launch")
    fake.is_installed = lambda name: False
    fake.run_pip = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "launch", fake)
    sys.path.insert(0, str(ROOT))
    try:
        import install
    finally:
        sys.path.remove(str(ROOT))
    assert install.missing(is_installed=lambda name: True) == []
    assert install.missing(is_installed=lambda name: name != "imageio_ffmpeg") == ["imageio-ffmpeg>=0.4.8"]
    assert install.missing(is_installed=lambda name: name != "cv2") == ["opencv-python-headless"]
    assert len(install.missing(is_installed=lambda name: False)) == 5


def test_install_holds_the_webui_pins(monkeypatch):
    fake = types.ModuleType("launch")
    fake.is_installed = lambda name: name != "cv2"
    calls = []
    fake.run_pip = lambda args, desc: calls.append(args)
    monkeypatch.setitem(sys.modules, "launch", fake)
    sys.path.insert(0, str(ROOT))
    try:
        import install
    finally:
        sys.path.remove(str(ROOT))
    versions = {"numpy": "1.23.5", "torch": "2.0.1"}

    def version(name):
        if name not in versions:
            raise install.metadata.PackageNotFoundError(name)
        return versions[name]

    pins = install.held_pins(version=version)
    assert pins == ["numpy==1.23.5", "torch==2.0.1"]  # Pillow absent: not pinned
    assert install.pip_args("opencv-python-headless", pins) == \
        'install "opencv-python-headless" "numpy==1.23.5" "torch==2.0.1"'
    monkeypatch.setattr(install, "held_pins", lambda: pins)
    monkeypatch.setattr(install, "launch", fake)  # the module may have been imported with another stand-in
    install.main()
    assert calls == ['install "opencv-python-headless" "numpy==1.23.5" "torch==2.0.1"']


BLOCKER = """
import importlib.abc, sys
BLOCKED = {"regex", "yaml", "omegaconf", "imageio", "cv2", "skimage", "gradio", "modules", "fastapi", "tqdm"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import ccdm_core.webui.settings, ccdm_core.webui.discovery, ccdm_core.webui.outputs, ccdm_core.webui.video_unet
import ccdm_core.webui.attention_dispatch, ccdm_core.webui.patches, ccdm_core.webui.env, ccdm_core.webui.runtime
import ccdm_core.webui.guidance
print("ok")
"""


def test_webui_engine_parts_import_without_webui_or_optional_packages():
    """Inside the WebUI only torch, numpy, einops, safetensors, Pillow (and imageio-ffmpeg, installed) are needed."""
    out = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------- fusion and keyframes (issue 4)

KEYS = [{"frame": 0, "image": "data:image/png;base64,iVBORw0KGgo=", "strength": 1.0, "prompt": None,
         "controlnet": {"module": "canny", "model": "control_canny [c89fca47]", "weight": 0.8, "radius": 2}},
        {"frame": 12, "image": None, "strength": 0.6, "prompt": "a dog", "controlnet": None}]


def test_fusion_and_keyframe_fields_parse_and_round_trip():
    s = CCDMSettings.from_dict({"frames": 16, "fusion_strength": 0.25, "cross_frame_strength": 1,
                                "fusion_mode": "Keyframe", "keyframes": list(reversed(KEYS))})
    assert (s.fusion_strength, s.cross_frame_strength, s.fusion_mode) == (0.25, 1.0, "keyframe")
    assert [kf.frame for kf in s.keyframes] == [0, 12] and s.keyframes[1].prompt == "a dog"
    data = s.to_dict()
    assert data["keyframes"] == KEYS and json.loads(json.dumps(data)) == data
    assert CCDMSettings.from_dict(data) == s and CCDMSettings.from_dict(json.dumps(data)) == s
    assert CCDMSettings.from_dict({"keyframes": json.dumps(KEYS)}) == CCDMSettings.from_dict({"keyframes": KEYS})
    assert CCDMSettings.from_dict({"keyframes": None}).keyframes == () == CCDMSettings().keyframes
    body = {"prompt": "a cat", "frames": 16, "fusion_strength": 0.0, "keyframes": KEYS}
    r = Txt2VidRequest.from_dict(body)
    assert r.video.fusion_strength == 0.0 and len(r.video.keyframes) == 2
    assert Txt2VidRequest.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("data,field,words", [
    ({"fusion_strength": 1.5}, "fusion_strength", "out of range; accepted 0..1"),
    ({"fusion_strength": "0.5"}, "fusion_strength", "must be a number"),
    ({"cross_frame_strength": -0.1}, "cross_frame_strength", "accepted 0..1"),
    ({"cross_frame_strength": True}, "cross_frame_strength", "must be a number"),
    ({"fusion_mode": "blend"}, "fusion_mode", "unknown mode 'blend'; accepted: uniform, temporal, keyframe"),
    ({"fusion_mode": 1}, "fusion_mode", "accepted: uniform, temporal, keyframe"),
    ({"keyframes": [{"frame": 16}]}, "keyframes", "frame 16 is outside the clip; accepted frames 0..15"),
    ({"frames": 8, "keyframes": [{"frame": 8}]}, "keyframes", "accepted frames 0..7"),
    ({"keyframes": [{"frame": 2}, {"frame": 2}]}, "keyframes", "two keyframes at frame 2"),
    ({"keyframes": [{"frame": -1}]}, "keyframes", "integer >= 0"),
    ({"keyframes": [{"frame": 1, "strength": 2}]}, "keyframes", "strength must be a number in 0..1"),
    ({"keyframes": [{"frame": 1, "colour": 2}]}, "keyframes", "unknown field 'colour'"),
    ({"keyframes": [{"image": "x"}]}, "keyframes", "at least 'frame'"),
    ({"keyframes": [{"frame": 1, "image": 5}]}, "keyframes", "image must be a data URL or base64"),
    ({"keyframes": "[{"}, "keyframes", "not valid JSON"),
    ({"keyframes": {"frame": 1}}, "keyframes", "must be a JSON list"),
])
def test_bad_fusion_and_keyframe_fields_name_the_field(data, field, words):
    with pytest.raises(CCDMSettingsError, match=words) as info:
        CCDMSettings.from_dict(data)
    err = info.value
    assert err.field == field and str(err).startswith(f"{field}: ") and vars(err)["status_code"] == 422
    with pytest.raises(CCDMSettingsError) as info:
        Txt2VidRequest.from_dict({"prompt": "a cat", **data})
    assert info.value.field == field


def test_unknown_fields_are_still_refused_by_name():
    with pytest.raises(CCDMSettingsError, match="fusion_strenght: unknown field; accepted fields: .*fusion_strength"):
        CCDMSettings.from_dict({"fusion_strenght": 0.5})


@given(fusion=st.sampled_from([0, 0.25, 0.5, 1]), cross=st.sampled_from([0, 0.1, 0.5, 0.75, 1]),
       mode=st.sampled_from(["uniform", "temporal", "keyframe"]))
@hsettings(max_examples=30, deadline=None)
def test_fusion_infotext_round_trip(fusion, cross, mode):
    from ccdm_core.webui.settings import KEY_FUSION, KEY_KEYFRAMES, keyframe_strengths_from_infotext
    s = CCDMSettings(enabled=True, motion_module="mm [0123456789]", fusion_strength=fusion,
                     cross_frame_strength=cross, fusion_mode=mode, keyframes=KEYS, camera="none")
    params = s.infotext_params(s.motion_module)
    assert params[KEY_FUSION] == f"{fusion:g}/{cross:g}/{mode}" and params[KEY_KEYFRAMES] == "0:(1), 12:(0.6)"
    text = build_infotext("a cat", "", {"Steps": 20, **params})
    assert "base64" not in text and "a dog" not in text  # images (and keyframe prompts) stay out of the infotext
    _, _, parsed = parse_infotext(text)
    back = settings_from_infotext(parsed, CCDMSettings(keyframes=KEYS))
    assert back == s
    assert keyframe_strengths_from_infotext(parsed) == {0: 1.0, 12: 0.6}


def test_fusion_infotext_forms():
    from ccdm_core.webui.settings import KEY_FUSION, keyframe_strengths_from_infotext, parse_fusion
    assert "CCDM keyframes" not in CCDMSettings().infotext_params("mm")
    assert CCDMSettings().infotext_params("mm")[KEY_FUSION] == "0.5/0.5/temporal"
    assert parse_fusion(" 0 / 1 / uniform ") == {"fusion_strength": 0, "cross_frame_strength": 1,
                                                 "fusion_mode": "uniform"}
    with pytest.raises(CCDMSettingsError, match="^fusion: "):
        parse_fusion("0.5/temporal")
    with pytest.raises(CCDMSettingsError, match="^fusion_mode: "):
        settings_from_infotext({KEY_FRAMES: "16", KEY_FUSION: "0.5/0.5/wobble"})
    with pytest.raises(CCDMSettingsError, match="^keyframes: "):
        keyframe_strengths_from_infotext({"CCDM keyframes": "0=1"})
    assert keyframe_strengths_from_infotext({}) == {}


def test_freeinit_and_interpolation_round_trip_through_the_infotext():
    s = CCDMSettings(enabled=True, freeinit_iterations=3, freeinit_filter="gaussian", freeinit_spatial=0.5,
                     interpolate=4)
    params = s.infotext_params("m [0123456789]")
    assert params["CCDM FreeInit"] == "3/gaussian/0.5/0.25/fresh" and params["CCDM interpolate"] == 4
    text = build_infotext("a cat", "", {"Steps": 4, **params})
    _, _, parsed = parse_infotext(text)
    back = settings_from_infotext(parsed)
    assert (back.freeinit_iterations, back.freeinit_filter, back.freeinit_spatial, back.interpolate) == (
        3, "gaussian", 0.5, 4)
    plain = settings_from_infotext({"CCDM frames": "16"}, base=s)
    assert (plain.freeinit_iterations, plain.interpolate) == (1, 1)  # absent entries: it was off
    assert "CCDM FreeInit" not in CCDMSettings().infotext_params("m [0123456789]")


def test_motion_loras_come_back_from_the_infotext():
    text = build_infotext("a cat", "", {"Steps": 4, "CCDM frames": 16,
                                        "CCDM motion LoRAs": "v2_lora_ZoomIn [0123456789]:0.8, pan left [unsaved]:1"})
    _, _, parsed = parse_infotext(text)
    assert settings_from_infotext(parsed).motion_loras == (("v2_lora_ZoomIn", 0.8), ("pan left", 1))
    assert settings_from_infotext({"CCDM frames": "16"}).motion_loras == ()
    with pytest.raises(CCDMSettingsError, match="motion_loras"):
        settings_from_infotext({"CCDM frames": "16", "CCDM motion LoRAs": "ZoomIn"})
