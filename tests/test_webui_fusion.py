"""Fusion and keyframe guidance after CFG in the WebUI: the `(b f) c h w` step equals the standalone
FeedbackDenoiser on `b c f h w`, never mixes videos, is a no-op at strength 0 and outside a CCDM run."""
from __future__ import annotations

import base64
import io
import types

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from ccdm_core.feedback import FeedbackDenoiser
from ccdm_core.fusion import PatchFusion
from ccdm_core.webui.guidance import (Guidance, active_guidance, build_guidance, current_guidance, fusion_settings,
                                      guide_denoised, on_cfg_after_cfg)
from ccdm_core.webui.settings import CCDMSettings, CCDMSettingsError

F, STEPS = 6, 8


def _guidance(strength=0.5, mode="temporal", keys=True, module=None, videos_frames=F):
    g = torch.Generator().manual_seed(4)
    latents = {0: torch.randn(4, 8, 8, generator=g), 4: torch.randn(4, 8, 8, generator=g)} if keys else {}
    settings = CCDMSettings(frames=videos_frames, fusion_strength=strength, fusion_mode=mode)
    return Guidance(videos_frames, fusion_settings(settings), latents, {0: 1.0, 4: 0.6} if keys else {}, module)


def _standalone(videos: torch.Tensor, step: int, g: Guidance) -> torch.Tensor:
    """FeedbackDenoiser (the standalone pipeline) around a denoiser that returns `videos`, at sampling `step`."""
    sigmas = torch.linspace(10.0, 0.0, STEPS + 1)
    feedback = FeedbackDenoiser(lambda x, sigma: videos, sigmas, g.fusion, g.key_latents, g.key_strengths, g.module)
    return feedback(videos, sigmas[step])


@pytest.mark.parametrize("mode", ["uniform", "temporal", "keyframe"])
@pytest.mark.parametrize("step", [0, 2, 5])
@pytest.mark.parametrize("trained", [False, True])
def test_after_cfg_equals_the_standalone_feedback_per_video(mode, step, trained):
    module = PatchFusion() if trained else None
    if module is not None:
        torch.manual_seed(2)
        for p in module.parameters():
            p.data.add_(torch.randn_like(p) * 0.05)
    g = _guidance(mode=mode, module=module)
    x = torch.randn(2 * F, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = guide_denoised(x, step, STEPS, g)
    videos = rearrange(x, "(b f) c h w -> b c f h w", f=F)
    for b in range(2):
        expected = _standalone(videos[b:b + 1], step, g)
        got = rearrange(out[b * F:(b + 1) * F], "f c h w -> 1 c f h w")
        assert torch.equal(got, expected)
    assert out.shape == x.shape


def test_videos_never_mix():
    g = _guidance()
    x = torch.randn(3 * F, 4, 8, 8)
    y = x.clone()
    y[F:2 * F] += torch.randn(F, 4, 8, 8)
    a, b = guide_denoised(x, 1, STEPS, g), guide_denoised(y, 1, STEPS, g)
    assert torch.equal(a[:F], b[:F]) and torch.equal(a[2 * F:], b[2 * F:]) and not torch.equal(a[F:2 * F], b[F:2 * F])
    assert not torch.equal(a, x)  # it did something


def test_strength_zero_without_keyframes_changes_nothing_and_is_never_made_current():
    g = _guidance(strength=0.0, keys=False)
    x = torch.randn(F, 4, 8, 8)
    assert guide_denoised(x, 0, STEPS, g) is x and g.does_nothing()
    params = types.SimpleNamespace(x=x, sampling_step=0, total_sampling_steps=STEPS)
    with active_guidance(g):
        assert current_guidance() is None
        on_cfg_after_cfg(params)
    assert params.x is x


def test_callback_acts_only_while_a_run_is_sampling_and_is_cleared_after_an_error():
    g = _guidance()
    x = torch.randn(F, 4, 8, 8)
    params = types.SimpleNamespace(x=x, sampling_step=0, total_sampling_steps=STEPS)
    on_cfg_after_cfg(params)
    assert params.x is x
    with pytest.raises(RuntimeError):
        with active_guidance(g):
            on_cfg_after_cfg(params)
            assert torch.equal(params.x, guide_denoised(x, 0, STEPS, g))
            raise RuntimeError("boom mid-run")
    assert current_guidance() is None


def _png_b64(value: int) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _encode(pixels: torch.Tensor) -> torch.Tensor:
    """A stand-in VAE: 8x average pool, 4 channels."""
    pooled = torch.nn.functional.avg_pool2d(pixels, 8)
    return torch.cat([pooled, pooled[:, :1]], dim=1)


def test_build_guidance_encodes_data_urls_and_base64_once_and_loads_the_fusion_module():
    calls = []

    def encode(pixels):
        calls.append(tuple(pixels.shape))
        return _encode(pixels)
    keyframes = [{"frame": 0, "image": "data:image/png;base64," + _png_b64(255), "strength": 1.0},
                 {"frame": 3, "image": _png_b64(0), "strength": 0.5}, {"frame": 5, "prompt": "a dog"}]
    settings = CCDMSettings(frames=F, keyframes=keyframes)
    extras = PatchFusion().extras()
    g = build_guidance(settings, encode, 64, 32, extras, torch.device("cpu"))
    assert calls == [(1, 3, 32, 64)] * 2 and sorted(g.key_latents) == [0, 3] and g.keyframes == [0, 3]
    assert g.key_strengths == {0: 1.0, 3: 0.5} and g.key_latents[0].shape == (4, 4, 8)
    assert torch.allclose(g.key_latents[0], torch.ones(4, 4, 8))
    assert torch.allclose(g.key_latents[3], -torch.ones(4, 4, 8))
    assert isinstance(g.module, PatchFusion)
    off = build_guidance(CCDMSettings(frames=F, fusion_strength=0.0), encode, 64, 32, extras)
    assert off.does_nothing() and off.module is None and len(calls) == 2


def test_keyframe_images_are_never_read_as_server_files(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(path)
    settings = CCDMSettings(frames=F, keyframes=[{"frame": 1, "image": str(path)}])
    with pytest.raises(CCDMSettingsError) as info:
        build_guidance(settings, _encode, 64, 64)
    assert info.value.field == "keyframes" and info.value.status_code == 422


def test_hires_pass_gets_keyframe_latents_at_its_size():
    g = _guidance(strength=0.0)
    x = torch.randn(F, 4, 16, 12)
    out = guide_denoised(x, 0, STEPS, g)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert g.at_size(8, 8) is g and g.key_latents[0].shape == (4, 8, 8)
    assert g.at_size(16, 12) is g.at_size(16, 12)  # resized once per size
