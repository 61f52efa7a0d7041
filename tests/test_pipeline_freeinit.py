"""FreeInit in the standalone pipeline: 1 iteration is the plain run bit for bit, more passes re-sample from
re-initialised noise with a progress total of passes x steps, an interrupt in the second pass leaves the UNet as it
was, and init frames (video to video) refuse it by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ccdm_core import CCDMError, new_motion_module
from ccdm_core.pipeline import VideoSettings, generate, sample_latents
from ccdm_core.sd.loader import build_default_model
from conftest import randomize_


@pytest.fixture(scope="module")
def model():
    m = build_default_model(seed=0)
    randomize_(m.unet.out, seed=3, scale=0.05)
    return m


@pytest.fixture(scope="module")
def module(model):
    return randomize_(new_motion_module(model.unet), seed=1, scale=0.02)


def settings(**kw):
    base = dict(prompt="a cat", frames=4, width=64, height=64, steps=3, seed=7, camera="none")
    return VideoSettings(**{**base, **kw})


def test_one_iteration_is_the_plain_run(model, module):
    plain = sample_latents(model, module, settings(), seed=7)
    assert torch.equal(sample_latents(model, module, settings(freeinit_iterations=1), seed=7), plain)


def test_more_passes_resample_with_a_total_progress(model, module):
    one, calls = [], []
    sample_latents(model, module, settings(), seed=7, callback=one.append)
    a = sample_latents(model, module, settings(freeinit_iterations=3), seed=7, callback=calls.append)
    assert len(calls) == 3 * len(one) and one[0]["total"] == len(one)  # passes x steps
    b = sample_latents(model, module, settings(freeinit_iterations=3), seed=7)
    assert torch.equal(a, b)  # the fresh noise comes from the video's generator: reproducible
    assert not torch.equal(a, sample_latents(model, module, settings(), seed=7))
    c = sample_latents(model, module, settings(freeinit_iterations=2, freeinit_filter="ideal"), seed=7)
    assert not torch.equal(a, c)


def test_an_interrupt_in_the_second_pass_leaves_the_unet_as_it_was(model, module):
    before = [(n, id(m), "forward" in m.__dict__) for n, m in model.unet.named_modules()]

    def interrupt(info):
        if info["i"] == 1 and interrupt.passes == 1:
            raise KeyboardInterrupt
        if info["i"] == 2:
            interrupt.passes += 1
    interrupt.passes = 0
    with pytest.raises(KeyboardInterrupt):
        sample_latents(model, module, settings(freeinit_iterations=2), seed=7, callback=interrupt)
    assert [(n, id(m), "forward" in m.__dict__) for n, m in model.unet.named_modules()] == before


def test_infotext_and_bad_settings(model):
    result = generate(model, None, settings(freeinit_iterations=2, steps=2))
    assert "CCDM FreeInit: 2/butterworth/0.25/0.25/fresh" in result.infotext
    assert "CCDM FreeInit" not in generate(model, None, settings(steps=2)).infotext
    with pytest.raises(CCDMError, match="freeinit"):
        settings(freeinit_iterations=6)
    with pytest.raises(CCDMError, match="freeinit_iterations"):
        generate(model, None, settings(freeinit_iterations=2, steps=2),
                 source_frames=np.zeros((4, 64, 64, 3), np.uint8), source_label="x")
