"""The WebUI run's model patches on real tiny ldm UNets: windows per video inside the CFG batch (batched and
split cond/uncond identical, no cross-video leakage), exact restore on success/error/interrupt, refusals before
touching the UNet, attention dispatch, and clip writing."""
from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pytest
import torch
from torch import nn

from ccdm_core import new_motion_module
from ccdm_core.attention import current_backend, sdpa_attention
from ccdm_core.cross_frame import FrameContext, self_attention_layers
from ccdm_core.inject import TemporalSlot
from ccdm_core.schedules import make_alphas_cumprod
from ccdm_core.video import read_infotext, read_video
from ccdm_core.webui import attention_dispatch
from ccdm_core.webui.outputs import dated_folder, frames_from_unit_tensors, next_sequence_number, write_clip
from ccdm_core.webui.patches import active_runs, restore_leftovers, video_patches
from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError
from ccdm_core.webui.video_unet import count_videos, plan_for, windowed_forward, windowed_unet_forward
from conftest import make_unet, randomize_, unet_inputs


class FakeSDModel(nn.Module):
    """Shaped like the WebUI's sd_model: `.model.diffusion_model` and an `alphas_cumprod` buffer."""

    def __init__(self, unet):
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = unet
        self.register_buffer("alphas_cumprod", make_alphas_cumprod("scaled_linear").float())


@pytest.fixture(scope="module")
def rig():
    unet = make_unet()
    module = randomize_(new_motion_module(unet, "animatediff-v2", max_frames=8), seed=3, scale=0.05)
    return FakeSDModel(unet), module


def snapshot(sd_model):
    unet = sd_model.model.diffusion_model
    return ([(n, id(m)) for n, m in unet.named_modules()], {k: v.clone() for k, v in unet.state_dict().items()},
            sd_model.alphas_cumprod, dict(unet.__dict__))


def assert_restored(sd_model, snap):
    names, state, alphas, attrs = snap
    unet = sd_model.model.diffusion_model
    assert [(n, id(m)) for n, m in unet.named_modules()] == names
    assert all(torch.equal(v, state[k]) for k, v in unet.state_dict().items())
    assert sd_model.alphas_cumprod is alphas
    assert "forward" not in unet.__dict__ and unet.__dict__.keys() == attrs.keys()
    assert not any("forward" in vars(layer) for layer in self_attention_layers(unet))  # cross-frame undone
    assert current_backend() is sdpa_attention and active_runs() == 0


# ---------------------------------------------------------------- pure splitting


def test_every_unet_call_holds_one_window_of_one_video():
    calls, frames_seen = [], []
    x = torch.arange(2 * 6, dtype=torch.float64).view(12, 1, 1, 1)
    t = torch.arange(12)

    def forward(xs, ts, context=None):
        calls.append(ts.tolist())
        return xs * 2
    out = windowed_forward(forward, frames_seen.append, x, (t,), {"context": None}, 6, plan_for(6, 4, 2, True))
    assert torch.equal(out, x * 2)  # identical windows' weighted average of 2x is exactly 2x
    assert calls == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 0, 1], [6, 7, 8, 9], [8, 9, 10, 11], [10, 11, 6, 7]]
    assert frames_seen == [4] * 6


def test_batch_that_is_not_whole_videos_is_refused():
    assert count_videos(32, 16) == 2
    with pytest.raises(ValueError, match="not a whole number of 16-frame videos"):
        count_videos(20, 16)


# ---------------------------------------------------------------- real ldm UNet, WebUI batch layouts

SETTINGS = CCDMSettings(enabled=True, frames=6, context_length=4, context_overlap=2)


@torch.no_grad()
@pytest.mark.parametrize("settings", [SETTINGS, dataclasses.replace(SETTINGS, closed_loop=True),
                                      dataclasses.replace(SETTINGS, context_length=8, context_overlap=0)])
def test_batched_and_split_cond_uncond_are_identical(rig, settings):
    sd_model, module = rig
    unet, f = sd_model.model.diffusion_model, settings.frames
    x, t, ctx = unet_inputs(frames=f, videos=2)
    with video_patches(sd_model, module, settings, sdpa_attention):
        batched = unet(x, t, context=ctx)  # batch_cond_uncond on: [cond video, uncond video]
        split = torch.cat([unet(x[:f], t[:f], context=ctx[:f]), unet(x[f:], t[f:], context=ctx[f:])])
    assert torch.equal(batched, split)


@torch.no_grad()
def test_no_cross_video_leakage(rig):
    sd_model, module = rig
    unet, f = sd_model.model.diffusion_model, SETTINGS.frames
    x, t, ctx = unet_inputs(frames=f, videos=2)
    x2, ctx2 = x.clone(), ctx.clone()
    x2[f:] += torch.randn_like(x2[f:])
    ctx2[f:] += 1.0
    with video_patches(sd_model, module, SETTINGS, sdpa_attention):
        a = unet(x, t, context=ctx)
        b = unet(x2, t, context=ctx2)
        c = unet(torch.cat([x[:f], x[3:4].expand(f, -1, -1, -1)]), t, context=ctx)
    assert torch.equal(a[:f], b[:f]) and torch.equal(a[:f], c[:f])  # the cond video never sees the other one
    assert not torch.equal(a[f:], b[f:])
    base = unet(x, t, context=ctx)
    assert not torch.equal(a, base)  # the module did something (frames mix within each video)


@torch.no_grad()
def test_restores_exactly_after_success_error_and_interrupt(rig):
    sd_model, module = rig
    unet = sd_model.model.diffusion_model
    x, t, ctx = unet_inputs(frames=6)
    before, snap = unet(x, t, context=ctx), snapshot(sd_model)
    with video_patches(sd_model, module, SETTINGS, sdpa_attention) as handle:
        assert any(isinstance(m, TemporalSlot) for m in unet.modules())
        assert not torch.equal(sd_model.alphas_cumprod, snap[2]) and sd_model.alphas_cumprod.dtype == torch.float32
        assert torch.allclose(sd_model.alphas_cumprod.double(), make_alphas_cumprod("linear"), atol=1e-6)
        assert "forward" in unet.__dict__ and handle.num_frames == 4
    assert_restored(sd_model, snap)
    for exc in (RuntimeError("boom mid-run"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with video_patches(sd_model, module, SETTINGS, sdpa_attention):
                unet(x, t, context=ctx)
                raise exc
        assert_restored(sd_model, snap)
    assert torch.equal(unet(x, t, context=ctx), before)


@torch.no_grad()
def test_existing_instance_forward_is_kept_and_restored_by_identity(rig):
    """Another extension (ControlNet style) may have its own instance-level forward: ours wraps and restores it."""
    sd_model, module = rig
    unet = sd_model.model.diffusion_model
    calls = []

    def other_forward(x, timesteps=None, context=None, **kw):
        calls.append(x.shape[0])
        return type(unet).forward(unet, x, timesteps, context, **kw)
    unet.forward = other_forward
    try:
        x, t, ctx = unet_inputs(frames=6)
        with video_patches(sd_model, module, SETTINGS, sdpa_attention):
            unet(x, t, context=ctx)
        assert unet.__dict__["forward"] is other_forward and calls == [4, 4]
    finally:
        del unet.forward


def test_leftover_run_is_restored_defensively(rig):
    sd_model, module = rig
    snap = snapshot(sd_model)
    run = video_patches(sd_model, module, SETTINGS, sdpa_attention)
    run.__enter__()  # a run whose finally never came (e.g. a killed thread)
    assert active_runs() == 1
    assert restore_leftovers() == 1
    assert_restored(sd_model, snap)
    run.__exit__(None, None, None)  # the late exit is harmless
    assert_restored(sd_model, snap)


@pytest.mark.parametrize("case,words", [("sdxl", "SDXL"), ("sd2", "SD2"), ("width", "does not fit"),
                                        ("context", "exceeds the motion module's 8 frame positions")])
def test_refusals_leave_the_model_untouched(rig, case, words):
    sd_model, module = rig
    settings = SETTINGS
    if case == "sdxl":
        sd_model.is_sdxl = True
    elif case == "sd2":
        sd_model.is_sd2 = True
    elif case == "width":
        module = new_motion_module(make_unet(model_channels=64), "animatediff-v2")
    else:
        settings = dataclasses.replace(SETTINGS, frames=12, context_length=12)
    snap = snapshot(sd_model)
    try:
        with pytest.raises(CCDMSettingsError, match=words) as info:
            with video_patches(sd_model, module, settings, sdpa_attention):
                pass
        assert info.value.status_code == 422
    finally:
        sd_model.__dict__.pop("is_sdxl", None)
        sd_model.__dict__.pop("is_sd2", None)
    assert_restored(sd_model, snap)


def test_forward_replaced_during_the_run_is_reported(rig):
    sd_model, module = rig
    unet = sd_model.model.diffusion_model
    snap = snapshot(sd_model)
    with pytest.raises(RuntimeError, match="forward was replaced"):
        with windowed_unet_forward(unet, type("H", (), {"num_frames": 1})(), 4, 4, 0, False):
            unet.forward = lambda *a, **k: None
    assert "forward" not in unet.__dict__
    assert_restored(sd_model, snap)


# ---------------------------------------------------------------- attention dispatch


def _fake_xformers(q, k, v):
    """memory_efficient_attention's contract: `b n h d` in and out."""
    out = sdpa_attention(*(t.transpose(1, 2) for t in (q, k, v)))
    return out.transpose(1, 2)


def test_xformers_backend_converts_layout_and_chunks(monkeypatch):
    q, k, v = (torch.randn(9, 8, 5, 16) for _ in range(3))
    monkeypatch.setattr(attention_dispatch, "XFORMERS_MAX_BATCH_HEADS", 16)  # chunks of 2 batches
    fn = attention_dispatch.make_xformers_attention(_fake_xformers)
    assert torch.allclose(fn(q, k, v), sdpa_attention(q, k, v), atol=1e-6)


def test_backend_follows_the_webui_choice():
    cpu, f32 = torch.device("cpu"), torch.float32
    for name in (None, "sdp", "sdp-no-mem", "sub-quadratic", "Doggettx", "V1", "InvokeAI"):
        assert attention_dispatch.backend_for(name, cpu, f32)[:2] == ("sdpa", sdpa_attention)
    ops = type("Ops", (), {"memory_efficient_attention": staticmethod(_fake_xformers)})
    name, fn, note = attention_dispatch.backend_for("xformers", cpu, f32, import_module=lambda n: ops)
    assert name == "xformers" and note is None
    broken = type("Ops", (), {"memory_efficient_attention": staticmethod(lambda q, k, v: 1 / 0)})
    name, fn, note = attention_dispatch.backend_for("xformers", cpu, f32, import_module=lambda n: broken)
    assert (name, fn) == ("sdpa", sdpa_attention) and "ZeroDivisionError" in note

    def missing(name):
        raise ImportError("No module named 'xformers'")
    assert "not importable" in attention_dispatch.backend_for("xformers", cpu, f32, import_module=missing)[2]


# ---------------------------------------------------------------- outputs


def test_clip_files_names_infotext_and_frames(tmp_path):
    folder = dated_folder(tmp_path / "txt2vid-videos", datetime.date(2024, 5, 6))
    assert folder.name == "2024-05-06" and next_sequence_number(folder) == 0
    frames = np.random.default_rng(0).integers(0, 255, (4, 16, 24, 3), dtype=np.uint8)
    info = "a cat\nNegative prompt: dog\nSteps: 4, Seed: 42, CCDM motion module: m [0123456789], CCDM frames: 4"
    clip = write_clip(frames, folder, 42, ["mp4", "png"], 8.0, info, save_frames=True)
    assert clip.stem == "00000-42" and [p.name for p in clip.videos.values()] == ["00000-42.mp4", "00000-42.png"]
    assert read_infotext(clip.videos["mp4"]) == info and read_infotext(clip.videos["png"]) == info
    assert (folder / "00000-42.txt").read_text(encoding="utf-8") == info
    assert len(clip.frames) == 4 and read_infotext(clip.frames[0]) == info
    assert read_video(clip.videos["png"])[0].shape == (4, 16, 24, 3)
    again = write_clip(frames, folder, 43, ["gif"], 8.0, info)
    assert again.stem == "00001-43" and again.frames == []
    assert sorted(p.name for p in folder.iterdir() if not p.is_dir()) == [
        "00000-42.mp4", "00000-42.png", "00000-42.txt", "00001-43.gif", "00001-43.txt"]


def test_frames_from_webui_images():
    t = torch.rand(3, 8, 8)
    frames = frames_from_unit_tensors([t, t])
    assert frames.shape == (2, 8, 8, 3) and frames.dtype == np.uint8
    from PIL import Image
    assert np.array_equal(frames_from_unit_tensors([Image.fromarray(frames[0])])[0], frames[0])


# ---------------------------------------------------------------- cross-frame attention (issue 4)


def _reference_patches(sd_model, module, settings):
    """The run's patches as they were before cross-frame attention existed (motion, schedule, windows)."""
    import contextlib
    from ccdm_core.attention import use_attention_backend
    from ccdm_core.inject import inject_motion
    from ccdm_core.schedules import swap_alphas_cumprod
    from ccdm_core.webui.patches import module_alphas_cumprod

    unet = sd_model.model.diffusion_model
    stack = contextlib.ExitStack()
    stack.enter_context(use_attention_backend(sdpa_attention))
    stack.enter_context(swap_alphas_cumprod(sd_model, module_alphas_cumprod(sd_model, module)))
    handle = stack.enter_context(inject_motion(unet, module, min(settings.frames, settings.context_length)))
    stack.enter_context(windowed_unet_forward(unet, handle, settings.frames, settings.context_length,
                                              settings.context_overlap, settings.closed_loop))
    return stack


@torch.no_grad()
def test_strength_zero_is_bit_identical_to_the_run_without_cross_frame(rig):
    sd_model, module = rig
    unet = sd_model.model.diffusion_model
    x, t, ctx = unet_inputs(frames=SETTINGS.frames, videos=2)
    with _reference_patches(sd_model, module, SETTINGS):
        reference = unet(x, t, context=ctx)
    off = dataclasses.replace(SETTINGS, cross_frame_strength=0.0, fusion_strength=0.0)
    with video_patches(sd_model, module, off, sdpa_attention, keyframes=[3]):
        assert not any("forward" in vars(layer) for layer in self_attention_layers(unet))
        assert torch.equal(unet(x, t, context=ctx), reference)
    with video_patches(sd_model, module, SETTINGS, sdpa_attention):
        assert all("forward" in vars(layer) for layer in self_attention_layers(unet))
        assert not torch.equal(unet(x, t, context=ctx), reference)


@torch.no_grad()
def test_cross_frame_patch_lives_only_in_the_block_and_is_restored_after_an_error(rig):
    sd_model, module = rig
    unet = sd_model.model.diffusion_model
    layers = self_attention_layers(unet)
    assert layers
    mine = layers[0].forward = lambda *a, **k: type(layers[0]).forward(layers[0], *a, **k)  # someone else's
    try:
        snap = snapshot(sd_model)
        x, t, ctx = unet_inputs(frames=6)
        with pytest.raises(RuntimeError, match="boom"):
            with video_patches(sd_model, module, SETTINGS, sdpa_attention):
                assert vars(layers[0])["forward"] is not mine and "forward" in vars(layers[1])
                unet(x, t, context=ctx)
                raise RuntimeError("boom")
        assert vars(layers[0])["forward"] is mine and "forward" not in vars(layers[1])
    finally:
        del layers[0].forward
    assert_restored(sd_model, snap)


def test_each_window_tells_cross_frame_attention_its_anchors():
    seen = []
    ctx = FrameContext(0.5)

    def forward(x, t):
        seen.append((x.shape[0], list(ctx.anchors)))
        return x

    from ccdm_core.webui.video_unet import WindowedUNetForward
    windows = plan_for(6, 4, 2, False)
    wrapper = WindowedUNetForward(nn.Identity(), lambda x, t: forward(x, t), types_ns(), 6, windows, ctx, [3])
    x = torch.randn(12, 1, 1, 1)
    wrapper(x, torch.zeros(12))
    from ccdm_core.cross_frame import window_anchors
    expected = [(len(w), window_anchors(w, [3])) for w in windows] * 2  # per video, per window
    assert seen == expected and any(a != [0] * len(a) for _, a in seen)


def types_ns():
    import types
    return types.SimpleNamespace(num_frames=None)
