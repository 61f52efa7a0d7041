"""Keyframes: text forms, image sources, validation messages, prompt schedules."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ccdm_core import CCDMError
from ccdm_core.keyframes import (Keyframe, check_keyframes, encode_keyframes, format_value_schedule, load_image,
                                 parse_keyframe_arg, parse_keyframes_json, parse_prompt_schedule,
                                 parse_value_schedule, prompt_schedule_weights, scheduled_conditioning)


def png_data_url(color=(255, 0, 0), size=(20, 10)):
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_value_schedule_round_trip():
    values = parse_value_schedule("0:(1.0), 12:(0.6)")
    assert values == {0: 1.0, 12: 0.6}
    assert parse_value_schedule(format_value_schedule(values)) == values
    for bad in ("0:1.0", "a:(1)", "0:(1), 0:(2)"):
        with pytest.raises(CCDMError):
            parse_value_schedule(bad)


def test_prompt_schedule_and_json_forms():
    assert parse_prompt_schedule('{"0": "a cat", "12": "a dog"}') == {0: "a cat", 12: "a dog"}
    with pytest.raises(CCDMError, match="frame numbers"):
        parse_prompt_schedule('{"x": "a cat"}')
    kfs = parse_keyframes_json('[{"frame": 3, "image": "a.png", "strength": 0.5, "prompt": "p"}]')
    assert kfs == [Keyframe(3, "a.png", 0.5, "p")]
    with pytest.raises(CCDMError, match="unknown field 'weight'"):
        parse_keyframes_json('[{"frame": 3, "weight": 1}]')
    with pytest.raises(CCDMError, match="strength must be a number in 0..1"):
        parse_keyframes_json('[{"frame": 3, "strength": 2}]')
    assert parse_keyframe_arg("12=cat.png@0.8") == Keyframe(12, "cat.png", 0.8)
    control = {"module": "canny", "model": "control_canny", "weight": 0.5, "radius": 3}
    kf = parse_keyframes_json([{"frame": 2, "image": "a.png", "controlnet": control}])[0]
    assert kf.controlnet.to_dict() == control and kf.controlnet.weight == 0.5
    with pytest.raises(CCDMError, match="keyframe at frame 2: controlnet.weight"):
        parse_keyframes_json([{"frame": 2, "controlnet": dict(control, weight=5)}])
    with pytest.raises(CCDMError, match="keyframe at frame 2: controlnet.model: missing"):
        parse_keyframes_json([{"frame": 2, "controlnet": {"module": "canny"}}])
    with pytest.raises(CCDMError, match="FRAME=PATH"):
        parse_keyframe_arg("cat.png")


def test_range_checks_name_the_keyframe():
    with pytest.raises(CCDMError, match="frame 16 is outside the clip; accepted frames 0..15"):
        check_keyframes([Keyframe(16, "x")], 16)
    with pytest.raises(CCDMError, match="two keyframes at frame 2"):
        check_keyframes([Keyframe(2, "x"), Keyframe(2, "y")], 16)
    with pytest.raises(CCDMError, match="keyframe at frame 4: broken base64|keyframe at frame 4: not a readable"):
        load_image("data:image/png;base64,@@@@", "keyframe at frame 4")


def test_images_from_every_source_are_fitted_and_encoded(tmp_path):
    Image.new("RGB", (30, 20), (0, 0, 255)).save(tmp_path / "b.png")
    arr = np.zeros((10, 10, 3), np.uint8)
    kfs = [Keyframe(0, png_data_url()), Keyframe(1, str(tmp_path / "b.png")), Keyframe(2, arr),
           Keyframe(3, None, prompt="p")]
    seen = []

    def fake_encode(x):
        seen.append(x.shape)
        return x[:, :1, ::8, ::8] * 2

    latents = encode_keyframes(fake_encode, kfs, 64, 32, scale_factor=0.5)
    assert sorted(latents) == [0, 1, 2] and seen == [(1, 3, 32, 64)] * 3
    assert torch.allclose(latents[0], torch.ones(1, 4, 8))  # red channel 255 -> 1.0, x2 x0.5
    assert torch.allclose(latents[1], -torch.ones(1, 4, 8))


def test_prompt_schedule_interpolates_between_keyframes():
    w = prompt_schedule_weights(5, [0, 4])
    assert w[:, 0].tolist() == [1, 0.75, 0.5, 0.25, 0] and np.allclose(w.sum(1), 1)

    def encode(prompts):
        return torch.stack([torch.full((2, 3), float(len(p))) for p in prompts])
    cond = scheduled_conditioning(encode, 5, {0: "a", 4: "abcde"})
    assert cond.shape == (1, 5, 2, 3) and cond[0, 2, 0, 0] == 3.0
