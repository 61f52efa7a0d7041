"""The keyframe timeline's Python side: the page's JSON state -> engine keyframes, with messages that name the
keyframe; infotext records positions, strengths and image hashes, and paste restores them (images by hash)."""
from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from ccdm_core.infotext import build_infotext, parse_infotext
from ccdm_core.keyframes import Keyframe, image_digest
from ccdm_core.webui.settings import KEY_KEYFRAME_IMAGES, KEY_KEYFRAMES, CCDMSettings, CCDMSettingsError
from ccdm_core.webui.timeline import (CN_OPTIONS_ID, ROOT_ID, STATE_ID, parse_image_hashes, parse_timeline_state,
                                      pasted_keyframes, restore_keyframes, root_html)


def data_url(value: int = 128, size=(12, 8), fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buffer, format=fmt)
    mime = "jpeg" if fmt == "JPEG" else fmt.lower()
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def test_state_parses_into_sorted_engine_keyframes_with_controlnet_kept_by_frame():
    cn = {"module": "canny", "model": "control_v11p_sd15_canny [d14c016b]", "weight": 0.8, "radius": 2}
    text = json.dumps([{"frame": 12, "strength": 0.6, "prompt": "a dog", "image": data_url(10, fmt="JPEG")},
                       {"frame": 0, "strength": 1, "prompt": "", "image": data_url(200), "controlnet": cn},
                       {"frame": 5, "strength": 0.25, "prompt": None, "image": None, "controlnet": None}])
    state = parse_timeline_state(text, 16)
    assert [kf.frame for kf in state.keyframes] == [0, 5, 12]
    assert all(isinstance(kf, Keyframe) for kf in state.keyframes)
    assert [kf.strength for kf in state.keyframes] == [1.0, 0.25, 0.6]
    assert [kf.prompt for kf in state.keyframes] == [None, None, "a dog"]  # an empty prompt is no prompt
    assert state.keyframes[1].image is None and state.keyframes[0].image.startswith("data:image/png;base64,")
    assert dict(state.extras) == {0: {"controlnet": cn}}
    assert parse_timeline_state("", 4).keyframes == () and parse_timeline_state([], 4).keyframes == ()


@pytest.mark.parametrize("item, message", [
    ({"frame": 16, "image": None}, "keyframe #0 at frame 16 is outside the clip; accepted frames 0..15"),
    ({"frame": -1}, "keyframe #0 at frame -1 is outside the clip; accepted frames 0..15"),
    ({"frame": 2.5}, "keyframe #0: frame must be an integer, got 2.5"),
    ({"frame": True}, "keyframe #0: frame must be an integer, got True"),
    ({"frame": 3, "strength": 1.5}, "keyframe at frame 3: strength 1.5 is out of range; accepted 0..1"),
    ({"frame": 3, "strength": -0.1}, "keyframe at frame 3: strength -0.1 is out of range; accepted 0..1"),
    ({"frame": 3, "strength": "high"}, "keyframe at frame 3: strength must be a number in 0..1, got 'high'"),
    ({"frame": 3, "prompt": 7}, "keyframe at frame 3: prompt must be text or null, got int"),
    ({"frame": 4, "image": "data:image/png;base64,@@@@"},
     "keyframe at frame 4: broken data URL (the base64 data does not decode)"),
    ({"frame": 4, "image": "data:image/png;base64,AAAA"},
     "keyframe at frame 4: broken data URL (the data is not a readable image)"),
    ({"frame": 4, "image": "data:image/png,iVBOR"},
     "keyframe at frame 4: broken data URL (expected 'data:image/...;base64,' before the data)"),
    ({"frame": 4, "image": "/tmp/cat.png"},
     "keyframe at frame 4: image must be a data URL (data:image/png;base64,...), got '/tmp/cat.png'"),
    ({"frame": 4, "colour": "red"}, "keyframe #0: unknown field 'colour'; accepted: frame, strength, prompt, image, "
                                    "controlnet"),
    ("frame 4", "keyframe #0: must be an object with frame, strength, prompt, image"),
])
def test_bad_keyframes_are_refused_with_a_message_naming_the_keyframe(item, message):
    with pytest.raises(CCDMSettingsError) as info:
        parse_timeline_state(json.dumps([item]), 16)
    assert info.value.field == "keyframes"
    assert str(info.value) == f"keyframes: {message}"


def test_truncated_image_data_and_whole_state_errors():
    good = data_url()
    head, payload = good.split(",")
    truncated = head + "," + base64.b64encode(base64.b64decode(payload)[:40]).decode("ascii")
    with pytest.raises(CCDMSettingsError, match="keyframe at frame 1: broken data URL"):
        parse_timeline_state([{"frame": 0, "image": good}, {"frame": 1, "image": truncated}], 4)
    with pytest.raises(CCDMSettingsError, match="keyframe #1: two keyframes at frame 2"):
        parse_timeline_state([{"frame": 2}, {"frame": 2}], 4)
    with pytest.raises(CCDMSettingsError, match="^keyframes: the timeline state is not valid JSON"):
        parse_timeline_state("[{", 4)
    with pytest.raises(CCDMSettingsError, match="must be a JSON list of keyframes, got dict"):
        parse_timeline_state('{"frame": 0}', 4)
    # images are checked on demand only (a run checks them; the settings object does not)
    assert parse_timeline_state([{"frame": 1, "image": truncated}], 4, check_images=False).keyframes[0].frame == 1


def test_infotext_names_keyframe_images_by_content_hash():
    a, b = data_url(10), data_url(240)
    settings = CCDMSettings(frames=16, keyframes=[{"frame": 0, "image": a, "strength": 1.0},
                                                  {"frame": 12, "image": b, "strength": 0.6},
                                                  {"frame": 14, "image": None, "strength": 0.3}])
    params = settings.infotext_params("mm [0123456789]")
    digest = {url: hashlib.sha256(base64.b64decode(url.split(",")[1])).hexdigest() for url in (a, b)}
    assert params[KEY_KEYFRAMES] == "0:(1), 12:(0.6), 14:(0.3)"
    assert params[KEY_KEYFRAME_IMAGES] == f"0:{digest[a][:10]}, 12:{digest[b][:10]}"
    assert image_digest(a) == digest[a] and image_digest(a.split(",")[1] * 40) is not None  # long base64 text
    assert image_digest("/tmp/cat.png") is None and image_digest(None) is None  # a path names a file, not content
    assert KEY_KEYFRAME_IMAGES not in CCDMSettings(keyframes=[{"frame": 0, "strength": 0.5}]).infotext_params("mm")
    text = build_infotext("a cat", "", {"Steps": 20, **params})
    assert "base64" not in text
    _, _, parsed = parse_infotext(text)
    assert parse_image_hashes(parsed[KEY_KEYFRAME_IMAGES]) == {0: digest[a][:10], 12: digest[b][:10]}
    with pytest.raises(CCDMSettingsError, match="is not FRAME:HASH"):
        parse_image_hashes("0=abcdef0123")


def test_paste_restores_positions_and_strengths_and_matches_images_by_hash():
    a, b = data_url(10), data_url(240)
    cn = {"module": "depth", "model": "m", "weight": 1.0, "radius": 0}
    settings = CCDMSettings(frames=16, keyframes=[{"frame": 0, "image": a, "strength": 1.0},
                                                  {"frame": 12, "image": b, "strength": 0.6}])
    infotext = build_infotext("a cat", "", {"Steps": 20, **settings.infotext_params("mm")})
    # the current timeline holds image a (at another frame, with a prompt and ControlNet) but not image b
    current = json.dumps([{"frame": 5, "strength": 0.2, "prompt": "a cat", "image": a, "controlnet": cn}])
    keyframes, message = restore_keyframes(infotext, current)
    assert keyframes == [{"frame": 0, "strength": 1.0, "prompt": "a cat", "image": a, "controlnet": cn},
                         {"frame": 12, "strength": 0.6, "prompt": None, "image": None}]
    assert message.startswith("Restored 2 keyframe(s)") and f"frame 12 ({image_digest(b)[:10]})" in message
    value, status = pasted_keyframes(infotext, current)
    assert json.loads(value) == keyframes and "Restored 2 keyframe(s)" in status
    assert parse_timeline_state(value, 16).keyframes[0].image == a
    # without keyframes in the infotext, or with an unreadable timeline, nothing is lost or invented
    assert restore_keyframes("a cat\nSteps: 20, CCDM frames: 16", current) == (None, "")
    assert restore_keyframes(infotext, "not json")[0][0]["image"] is None
    assert pasted_keyframes('a\nSteps: 2, CCDM keyframes: "0=1"', current)[0] is None


def test_root_element_names_the_components_the_page_code_follows():
    text = root_html("ccdm_txt2vid_frames", "ccdm_txt2vid_fps", "ccdm_txt2vid_gallery")
    assert f'id="{ROOT_ID}"' in text and f'data-state-elem="{STATE_ID}"' in text
    assert 'data-frames-elem="ccdm_txt2vid_frames"' in text and 'data-fps-elem="ccdm_txt2vid_fps"' in text
    assert 'data-gallery-elem="ccdm_txt2vid_gallery"' in text and 'data-max-side="1024"' in text
    assert CN_OPTIONS_ID == "ccdm_controlnet_options" and f'data-cn-options-elem="{CN_OPTIONS_ID}"' in text


def test_controlnet_objects_the_cards_write_pass_the_parser_and_the_settings():
    """The card's ControlNet controls write {module, model, weight, radius} or null; the JS refuses what the
    settings refuse (weight outside 0..2, radius not a whole number >= 0)."""
    spec = {"module": "canny", "model": "control_v11p_sd15_canny [d14c016b]", "weight": 0.6, "radius": 3}
    items = [{"frame": 4, "strength": 1, "prompt": None, "image": data_url(), "controlnet": spec},
             {"frame": 9, "strength": 0.5, "prompt": None, "image": None, "controlnet": None}]
    assert parse_timeline_state(json.dumps(items), 16).extras == {4: {"controlnet": spec}}
    settings = CCDMSettings(frames=16, keyframes=json.dumps(items))
    assert settings.keyframes[0].controlnet.to_dict() == spec and settings.keyframes[1].controlnet is None
    for bad, message in [({"weight": 3}, "controlnet.weight: 3 is out of range; accepted 0..2"),
                         ({"radius": 1.5}, "controlnet.radius: must be an integer number of frames"),
                         ({"radius": -1}, "controlnet.radius: -1 is out of range")]:
        with pytest.raises(CCDMSettingsError, match=f"keyframe at frame 4: {message}"):
            CCDMSettings(frames=16, keyframes=[{**items[0], "controlnet": {**spec, **bad}}])
