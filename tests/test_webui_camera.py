"""Camera-move guidance in the WebUI: the `camera`/`camera_strength` settings by field name, their validation, the
`CCDM camera` infotext (written only when guidance acts, pasted back as the forced move), and the after-CFG step,
which follows the standalone `guide_clip` video by video."""
from __future__ import annotations

import dataclasses
import json
import math
import types

import pytest
import torch
from einops import rearrange
from hypothesis import given, settings as hsettings, strategies as st

from ccdm_core.camera import CAMERA_CHOICES, CAMERA_END, MOVES, resolve_camera
from ccdm_core.feedback import guide_clip
from ccdm_core.infotext import build_infotext, parse_infotext
from ccdm_core.keyframes import keyframe_decay
from ccdm_core.webui.guidance import (Guidance, active_guidance, build_guidance, current_guidance, fusion_settings,
                                      guide_denoised, guide_eps, on_cfg_after_cfg)
from ccdm_core.webui.settings import (KEY_CAMERA, KEY_FRAMES, CCDMSettings, CCDMSettingsError, Txt2VidRequest,
                                      camera_from_infotext, parse_camera, settings_from_infotext)

F, STEPS = 6, 8
PROMPTS = {"zoom in": "a cat, camera zooms in", "pan left": "a temple, camera pans left", None: "a cat"}


# ---------------------------------------------------------------- settings


def test_camera_fields_by_name_with_defaults():
    s = CCDMSettings()
    assert (s.camera, s.camera_strength) == ("auto", 1.0)
    s = CCDMSettings.from_dict({"camera": "pan-left", "camera_strength": 0.25})
    assert (s.camera, s.camera_strength) == ("pan-left", 0.25)
    data = s.to_dict()
    assert (data["camera"], data["camera_strength"]) == ("pan-left", 0.25) and json.loads(json.dumps(data)) == data
    assert CCDMSettings.from_dict(data) == s
    assert CCDMSettings.from_dict({"camera": " Zoom In ", "camera_strength": 1}).camera == "zoom-in"
    r = Txt2VidRequest.from_dict({"prompt": "a cat", "camera": "tilt-down", "camera_strength": 0})
    assert (r.video.camera, r.video.camera_strength) == ("tilt-down", 0.0)
    assert Txt2VidRequest.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("data,field,words", [
    ({"camera": "sideways"}, "camera", "unknown camera move 'sideways'; accepted: " + ", ".join(CAMERA_CHOICES)),
    ({"camera": "zoom"}, "camera", "unknown camera move 'zoom'; accepted: auto, none, zoom-in"),
    ({"camera": 3}, "camera", "unknown camera move 3; accepted: auto"),
    ({"camera": None}, "camera", "unknown camera move None"),
    ({"camera_strength": 1.5}, "camera_strength", "1.5 is out of range; accepted 0..1"),
    ({"camera_strength": -0.1}, "camera_strength", "out of range; accepted 0..1"),
    ({"camera_strength": "1"}, "camera_strength", "must be a number in 0..1"),
    ({"camera_strength": True}, "camera_strength", "must be a number"),
    ({"camera_strength": float("nan")}, "camera_strength", "must be a number"),
])
def test_bad_camera_fields_name_the_field(data, field, words):
    with pytest.raises(CCDMSettingsError, match=words) as info:
        CCDMSettings.from_dict(data)
    err = info.value
    assert err.field == field and str(err).startswith(f"{field}: ")
    assert vars(err)["status_code"] == 422 and vars(err)["detail"] == str(err)  # what the API's handler reads
    with pytest.raises(CCDMSettingsError) as info:
        Txt2VidRequest.from_dict({"prompt": "a cat", **data})  # the txt2vid route's body
    assert info.value.field == field


@pytest.mark.parametrize("choice", CAMERA_CHOICES)
@pytest.mark.parametrize("prompt", list(PROMPTS.values()))
def test_the_move_is_the_engines_and_off_at_strength_0_or_one_frame(choice, prompt):
    s = CCDMSettings(camera=choice)
    assert s.camera_move(prompt) == resolve_camera(choice, prompt)
    assert CCDMSettings(camera=choice, camera_strength=0.0).camera_move(prompt) is None
    assert CCDMSettings(camera=choice, frames=1, context_length=1, context_overlap=0).camera_move(prompt) is None


# ---------------------------------------------------------------- infotext


def test_infotext_names_the_move_only_when_guidance_acts():
    assert CCDMSettings().infotext_params("mm", PROMPTS["zoom in"])[KEY_CAMERA] == "zoom in 1"
    assert KEY_CAMERA not in CCDMSettings().infotext_params("mm", PROMPTS[None])  # auto, no move named
    assert KEY_CAMERA not in CCDMSettings().infotext_params("mm")
    assert KEY_CAMERA not in CCDMSettings(camera="none").infotext_params("mm", PROMPTS["zoom in"])
    assert KEY_CAMERA not in CCDMSettings(camera_strength=0).infotext_params("mm", PROMPTS["zoom in"])
    forced = CCDMSettings(camera="rotate-counterclockwise", camera_strength=0.35)
    assert forced.infotext_params("mm", PROMPTS["zoom in"])[KEY_CAMERA] == "rotate counterclockwise 0.35"


@given(choice=st.sampled_from(CAMERA_CHOICES), strength=st.sampled_from([0, 0.05, 0.35, 0.5, 1]),
       named=st.sampled_from(list(PROMPTS)))
@hsettings(max_examples=60, deadline=None)
def test_infotext_round_trip_gives_the_move_the_run_followed(choice, strength, named):
    prompt = PROMPTS[named]
    s = CCDMSettings(enabled=True, motion_module="mm [0123456789]", camera=choice, camera_strength=strength)
    text = build_infotext(prompt, "", {"Steps": 20, **s.infotext_params(s.motion_module, prompt)})
    back = settings_from_infotext(parse_infotext(text)[2], CCDMSettings(camera_strength=0.8))
    move = s.camera_move(prompt)
    if move is None:  # guidance did not act: `none`, the strength left as it was
        assert (back.camera, back.camera_strength) == ("none", 0.8)
    else:  # the move forced, so an edited prompt keeps it
        assert (back.camera, back.camera_strength) == (move.replace(" ", "-"), strength)
    assert back.camera_move(prompt) == move and back.camera_move("a dog") == move
    assert dataclasses.replace(back, camera=s.camera, camera_strength=s.camera_strength) == s


def test_camera_infotext_forms():
    assert parse_camera(" Zoom In 0.5 ") == {"camera": "zoom-in", "camera_strength": 0.5}
    assert parse_camera("rotate clockwise 1") == {"camera": "rotate-clockwise", "camera_strength": 1}
    assert camera_from_infotext({KEY_FRAMES: "16"}) == {"camera": "none"}
    for text in ("zoom 1", "zoom in", "spin left 1", "zoom in x"):
        with pytest.raises(CCDMSettingsError, match="^camera: cannot read"):
            parse_camera(text)
    with pytest.raises(CCDMSettingsError, match="^camera_strength: 2 is out of range"):
        settings_from_infotext({KEY_FRAMES: "16", KEY_CAMERA: "pan left 2"})
    assert settings_from_infotext({KEY_CAMERA: "pan left 1"}) is None  # not a CCDM infotext without frames/module


# ---------------------------------------------------------------- guidance after CFG


def _guidance(camera="zoom in", strength=1.0, fusion=0.5, keys=True, frames=F):
    g = torch.Generator().manual_seed(4)
    latents = {0: torch.randn(4, 8, 8, generator=g), 4: torch.randn(4, 8, 8, generator=g)} if keys else {}
    settings = CCDMSettings(frames=frames, fusion_strength=fusion)
    return Guidance(frames, fusion_settings(settings), latents, {0: 1.0, 4: 0.6} if keys else {}, None,
                    camera=camera, camera_strength=strength)


@pytest.mark.parametrize("camera", ["zoom in", "pan right", "rotate clockwise"])
@pytest.mark.parametrize("keys", [False, True])
@pytest.mark.parametrize("step", [0, 3, 7])
def test_each_video_of_a_batch_is_guided_alone_as_guide_clip_does(camera, keys, step):
    g = _guidance(camera, keys=keys)
    x = torch.randn(2 * F, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = guide_denoised(x, step, STEPS, g)
    videos = rearrange(x, "(b f) c h w -> b c f h w", f=F)
    both = guide_clip(videos, step, STEPS, g.fusion, g.key_latents, g.key_strengths, None, g.keyframe_end, camera,
                      1.0)
    assert torch.equal(rearrange(out, "(b f) c h w -> b c f h w", f=F), both)  # the engine's step on b c f h w
    for b in range(2):
        alone = guide_denoised(x[b * F:(b + 1) * F], step, STEPS, g)
        assert torch.equal(out[b * F:(b + 1) * F], alone)  # no video sees another
    off = guide_denoised(x, step, STEPS, dataclasses.replace(g, camera=None, camera_strength=0.0))
    acts = keyframe_decay(step, STEPS, CAMERA_END) > 0  # the pull falls to 0 over sampling
    assert torch.equal(out, off) != acts


def test_videos_never_mix_under_a_camera_move():
    g = _guidance("pan left", fusion=0.0, keys=False)
    x = torch.randn(3 * F, 4, 8, 8)
    y = x.clone()
    y[F:2 * F] += torch.randn(F, 4, 8, 8)  # frame 0 of video 1 changes: only video 1's targets move
    a, b = guide_denoised(x, 1, STEPS, g), guide_denoised(y, 1, STEPS, g)
    assert torch.equal(a[:F], b[:F]) and torch.equal(a[2 * F:], b[2 * F:]) and not torch.equal(a[F:2 * F], b[F:2 * F])
    assert torch.equal(a[::F], x[::F]) and not torch.equal(a, x)  # frame 0 is the anchor; the others follow it


def _settings_guidance(prompt, **fields):
    return build_guidance(CCDMSettings(frames=F, **fields), lambda px: px[:, :1].repeat(1, 4, 1, 1), 64, 64,
                          prompt=prompt)


def test_build_guidance_resolves_auto_against_the_prompt():
    g = _settings_guidance(PROMPTS["pan left"], camera_strength=0.5)
    assert (g.camera, g.camera_strength) == ("pan left", 0.5)
    g = _settings_guidance(PROMPTS["pan left"], camera="zoom-out")
    assert (g.camera, g.camera_strength) == ("zoom out", 1.0)
    for fields, prompt in (({}, PROMPTS[None]), ({"camera": "none"}, PROMPTS["pan left"]),
                           ({"camera_strength": 0.0}, PROMPTS["pan left"]), ({"camera": "tilt-up"}, "")):
        g = _settings_guidance(prompt, **fields)
        expected = ("tilt up", 1.0) if fields.get("camera") == "tilt-up" else (None, 0.0)
        assert (g.camera, g.camera_strength) == expected


@pytest.mark.parametrize("fields,prompt", [({"camera": "none"}, PROMPTS["zoom in"]),
                                           ({"camera_strength": 0.0}, PROMPTS["zoom in"]),
                                           ({"camera": "zoom-in", "camera_strength": 0.0}, PROMPTS[None]),
                                           ({}, PROMPTS[None])])
@pytest.mark.parametrize("fusion", [0.0, 0.5])
def test_camera_off_is_bit_identical_to_guidance_without_camera(fields, prompt, fusion):
    g = _settings_guidance(prompt, fusion_strength=fusion, **fields)
    plain = Guidance(F, fusion_settings(CCDMSettings(frames=F, fusion_strength=fusion)))
    x = torch.randn(2 * F, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    for step in (0, 4):
        assert torch.equal(guide_denoised(x, step, STEPS, g), guide_denoised(x, step, STEPS, plain))
    assert g.does_nothing() == (fusion == 0)
    if fusion == 0:
        assert guide_denoised(x, 0, STEPS, g) is x


def test_a_camera_move_alone_is_guidance_that_is_made_current():
    g = _guidance("tilt up", fusion=0.0, keys=False)
    assert not g.does_nothing() and g.camera_acts()
    assert _guidance(None, fusion=0.0, keys=False).does_nothing()
    assert _guidance("tilt up", strength=0.0, fusion=0.0, keys=False).does_nothing()
    x = torch.randn(F, 4, 8, 8)
    params = types.SimpleNamespace(x=x, sampling_step=0, total_sampling_steps=STEPS)
    with active_guidance(g):
        assert current_guidance() is g
        on_cfg_after_cfg(params)
    assert current_guidance() is None
    assert torch.equal(params.x, guide_denoised(x, 0, STEPS, g)) and not torch.equal(params.x, x)


def test_eps_samplers_follow_the_camera_on_the_clean_latent():
    from ccdm_core.webui.guidance import eps_to_x0
    g = _guidance("zoom out", fusion=0.0, keys=False)
    alphas = torch.linspace(0.999, 0.01, 1000)
    x, eps = torch.randn(2 * F, 4, 8, 8), torch.randn(2 * F, 4, 8, 8)
    t = torch.full((2 * F,), 400.0)
    guided = guide_eps(eps, x, t, alphas, 2, STEPS, g)
    a = alphas[400].double()
    x0 = eps_to_x0(x.double(), eps.double(), a).float()
    assert torch.allclose(eps_to_x0(x.double(), guided.double(), a).float(), guide_denoised(x0, 2, STEPS, g),
                          atol=1e-4)
    assert not torch.equal(guided, eps)


def test_hires_size_keeps_the_camera():
    g = _guidance("pan right", fusion=0.0)
    big = g.at_size(16, 12)
    assert big is not g and (big.camera, big.camera_strength) == ("pan right", 1.0)


# ---------------------------------------------------------------- the run's prompt


@pytest.mark.parametrize("p,expected", [
    ({"prompt": "a cat, camera zooms in", "all_prompts": None}, "a cat, camera zooms in"),
    ({"prompt": ["camera pans left", "camera zooms in"]}, "camera pans left"),
    ({"prompt": "a cat", "all_prompts": ["a cat, camera tilts up, (style)"] * 2}, "a cat, camera tilts up, (style)"),
    ({"prompt": []}, ""), ({"prompt": None}, ""),
])
def test_first_prompt_of_the_run(p, expected):
    from ccdm_core.webui.runtime import first_prompt
    assert first_prompt(types.SimpleNamespace(**p)) == expected


def test_strength_text_survives_the_infotext():
    for strength in (0.05, 0.1, 0.15, 0.35, 0.65, 0.95):
        text = CCDMSettings(camera="pan-left", camera_strength=strength).camera_params()[KEY_CAMERA]
        assert math.isclose(parse_camera(text)["camera_strength"], strength)
    for move in MOVES:  # every move the engine names reads back
        assert parse_camera(f"{move} 1")["camera"] == move.replace(" ", "-")
