"""Video to video's init frames: img2img per frame over the clip, exact at both ends of the strength range."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ccdm_core import CCDMError, new_motion_module
from ccdm_core.init_frames import (format_source_label, img2img_sigmas, noised_init, parse_source_label)
from ccdm_core.pipeline import VideoSettings, decode_frames, encode_source, generate
from ccdm_core.sampling import ddim_sigmas
from ccdm_core.schedules import make_alphas_cumprod
from ccdm_core.sd.loader import build_default_model
from conftest import randomize_


@pytest.fixture(scope="module")
def model():
    m = build_default_model(seed=0)
    randomize_(m.unet.out, seed=3, scale=0.05)  # the zero-initialised output layer must act
    return m


def source(frames=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, size, size, 3))
    return np.clip(base + rng.integers(-20, 20, (frames, size, size, 3)), 0, 255).astype(np.uint8)


def settings(**kw):
    base = dict(prompt="a cat", frames=4, width=64, height=64, steps=4, seed=7, fusion_strength=0.0,
                cross_frame_strength=0.0, camera="none")
    return VideoSettings(**{**base, **kw})


def test_img2img_sigmas_follow_the_webui_steps():
    sigmas = ddim_sigmas(make_alphas_cumprod("scaled_linear", 0.00085, 0.012, 1000), 20)
    assert torch.equal(img2img_sigmas(sigmas, 1.0), sigmas)
    assert img2img_sigmas(sigmas, 0.0).tolist() == [0.0]
    tail = img2img_sigmas(sigmas, 0.6)
    assert len(tail) == int(0.6 * 20) + 2 and torch.equal(tail, sigmas[-len(tail):])
    with pytest.raises(CCDMError, match="denoising_strength"):
        img2img_sigmas(sigmas, 1.5)


def test_strength_0_returns_the_source_through_the_vae(model):
    frames = source()
    result = generate(model, None, settings(denoising_strength=0.0), source_frames=frames, source_label="x")
    assert np.array_equal(result.frames, decode_frames(model, encode_source(model, frames)))


def test_strength_1_ignores_the_init(model):
    module = randomize_(new_motion_module(model.unet), seed=1, scale=0.02)
    plain = generate(model, module, settings())
    v2v = generate(model, module, settings(denoising_strength=1.0), source_frames=source(), source_label="x")
    assert np.array_equal(plain.frames, v2v.frames)


def test_in_between_the_source_steers_each_frame(model):
    """No motion module and no fusion: frames are independent img2img, so a change to source frame 2 changes
    output frame 2 only; with the init, the output is nearer the source than text to video is."""
    a, b = source(), source()
    b[2] = 255 - b[2]
    out_a = generate(model, None, settings(denoising_strength=0.5), source_frames=a, source_label="x").frames
    out_b = generate(model, None, settings(denoising_strength=0.5), source_frames=b, source_label="x").frames
    changed = [not np.array_equal(out_a[i], out_b[i]) for i in range(4)]
    assert changed == [False, False, True, False]
    plain = generate(model, None, settings()).frames
    round_trip = decode_frames(model, encode_source(model, a)).astype(float)
    assert np.abs(out_a - round_trip).mean() < np.abs(plain - round_trip).mean()


def test_infotext_names_the_source_and_the_strength(model):
    label = format_source_label("0123456789abcdef", 3, 2, 4)
    result = generate(model, None, settings(denoising_strength=0.3), source_frames=source(), source_label=label)
    assert "CCDM source: 0123456789 3/2/4" in result.infotext and "Denoising strength: 0.3" in result.infotext
    assert parse_source_label("0123456789 3/2/4") == {"source_sha256": "0123456789", "source_start": 3,
                                                       "source_stride": 2, "frames": 4}
    assert "CCDM source" not in generate(model, None, settings()).infotext


def test_bad_init_is_refused(model):
    with pytest.raises(CCDMError, match="denoising_strength"):
        settings(denoising_strength=-0.1)
    with pytest.raises(CCDMError, match="source frames"):
        generate(model, None, settings(), source_frames=source(frames=3), source_label="x")
    with pytest.raises(CCDMError, match="do not match"):
        noised_init(torch.zeros(1, 4, 2, 8, 8), torch.zeros(1, 4, 3, 8, 8), torch.ones(2), 0.5)
    with pytest.raises(CCDMError, match="is not"):
        parse_source_label("abc 1/2")
