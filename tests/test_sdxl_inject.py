"""SDXL motion modules in an SDXL-structure UNet (conftest.make_sdxl_unet: SDXL's 3 levels, no attention at the
first, a `y` input; the WebUI's sgm UNet cannot be installed here, the live tier runs that): the slots SDXL modules
were trained with, exact restore after success, error and interrupt, frames mixing within a video only, HotShot-XL's
GroupNorm over frames, the `y` vector sliced per window with the frames, and SD1.x/SDXL mismatches refused by name
before anything changes."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ccdm_core import CCDMError, inject_motion, new_motion_module
from ccdm_core.attention import sdpa_attention
from ccdm_core.inject import TemporalSlot
from ccdm_core.unet_slots import unet_slots
from ccdm_core.webui.patches import video_patches
from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError
from conftest import make_sdxl_unet, make_unet, randomize_, unet_inputs
from test_webui_unet import FakeSDModel, assert_restored, snapshot

SETTINGS = CCDMSettings(enabled=True, frames=6, context_length=4, context_overlap=2)


def sdxl_inputs(frames: int, videos: int = 1, seed: int = 1):
    x, t, ctx = unet_inputs(frames=frames, videos=videos, seed=seed)
    y = torch.randn(x.shape[0], 1, generator=torch.Generator().manual_seed(seed + 1))
    return x, t, ctx, y


@pytest.fixture(scope="module")
def sdxl():
    unet = make_sdxl_unet()
    modules = {fmt: randomize_(new_motion_module(unet, fmt, max_frames=8), seed=4, scale=0.05)
               for fmt in ("animatediff-sdxl", "hotshot-xl")}
    sd_model = FakeSDModel(unet)
    sd_model.is_sdxl = True
    return sd_model, modules


def test_the_slots_are_sdxls_six_input_and_nine_output_blocks(sdxl):
    sd_model, _ = sdxl
    slots = unet_slots(sd_model.model.diffusion_model)
    assert [s.where for s in slots.values()] == [f"input_blocks.{i}" for i in (1, 2, 4, 5, 7, 8)] + [
        f"output_blocks.{i}" for i in range(9)]
    assert "mid_block.motion_modules.0" not in slots
    assert [slots[f"up_blocks.{lvl}.motion_modules.2"].index for lvl in range(2)] == [2, 2]  # before the Upsample


@pytest.mark.parametrize("fmt", ["animatediff-sdxl", "hotshot-xl"])
@torch.no_grad()
def test_injection_mixes_frames_within_a_video_and_restores_exactly(sdxl, fmt):
    sd_model, modules = sdxl
    unet, module = sd_model.model.diffusion_model, modules[fmt]
    x, t, ctx, y = sdxl_inputs(frames=4, videos=2)
    before, names = unet(x, t, ctx, y=y), [(n, id(m)) for n, m in unet.named_modules()]
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    x2 = x.clone()
    x2[4:] += torch.randn_like(x2[4:])  # the second video changes
    x3 = x.clone()
    x3[0] += 1.0  # frame 0 of the first video changes
    with inject_motion(unet, module, num_frames=4):
        a, b, c = unet(x, t, ctx, y=y), unet(x2, t, ctx, y=y), unet(x3, t, ctx, y=y)
    assert not torch.equal(a, before)  # the module acts
    assert torch.equal(a[:4], b[:4])  # the first video never sees the second
    assert not torch.equal(a[1:4], c[1:4])  # frames mix within the video
    assert [(n, id(m)) for n, m in unet.named_modules()] == names
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    assert torch.equal(unet(x, t, ctx, y=y), before)


@torch.no_grad()
def test_hotshot_normalises_the_unets_groupnorms_over_frames_and_animatediff_sdxl_does_not(sdxl):
    sd_model, modules = sdxl
    unet = sd_model.model.diffusion_model
    norms = [m for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert modules["hotshot-xl"].info.groupnorm_over_frames and not modules["animatediff-sdxl"].info.groupnorm_over_frames
    with inject_motion(unet, modules["hotshot-xl"], num_frames=4):
        assert any("forward" in vars(n) for n in norms)
    with inject_motion(unet, modules["animatediff-sdxl"], num_frames=4):
        assert not any("forward" in vars(n) for n in norms)
    assert not any("forward" in vars(n) for n in norms)


@pytest.mark.parametrize("fmt", ["animatediff-sdxl", "hotshot-xl"])
@torch.no_grad()
def test_webui_patches_on_sdxl_restore_after_success_error_and_interrupt(sdxl, fmt):
    sd_model, modules = sdxl
    unet = sd_model.model.diffusion_model
    x, t, ctx, y = sdxl_inputs(frames=6)
    before, snap = unet(x, t, context=ctx, y=y), snapshot(sd_model)
    with video_patches(sd_model, modules[fmt], SETTINGS, sdpa_attention):
        assert any(isinstance(m, TemporalSlot) for m in unet.modules())
        out = unet(x, t, context=ctx, y=y)  # two windows of 4: `y` is sliced with the frames
    assert out.shape == x.shape and not torch.equal(out, before)
    assert_restored(sd_model, snap)
    for exc in (RuntimeError("boom mid-run"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with video_patches(sd_model, modules[fmt], SETTINGS, sdpa_attention):
                unet(x, t, context=ctx, y=y)
                raise exc
        assert_restored(sd_model, snap)
    assert torch.equal(unet(x, t, context=ctx, y=y), before)


@torch.no_grad()
def test_the_window_gets_its_frames_y(sdxl):
    """One window over the whole clip equals the windowed run's per-window slicing of y: change y of a frame
    outside a window and that window's frames do not change."""
    sd_model, modules = sdxl
    unet = sd_model.model.diffusion_model
    x, t, ctx, y = sdxl_inputs(frames=6)
    y2 = y.clone()
    y2[5] += 3.0  # frame 5 is not in the first window (frames 0..3)
    settings = dataclasses.replace(SETTINGS, cross_frame_strength=0.0, fusion_strength=0.0)
    with video_patches(sd_model, modules["animatediff-sdxl"], settings, sdpa_attention):
        a, b = unet(x, t, context=ctx, y=y), unet(x, t, context=ctx, y=y2)
    assert not torch.equal(a[5], b[5])
    assert torch.allclose(a[0], b[0]) and not torch.equal(a[3], b[3])  # frame 3 is also in the second window


def test_sd1_and_sdxl_mismatches_are_refused_by_name_before_anything_changes(sdxl):
    sd_model, modules = sdxl
    sd1_unet = make_unet()
    sd1_module = new_motion_module(sd1_unet, "animatediff-v2", max_frames=8)
    snap = snapshot(sd_model)
    with pytest.raises(CCDMSettingsError, match="made for SD1.x, but the loaded checkpoint is SDXL") as err:
        with video_patches(sd_model, sd1_module, SETTINGS, sdpa_attention):
            pass
    assert err.value.field == "motion_module"
    assert_restored(sd_model, snap)
    sd1_model = FakeSDModel(sd1_unet)
    with pytest.raises(CCDMSettingsError, match="animatediff-sdxl, made for SDXL, but the loaded checkpoint is SD1.x"):
        with video_patches(sd1_model, modules["animatediff-sdxl"], SETTINGS, sdpa_attention):
            pass
    names = [(n, id(m)) for n, m in sd1_unet.named_modules()]
    with pytest.raises(CCDMError, match="made for SDXL, but this UNet is SD1.x"):
        with inject_motion(sd1_unet, modules["hotshot-xl"], 4):
            pass
    assert [(n, id(m)) for n, m in sd1_unet.named_modules()] == names
    with pytest.raises(CCDMError, match="does not fit this SDXL UNet"):
        new_motion_module(sd_model.model.diffusion_model, "animatediff-v2")
