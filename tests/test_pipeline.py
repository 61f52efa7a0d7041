"""Standalone pipeline: on/off equality with an identity module, exact restore after runs and interrupts."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ccdm_core import CCDMError, new_motion_module
from ccdm_core.pipeline import VideoSettings, generate, sample_latents
from ccdm_core.sd.loader import build_default_model
from conftest import randomize_


@pytest.fixture(scope="module")
def model():
    return build_default_model(seed=0)


def settings(**kw):
    base = dict(prompt="a cat", negative_prompt="blurry", frames=4, width=64, height=64, steps=2, seed=7)
    base.update(kw)
    return VideoSettings(**base)


def unet_fingerprint(unet):
    return [(n, id(m), "forward" in m.__dict__) for n, m in unet.named_modules()]


def test_identity_module_gives_the_same_latents_as_no_module(model):
    module = new_motion_module(model.unet)
    module.info = dataclasses.replace(module.info, beta_schedule="scaled_linear")  # same schedule in both arms
    a = sample_latents(model, None, settings(), seed=7)
    b = sample_latents(model, module, settings(), seed=7)
    assert torch.equal(a, b)


def test_motion_changes_the_video_and_the_unet_is_restored(model):
    before = unet_fingerprint(model.unet)
    state = {k: v.clone() for k, v in model.unet.state_dict().items()}
    module = randomize_(new_motion_module(model.unet), scale=0.05)
    plain = sample_latents(model, None, settings(), seed=7)
    moved = sample_latents(model, module, settings(), seed=7)
    assert not torch.allclose(plain, moved)
    assert unet_fingerprint(model.unet) == before
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in state.items())


def test_interrupt_mid_sampling_restores_the_unet(model):
    before = unet_fingerprint(model.unet)
    module = randomize_(new_motion_module(model.unet), scale=0.05)

    def interrupt(info):
        if info["i"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample_latents(model, module, settings(steps=3), seed=1, callback=interrupt)
    assert unet_fingerprint(model.unet) == before


def test_same_seed_same_video_and_windows_cover_long_clips(model):
    module = randomize_(new_motion_module(model.unet, max_frames=8), scale=0.05)
    s = settings(frames=11, context_length=6, context_overlap=2, closed_loop=True)
    a, b = generate(model, module, s), generate(model, module, s)
    assert a.frames.shape == (11, 64, 64, 3) and a.frames.dtype.name == "uint8"
    assert (a.frames == b.frames).all()
    assert "CCDM frames: 11" in a.infotext and "CCDM context: 6/2/loop" in a.infotext and "Seed: 7" in a.infotext


@pytest.mark.parametrize("kw,words", [
    ({"frames": 0}, "frames must be an integer in 1..1024"), ({"width": 100}, "multiple of 8"),
    ({"height": 32}, "height must be an integer in 64..2048"), ({"context_overlap": 16}, "context_overlap"),
    ({"sampler": "plms"}, "unknown sampler"), ({"fps": 0}, "fps"), ({"steps": 0}, "steps"),
])
def test_bad_settings_name_the_field(kw, words):
    with pytest.raises(CCDMError, match=words):
        settings(**kw)


def test_context_longer_than_module_positions_is_refused(model):
    module = new_motion_module(model.unet, max_frames=4)
    with pytest.raises(CCDMError, match="exceeds the motion module's 4 frame positions"):
        sample_latents(model, module, settings(frames=8, context_length=6, context_overlap=1), seed=0)
