"""Fusion, cross-frame attention, keyframes and feedback: off = absent, exact restore, no leakage, fixed points."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from ccdm_core import CCDMError
from ccdm_core.cross_frame import FrameContext, cross_frame_attention, window_anchors
from ccdm_core.feedback import FeedbackDenoiser
from ccdm_core.fusion import FusionMode, FusionSettings, PatchFusion, frame_weights, fuse_prediction
from ccdm_core.pipeline import VideoSettings, _alphas_cumprod, _anchor_first, _sigmas, sample_latents
from ccdm_core.sampling import EpsVideoDenoiser, get_sampler, initial_noise, video_generators, video_noise_sampler
from ccdm_core.sd.loader import build_default_model
from ccdm_core.sd.sdpa import sdpa_cross_attention
from conftest import make_unet, unet_inputs


@pytest.fixture(scope="module")
def model():
    return build_default_model(seed=0)


def fingerprint(unet):
    return [(n, id(m), m.__dict__.get("forward")) for n, m in unet.named_modules()]


@torch.no_grad()
def plain_reference(model, s: VideoSettings, seed: int):
    """The same sampling written without any CCDM layer: CFG denoiser + sampler, nothing else."""
    cond, uncond = model.encode_prompts([s.prompt]), model.encode_prompts([s.negative_prompt])
    ac = _alphas_cumprod(model, None)
    sigmas = _sigmas(s, ac)
    gens = video_generators([seed])
    x = initial_noise((1, 4, s.frames, s.height // 8, s.width // 8), gens) * sigmas[0]
    with sdpa_cross_attention(model.unet):
        den = EpsVideoDenoiser(lambda x, t, c, f: model.unet(x, t, c), ac, s.cfg_scale)
        return get_sampler(s.sampler)(den, x, sigmas, extra_args={"cond": cond, "uncond": uncond},
                                      noise_sampler=video_noise_sampler(x, gens))


def test_strength_zero_is_bit_identical_to_no_fusion(model):
    s = VideoSettings("a cat", "blurry", frames=4, width=64, height=64, steps=3, seed=5, sampler="euler_a",
                      fusion_strength=0.0, cross_frame_strength=0.0)
    assert torch.equal(sample_latents(model, None, s, 5), plain_reference(model, s, 5))
    on = sample_latents(model, None, dataclasses.replace(s, fusion_strength=0.8, cross_frame_strength=0.8), 5)
    assert not torch.equal(on, plain_reference(model, s, 5))


@torch.no_grad()
def test_cross_frame_attention_restores_and_never_mixes_videos():
    unet = make_unet()
    x, t, ctx = unet_inputs(frames=3, videos=2)
    before, plain = fingerprint(unet), unet(x, t, ctx)
    with pytest.raises(RuntimeError):
        with sdpa_cross_attention(unet), cross_frame_attention(unet, FrameContext(0.7, 3)):
            a = unet(x, t, ctx)
            x2 = x.clone()
            x2[4] += 1.0  # a frame of video 1
            b = unet(x2, t, ctx)
            raise RuntimeError("interrupted")
    assert fingerprint(unet) == before and torch.equal(unet(x, t, ctx), plain)
    assert not torch.allclose(a[:3], plain[:3], atol=1e-5)  # frames do see each other
    assert torch.equal(a[:3], b[:3])  # video 0 untouched by video 1


@torch.no_grad()
def test_cross_frame_strength_zero_patches_nothing():
    unet = make_unet()
    before = fingerprint(unet)
    with cross_frame_attention(unet, FrameContext(0.0, 3)):
        assert fingerprint(unet) == before


@given(st.integers(1, 3), st.integers(2, 7), st.sampled_from([8, 12, 16]), st.sampled_from(list(FusionMode)),
       st.floats(0.01, 1.0), st.booleans())
@hsettings(max_examples=40, deadline=None)
def test_fusing_identical_frames_returns_them_unchanged(b, f, size, mode, weight, learned):
    frame = torch.randn(b, 4, 1, size, size)
    clip = frame.expand(-1, -1, f, -1, -1).contiguous()
    module = PatchFusion() if learned else None
    out = fuse_prediction(clip, weight, FusionSettings(strength=1.0, mode=mode), (0,), (), module)
    assert torch.equal(out, clip)


def test_fusion_keeps_videos_apart_and_steadies_frames():
    torch.manual_seed(0)
    base = torch.randn(1, 4, 1, 16, 16)
    clip = base + 0.3 * torch.randn(2, 4, 6, 16, 16)  # two videos: a shared scene plus per-frame flicker
    fused = fuse_prediction(clip, 1.0, FusionSettings(strength=1.0), (0,))
    other = clip.clone()
    other[1] += torch.randn_like(other[1])
    assert torch.equal(fuse_prediction(other, 1.0, FusionSettings(strength=1.0), (0,))[0], fused[0])

    def flicker(v):
        return (v[:, :, 1:] - v[:, :, :-1]).abs().mean()
    assert flicker(fused) < 0.9 * flicker(clip)


def test_frame_weights_modes():
    uniform = frame_weights(3, [2, 4, 0], FusionMode.UNIFORM, [])
    assert torch.allclose(uniform, torch.full((4,), 0.25, dtype=torch.float64))
    temporal = frame_weights(3, [2, 4, 0], FusionMode.TEMPORAL, [])
    assert temporal[1] == temporal[2] > temporal[3]  # neighbours weigh more than the distant anchor
    keyed = frame_weights(3, [2, 4, 0], FusionMode.KEYFRAME, [4])
    assert keyed[2] > temporal[2] and keyed[0] < temporal[0]


def test_keyframe_at_strength_one_reproduces_its_latent_at_the_first_step():
    latent = torch.randn(4, 8, 8)
    sigmas = torch.tensor([10.0, 5.0, 1.0, 0.0])
    inner = lambda x, sigma, **kw: x * 0.5  # noqa: E731
    fb = FeedbackDenoiser(inner, sigmas, FusionSettings(strength=1.0), {2: latent}, {2: 1.0})
    x = torch.randn(1, 4, 5, 8, 8)
    first = fb(x, torch.tensor([10.0]))
    assert torch.equal(first[0, :, 2], latent)
    assert torch.equal(fb(x, torch.tensor([1.0]))[0, :, 2], (x * 0.5)[0, :, 2])  # fully decayed by the end


def test_window_anchors_pick_the_nearest_keyframe_in_the_window():
    assert window_anchors((4, 5, 6, 7), []) == [0, 0, 0, 0]
    assert window_anchors((4, 5, 6, 7), [6, 100]) == [2, 2, 2, 2]
    assert window_anchors((0, 1, 2, 3, 4), [0, 4]) == [0, 0, 0, 4, 4]


def test_anchor_first_pins_the_plain_model_still(model):
    s = VideoSettings("a cat", frames=3, width=64, height=64, steps=2, seed=9, fusion_strength=0.0,
                      cross_frame_strength=0.0)
    still = sample_latents(model, None, dataclasses.replace(s, frames=1), 9)
    keyframes = _anchor_first(model, dataclasses.replace(s, anchor_first=True), [], 9)
    assert [k.frame for k in keyframes] == [0] and torch.equal(keyframes[0].image, still[0, :, 0])
    plain = sample_latents(model, None, s, 9)
    anchored = sample_latents(model, None, dataclasses.replace(s, anchor_first=True), 9)
    assert (anchored[:, :, 0] - still[:, :, 0]).abs().mean() < 0.5 * (plain[:, :, 0] - still[:, :, 0]).abs().mean()


@pytest.mark.parametrize("kw,words", [({"strength": 1.5}, "strength"), ({"mode": "median"}, "fusion mode"),
                                      ({"cross_frame_strength": -0.1}, "cross_frame_strength")])
def test_bad_fusion_settings(kw, words):
    with pytest.raises(CCDMError, match=words):
        FusionSettings(**kw)


def test_learned_projections_round_trip_through_extras():
    module = PatchFusion()
    with torch.no_grad():
        module.levels[1].to_q.weight.add_(0.1)
    back = PatchFusion.from_extras(module.extras())
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), back.state_dict().values()))
