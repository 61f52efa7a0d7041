"""The WebUI gaps of issue 4: fusion and keyframe guidance for DDIM/PLMS/UniPC (eps after CFG), keyframe prompts
as per-frame text conditioning, and anchor-first. Pure tensor functions on tensors; the run through the script's
hooks with the stand-in `modules` (tests/webui_fakes), a real tiny ldm UNet and a small sampler shaped like the
WebUI 1.6.0 ones (x0 after CFG for k-diffusion, eps for the timestep samplers)."""
from __future__ import annotations

import types
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from ccdm_core.cross_frame import self_attention_layers
from ccdm_core.inject import TemporalSlot
from ccdm_core.keyframes import Keyframe, keyframe_decay, prompt_schedule_weights, scheduled_conditioning
from ccdm_core.schedules import make_alphas_cumprod
from ccdm_core.webui import entry
from ccdm_core.webui.guidance import (EPS, UNSUPPORTED, X0, Guidance, Prediction, PromptSchedule, active_guidance,
                                      alpha_at, build_prompt_schedule, current_sampling, eps_to_x0,
                                      frame_conditioning, fusion_settings, guide_denoised, guide_eps,
                                      on_cfg_after_cfg, on_cfg_denoiser, pad_tokens, prompt_keys, x0_to_eps)
from ccdm_core.webui.settings import CCDMSettings
from test_webui_script import FRAMES, enabled, sd_and_module, webui  # noqa: F401  (fixtures)
from test_webui_unet import assert_restored, snapshot

F, STEPS = 6, 8
ALPHAS = make_alphas_cumprod("scaled_linear").float()  # what the WebUI's sd_model.alphas_cumprod holds


def _guidance(strength=0.5, mode="temporal", keys=True, frames=F):
    g = torch.Generator().manual_seed(4)
    latents = {0: torch.randn(4, 8, 8, generator=g), 4: torch.randn(4, 8, 8, generator=g)} if keys else {}
    settings = CCDMSettings(frames=frames, fusion_strength=strength, fusion_mode=mode)
    return Guidance(frames, fusion_settings(settings), latents, {0: 1.0, 4: 0.6} if keys else {})


def _randn(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _unipc_alpha(t: float) -> float:
    """UniPC's discrete schedule (WebUI 1.6.0): log sqrt(alpha) interpolated linearly over t_n = (n + 1) / N, and
    the model called at input time (t_continuous - 1/N) * 1000; written here from that description."""
    n = len(ALPHAS)
    grid = np.arange(1, n + 1) / n
    log_sqrt = 0.5 * np.log(ALPHAS.double().numpy())
    return float(np.exp(2 * np.interp(t / 1000 + 1 / n, grid, log_sqrt)))


# ---------------------------------------------------------------- eps <-> x0 (DDIM, PLMS, UniPC)


def test_alpha_at_whole_timesteps_is_the_table_and_between_them_unipc_interpolation():
    whole = torch.tensor([0.0, 1.0, 500.0, 999.0])
    assert torch.equal(alpha_at(ALPHAS, whole), ALPHAS.double()[whole.long()])
    frac = torch.tensor([10.25, 500.5, 998.9])
    expected = torch.tensor([_unipc_alpha(t) for t in frac.tolist()], dtype=torch.float64)
    assert torch.allclose(alpha_at(ALPHAS, frac), expected, rtol=1e-6, atol=0)


@given(t=st.integers(0, 999), seed=st.integers(0, 2**16), frac=st.sampled_from([0.0, 0.3, 0.75]))
@hsettings(max_examples=40, deadline=None)
def test_eps_round_trip_is_the_identity_up_to_float_error(t, seed, frac):
    x, eps = _randn(2, 4, 8, 8, seed=seed), _randn(2, 4, 8, 8, seed=seed + 1)
    alpha = alpha_at(ALPHAS, torch.tensor([min(t + frac, 999.0)] * 2))[:, None, None, None]
    back = x0_to_eps(x.double(), eps_to_x0(x.double(), eps.double(), alpha), alpha)
    assert torch.allclose(back, eps.double(), atol=1e-8)
    x0 = _randn(2, 4, 8, 8, seed=seed + 2).double()
    assert torch.allclose(eps_to_x0(x.double(), x0_to_eps(x.double(), x0, alpha), alpha), x0, atol=1e-8)


def test_guide_eps_with_nothing_to_do_is_bit_identical():
    x, eps, t = _randn(F, 4, 8, 8), _randn(F, 4, 8, 8, seed=2), torch.full((F,), 500.0)
    assert guide_eps(eps, x, t, ALPHAS, 0, STEPS, _guidance(strength=0.0, keys=False)) is eps
    late = guide_eps(eps, x, t, ALPHAS, STEPS - 1, STEPS, _guidance())  # keyframe and fusion weights are 0
    assert torch.equal(late, eps)
    keys_only = _guidance(strength=0.0)
    out = guide_eps(eps, x, t, ALPHAS, 0, STEPS, keys_only)
    untouched = [f for f in range(F) if f not in keys_only.key_latents]
    assert torch.equal(out[untouched], eps[untouched]) and not torch.equal(out, eps)


def _ddim_x0(x, eps, t: int):
    """The clean latent DDIM/PLMS compute from eps in float32 (sd_samplers_timesteps_impl.ddim, v1.6.0)."""
    a = float(ALPHAS[t])
    return (x - (1 - a) ** 0.5 * eps) / a ** 0.5


def _unipc_x0(x, eps, t: float):
    a = _unipc_alpha(t)
    return (x - (1 - a) ** 0.5 * eps) / a ** 0.5


@pytest.mark.parametrize("sampler,t", [("ddim", 901), ("ddim", 401), ("ddim", 21), ("unipc", 873.4), ("unipc", 12.6)])
@pytest.mark.parametrize("mode", ["uniform", "temporal", "keyframe"])
@pytest.mark.parametrize("step", [0, 3])
def test_guiding_eps_equals_guiding_the_x0_the_sampler_computes(sampler, t, mode, step):
    x = _randn(2 * F, 4, 8, 8) * 3
    eps = _randn(2 * F, 4, 8, 8, seed=2)
    g = _guidance(mode=mode)
    x0_of = _ddim_x0 if sampler == "ddim" else _unipc_x0
    guided = guide_eps(eps, x, torch.full((2 * F,), float(t)), ALPHAS, step, STEPS, g)
    expected = guide_denoised(x0_of(x, eps, t), step, STEPS, g)
    got = x0_of(x, guided, t)
    assert guided.dtype == eps.dtype and not torch.equal(guided, eps)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_eps_guidance_never_mixes_videos():
    g = _guidance()
    x, eps, t = _randn(3 * F, 4, 8, 8), _randn(3 * F, 4, 8, 8, seed=2), torch.full((3 * F,), 700.0)
    x2, eps2 = x.clone(), eps.clone()
    x2[F:2 * F] += 1.0
    eps2[F:2 * F] -= 0.5
    a, b = guide_eps(eps, x, t, ALPHAS, 1, STEPS, g), guide_eps(eps2, x2, t, ALPHAS, 1, STEPS, g)
    assert torch.equal(a[:F], b[:F]) and torch.equal(a[2 * F:], b[2 * F:]) and not torch.equal(a[F:2 * F], b[F:2 * F])


def _cfg_params(x, t, cond, uncond, step=0):
    return types.SimpleNamespace(x=torch.cat([x, x]), image_cond=None, sigma=torch.cat([t, t]), sampling_step=step,
                                 total_sampling_steps=STEPS, text_cond=cond, text_uncond=uncond)


def test_callbacks_use_the_step_input_for_eps_and_say_why_when_they_cannot(capsys):
    g = _guidance()
    x, eps, t = _randn(F, 4, 8, 8), _randn(F, 4, 8, 8, seed=2), torch.full((F,), 600.0)
    cond, uncond = _randn(F, 5, 32), _randn(F, 5, 32, seed=3)
    with active_guidance(g, prediction=lambda: Prediction(EPS, ALPHAS)):
        before = _cfg_params(x, t, cond, uncond)
        on_cfg_denoiser(before)
        assert before.text_cond is cond and before.text_uncond is uncond  # no keyframe prompts: rows untouched
        after = types.SimpleNamespace(x=eps, sampling_step=0, total_sampling_steps=STEPS)
        on_cfg_after_cfg(after)
        assert torch.equal(after.x, guide_eps(eps, x, t, ALPHAS, 0, STEPS, g))
        again = types.SimpleNamespace(x=eps, sampling_step=1, total_sampling_steps=STEPS)
        on_cfg_after_cfg(again)  # no denoiser input for this call: never reuse the previous step's
        on_cfg_after_cfg(again)
        assert again.x is eps
    assert capsys.readouterr().out.count("the denoiser's input was not seen") == 1
    with active_guidance(g, prediction=lambda: Prediction(UNSUPPORTED, why="sampler Odd (OddDenoiser) is odd")):
        params = types.SimpleNamespace(x=eps, sampling_step=0, total_sampling_steps=STEPS)
        on_cfg_after_cfg(params)
        assert params.x is eps
    assert "skipped: sampler Odd (OddDenoiser) is odd" in capsys.readouterr().out
    outside = _cfg_params(x, t, cond, uncond)
    on_cfg_denoiser(outside)
    assert current_sampling() is None and outside.text_cond is cond


# ---------------------------------------------------------------- keyframe prompts


def test_prompt_keys_follow_the_engine_schedule():
    kfs = [Keyframe(4, prompt="a dog"), Keyframe(8, prompt="a bird"), Keyframe(2, image="x"), Keyframe(6, prompt=" ")]
    assert prompt_keys(kfs) == {0: None, 4: "a dog", 8: "a bird"}  # frame 0: the main prompt (the WebUI's row)
    assert prompt_keys([Keyframe(0, prompt="a cat"), Keyframe(5, prompt="a dog")]) == {0: "a cat", 5: "a dog"}
    assert prompt_keys([Keyframe(3, image="x")]) == {}
    assert build_prompt_schedule([Keyframe(3, image="x")], 8, lambda text, step: None) is None


def _keys(length=5, dim=32):
    return {"a dog": _randn(length, dim, seed=11), "a bird": _randn(length, dim, seed=12)}


def test_per_frame_rows_come_from_the_right_keyframes_as_the_engine_interpolates():
    frames, keys = 10, _keys()
    schedule = build_prompt_schedule([Keyframe(4, prompt="a dog"), Keyframe(8, prompt="a bird")], frames,
                                     lambda text, step: keys[text])
    text_cond = _randn(2 * frames, 5, 32, seed=5)  # two videos, each row its own main-prompt conditioning
    out = schedule.apply(text_cond, 0)
    for video in range(2):
        rows = out[video * frames:(video + 1) * frames]
        main = text_cond[video * frames]
        assert torch.equal(rows[0], main) and torch.equal(rows[4], keys["a dog"])
        assert torch.equal(rows[8], keys["a bird"]) and torch.equal(rows[9], keys["a bird"])  # held after the last
        assert torch.allclose(rows[2], 0.5 * text_cond[video * frames + 2] + 0.5 * keys["a dog"])
        assert torch.allclose(rows[6], 0.5 * keys["a dog"] + 0.5 * keys["a bird"])
    main = text_cond[0]
    same_main = schedule.apply(main.expand(frames, -1, -1), 0)

    def encode(prompts):
        return torch.stack([{"main": main, **keys}[p] for p in prompts])
    engine = scheduled_conditioning(encode, frames, {0: "main", 4: "a dog", 8: "a bird"})[0]
    assert torch.allclose(same_main, engine, atol=1e-6)  # the standalone pipeline's prompt schedule


def test_rows_read_only_themselves_and_the_keys():
    frames, keys = 6, _keys()
    schedule = build_prompt_schedule([Keyframe(3, prompt="a dog")], frames, lambda text, step: keys[text])
    text_cond = _randn(3 * frames, 5, 32, seed=5)
    changed = text_cond.clone()
    changed[frames + 1] += 1.0  # one row of the second video
    a, b = schedule.apply(text_cond, 0), schedule.apply(changed, 0)
    differ = [i for i in range(3 * frames) if not torch.equal(a[i], b[i])]
    assert differ == [frames + 1]
    with pytest.raises(ValueError, match="whole number of 6-frame videos"):
        schedule.apply(text_cond[:4], 0)


def test_uncond_rows_are_never_touched_and_cond_rows_change_only_inside_a_run():
    keys = _keys()
    schedule = build_prompt_schedule([Keyframe(2, prompt="a dog")], F, lambda text, step: keys[text])
    x, t = _randn(F, 4, 8, 8), torch.full((F,), 500.0)
    cond, uncond = _randn(F, 5, 32), _randn(F, 5, 32, seed=3)
    uncond_copy = uncond.clone()
    with active_guidance(None, schedule):
        params = _cfg_params(x, t, cond, uncond)
        on_cfg_denoiser(params)
        assert params.text_uncond is uncond and torch.equal(uncond, uncond_copy)
        assert torch.equal(params.text_cond[2:], keys["a dog"].expand(F - 2, -1, -1))
        assert current_sampling().guidance is None  # prompts alone: no after-CFG guidance
    assert current_sampling() is None


def test_token_length_mismatch_is_padded_with_empty_prompt_chunks_or_the_last_token():
    long = _randn(10, 32, seed=9)  # a two-chunk keyframe prompt; the main prompt has one chunk of 5 tokens
    empty = _randn(5, 32, seed=8)
    text_cond = _randn(4, 5, 32, seed=5)
    schedule = PromptSchedule({0: None, 2: "long"}, torch.from_numpy(prompt_schedule_weights(4, [0, 2])).float(),
                              lambda text, step: long, empty)
    out = schedule.apply(text_cond, 0)
    assert out.shape == (4, 10, 32)
    assert torch.equal(out[0], torch.cat([text_cond[0], empty])) and torch.equal(out[2], long)
    assert torch.allclose(out[1], 0.5 * torch.cat([text_cond[1], empty]) + 0.5 * long)
    no_empty = frame_conditioning(text_cond, schedule.weights, [None, long])
    assert torch.equal(no_empty[0], torch.cat([text_cond[0], text_cond[0, -1:].expand(5, -1)]))
    assert torch.equal(pad_tokens(long, 10, empty), long) and pad_tokens(long[:3], 7, empty).shape == (7, 32)
    assert torch.equal(pad_tokens(long[:3], 8, empty), torch.cat([long[:3], empty]))


def test_prompt_schedule_reads_each_key_at_the_sampling_step():
    seen = []

    def cond_at(text, step):
        seen.append((text, step))
        return torch.full((5, 4), float(step))
    schedule = build_prompt_schedule([Keyframe(1, prompt="a dog")], 3, cond_at)
    out = schedule.apply(torch.zeros(3, 5, 4), 7)
    assert seen == [("a dog", 7)] and torch.equal(out[2], torch.full((5, 4), 7.0))


# ---------------------------------------------------------------- through the WebUI run (stand-in modules)


def _encoder(calls):
    """A stand-in for sd_model.get_learned_conditioning: `T 32` per text (two chunks when it says 'long')."""
    def encode(texts):
        calls.append(list(texts))
        out = []
        for text in texts:
            g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
            out.append(torch.randn(10 if "long" in text else 5, 32, generator=g))
        return torch.stack(out) if len({t.shape for t in out}) == 1 else out
    return encode


class MiniSampler:
    """Three DDIM-update steps over a CFG denoiser shaped like WebUI 1.6.0's: on_cfg_denoiser with x_in, sigma_in,
    text_cond, text_uncond; the UNet (one call, or cond and uncond apart when their token lengths differ); CFG;
    on_cfg_after_cfg with x0 ('Euler', a k-diffusion denoiser) or eps ('DDIM', a timesteps denoiser)."""

    TIMESTEPS = (901, 501, 101)

    def __init__(self, name, sd_model):
        from modules.sd_samplers_cfg_denoiser import CFGDenoiser
        from modules.sd_samplers_timesteps import CFGDenoiserTimesteps

        self.config = types.SimpleNamespace(name=name)
        self.eps = name == "DDIM"
        self.model_wrap_cfg = (CFGDenoiserTimesteps if self.eps else CFGDenoiser)(self)
        self.sd_model, self.alphas, self.calls = sd_model, sd_model.alphas_cumprod, []

    def unet(self, x, t, cond, uncond):
        unet, n = self.sd_model.model.diffusion_model, cond.shape[0]
        with torch.no_grad():
            if cond.shape[1] == uncond.shape[1]:
                return unet(x, t, context=torch.cat([cond, uncond]))
            return torch.cat([unet(x[:n], t[:n], context=cond), unet(x[n:], t[n:], context=uncond)])

    def denoise(self, x, t, cond, uncond, step):
        params = _cfg_params(x, t, cond, uncond, step)
        params.total_sampling_steps = len(self.TIMESTEPS)
        entry.on_cfg_denoiser(params)
        out = self.unet(params.x, params.sigma, params.text_cond, params.text_uncond)
        if not self.eps:  # a k-diffusion denoiser hands over the clean latent
            a = self.alphas[int(t[0])]
            out = (params.x - (1 - a).sqrt() * out) / a.sqrt()
        n = x.shape[0]
        value = out[n:] + 7.0 * (out[:n] - out[n:])
        after = types.SimpleNamespace(x=value, sampling_step=step, total_sampling_steps=len(self.TIMESTEPS))
        entry.on_cfg_after_cfg(after)
        unet = self.sd_model.model.diffusion_model
        self.calls.append({"x": x, "text_cond": params.text_cond, "text_uncond": params.text_uncond, "before": value,
                           "after": after.x, "alphas": self.sd_model.alphas_cumprod, "current": current_sampling(),
                           "slots": any(isinstance(m, TemporalSlot) for m in unet.modules()),
                           "cross_frame": any("forward" in vars(layer) for layer in self_attention_layers(unet))})
        return after.x

    def sample(self, p, x, conditioning, unconditional_conditioning):
        from modules import prompt_parser

        for step, t in enumerate(self.TIMESTEPS):
            _, cond = prompt_parser.reconstruct_multicond_batch(conditioning, step)
            uncond = prompt_parser.reconstruct_cond_batch(unconditional_conditioning, step)
            tt = torch.full((x.shape[0],), float(t))
            value = self.denoise(x, tt, cond, uncond, step)
            x0 = self.model_wrap_cfg.get_pred_x0(x, value, tt)
            a = self.alphas[t]
            a_prev = self.alphas[self.TIMESTEPS[step + 1]] if step + 1 < len(self.TIMESTEPS) else torch.tensor(1.0)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x


class FakeTxt2Img:
    """The parts of StableDiffusionProcessingTxt2Img the run touches; `sample` makes a new sampler, draws the
    noise from p.rng and samples, like 1.6.0's txt2img."""

    def __init__(self, sd_model, sampler_name="Euler"):
        self.sd_model, self.sampler_name, self.sampler = sd_model, sampler_name, None
        self.batch_size, self.n_iter, self.iteration, self.steps, self.cfg_scale = 1, 1, 0, 3, 7.0
        self.prompt, self.negative_prompt, self.all_prompts, self.init_images = "a cat", "", None, None
        self.width = self.height = 64
        self.enable_hr, self.subseed_strength, self.seed_resize_from_h, self.seed_resize_from_w = True, 0.0, 0, 0
        self.extra_generation_params, self.samplers, self.states = {}, [], []

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.states.append({"batch_size": self.batch_size, "iteration": self.iteration, "enable_hr": self.enable_hr,
                            "rng": self.rng})
        self.sampler = MiniSampler(self.sampler_name, self.sd_model)
        self.samplers.append((list(seeds), self.sampler))
        return self.sampler.sample(self, self.rng.next(), conditioning, unconditional_conditioning)


def process_images(p, settings):
    """1.6.0's order for one batch: before_process, process, rng and conds, p.sample."""
    from modules import prompt_parser, rng

    from ccdm_core.webui.script import CCDMScript

    script = CCDMScript()
    script.is_img2img, script.is_txt2img = False, True
    script.before_process(p, settings)
    script.process(p, settings)
    p.all_seeds = p.seeds = [7 + i for i in range(p.batch_size)]
    p.subseeds = [0] * p.batch_size
    p.all_prompts = p.prompts = [p.prompt] * p.batch_size
    p.rng = rng.ImageRNG((4, 8, 8), p.seeds)
    c = prompt_parser.get_multicond_learned_conditioning(p.sd_model, p.prompts, p.steps)
    uc = prompt_parser.get_learned_conditioning(p.sd_model, [p.negative_prompt] * p.batch_size, p.steps)
    return p.sample(conditioning=c, unconditional_conditioning=uc, seeds=p.seeds, subseeds=p.subseeds,
                    subseed_strength=0.0, prompts=p.prompts)


@pytest.fixture
def encoder(webui, monkeypatch):
    calls = []
    monkeypatch.setattr(webui.sd_model, "get_learned_conditioning", _encoder(calls), raising=False)
    return calls


def _image_keyframe(frame, value=200):
    import base64
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(buffer, format="PNG")
    return {"frame": frame, "image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}


@pytest.fixture
def vae(webui, monkeypatch):
    monkeypatch.setattr(webui.sd_model, "encode_first_stage",
                        lambda pixels: torch.nn.functional.avg_pool2d(pixels, 8).repeat(1, 2, 1, 1)[:, :4],
                        raising=False)
    monkeypatch.setattr(webui.sd_model, "get_first_stage_encoding", lambda z: z, raising=False)


def test_sampler_prediction_reads_the_cfg_denoiser(webui):
    from modules.sd_samplers_cfg_denoiser import CFGDenoiser
    from modules.sd_samplers_timesteps import CFGDenoiserTimesteps

    from ccdm_core.webui.runtime import sampler_prediction

    class Odd(CFGDenoiser):
        def get_pred_x0(self, x_in, x_out, sigma):
            return x_in

    def p_with(cfg, name="Euler"):
        sampler = types.SimpleNamespace(model_wrap_cfg=cfg, config=types.SimpleNamespace(name=name))
        return types.SimpleNamespace(sampler=sampler, sampler_name="Euler a", sd_model=webui.sd_model)
    timesteps = sampler_prediction(p_with(CFGDenoiserTimesteps(), "UniPC"))
    assert timesteps.kind == EPS and timesteps.alphas is webui.sd_model.alphas_cumprod
    assert sampler_prediction(p_with(CFGDenoiser())).kind == X0
    odd = sampler_prediction(p_with(Odd(), "Odd sampler"))
    assert odd.kind == UNSUPPORTED and "Odd sampler (Odd)" in odd.why
    by_name = types.SimpleNamespace(sampler=None, sampler_name="PLMS", sd_model=webui.sd_model)
    assert sampler_prediction(by_name).kind == EPS
    assert sampler_prediction(types.SimpleNamespace(sampler=None, sampler_name="Euler a")).kind == X0


@pytest.mark.parametrize("keyframes", [False, True])
def test_ddim_run_guided_in_eps_space_equals_the_same_run_guided_in_x0_space(webui, encoder, vae, keyframes):
    """The same clip through a k-diffusion-like and a DDIM-like denoiser (same update rule): guidance after CFG on
    x0 and on eps gives the same latents, up to float error; without guidance both are plain runs."""
    settings = enabled(keyframes=[_image_keyframe(2)] if keyframes else [])
    runs = {}
    for name in ("Euler", "DDIM"):
        p = FakeTxt2Img(webui.sd_model, name)
        runs[name] = (process_images(p, settings), p)
    (x0_run, x0_p), (eps_run, eps_p) = runs["Euler"], runs["DDIM"]
    assert torch.allclose(x0_run, eps_run, atol=1e-4)
    calls = eps_p.samplers[0][1].calls
    assert all(c["slots"] and c["cross_frame"] for c in calls)
    assert not torch.equal(calls[0]["before"], calls[0]["after"])  # guided on eps
    off = FakeTxt2Img(webui.sd_model, "DDIM")
    plain = process_images(off, enabled(fusion_strength=0.0, keyframes=[]))
    assert not torch.allclose(plain, eps_run, atol=1e-3)


def test_keyframe_prompts_condition_their_frames_in_the_webui_run(webui, encoder, capsys):
    snap = snapshot(webui.sd_model)
    p = FakeTxt2Img(webui.sd_model, "DDIM")
    keyframes = [{"frame": 3, "prompt": "a dog <lora:toy:0.5>"}, {"frame": 5, "prompt": "[a bird:a fish:1]"}]
    process_images(p, enabled(keyframes=keyframes, fusion_strength=0.0))
    assert_restored(webui.sd_model, snap)
    assert "extra networks (<...>) in keyframe prompts are ignored" in capsys.readouterr().out
    encoded = [text for call in encoder for text in call]
    assert encoded.count("a dog ") == 1 and encoded.count("a bird") == 1 and encoded.count("a fish") == 1
    assert "a cat" in encoded and "[a bird:a fish:1]" not in encoded  # keyframe prompts once per run
    dog, bird, fish = (_encoder([])([text])[0] for text in ("a dog ", "a bird", "a fish"))
    calls = p.samplers[0][1].calls
    for step, call in enumerate(calls):
        rows, main = call["text_cond"], _encoder([])(["a cat"])[0]
        last = bird if step <= 1 else fish  # prompt editing inside a keyframe prompt follows the step
        assert torch.equal(rows[0], main) and torch.equal(rows[3], dog) and torch.equal(rows[5], last)
        assert torch.allclose(rows[1], main * 2 / 3 + dog / 3) and torch.allclose(rows[4], (dog + last) / 2)
        assert torch.equal(call["text_uncond"], _encoder([])([""])[0].expand(FRAMES, -1, -1))
    assert "a dog" not in str(p.extra_generation_params)  # keyframe prompts stay out of the infotext


def test_keyframe_prompts_of_another_token_length_are_padded(webui, encoder, monkeypatch):
    empty = _encoder([])([""])[0][None]
    monkeypatch.setattr(webui.sd_model, "cond_stage_model_empty_prompt", empty, raising=False)
    p = FakeTxt2Img(webui.sd_model, "Euler")
    process_images(p, enabled(keyframes=[{"frame": 4, "prompt": "a long prompt"}], fusion_strength=0.0))
    call = p.samplers[0][1].calls[0]
    assert call["text_cond"].shape == (FRAMES, 10, 32) and call["text_uncond"].shape == (FRAMES, 5, 32)
    main = _encoder([])(["a cat"])[0]
    assert torch.equal(call["text_cond"][0], torch.cat([main, empty[0]]))
    assert torch.equal(call["text_cond"][4], _encoder([])(["a long prompt"])[0])


def test_anchor_first_renders_frame_0_plainly_then_pins_it(webui, encoder, capsys):
    snap = snapshot(webui.sd_model)
    p = FakeTxt2Img(webui.sd_model, "Euler")
    process_images(p, enabled(anchor_first=True, keyframes=[{"frame": 3, "prompt": "a dog"}]))
    assert_restored(webui.sd_model, snap)
    (plain_seeds, plain), (video_seeds, video) = p.samplers
    assert plain_seeds == [7] and video_seeds == [7 + i for i in range(FRAMES)]
    # 1. The plain render: one image, the UNet untouched, the WebUI's schedule, no CCDM callback at work.
    for call in plain.calls:
        assert call["x"].shape[0] == 1 and not call["slots"] and not call["cross_frame"]
        assert call["alphas"] is snap[2] and call["current"] is None
        assert call["text_cond"].shape[0] == 1 and torch.equal(call["before"], call["after"])
    assert p.states[0]["batch_size"] == 1 and p.states[0]["enable_hr"] is False
    assert p.states[0]["rng"] is not p.states[1]["rng"] and p.states[1]["batch_size"] == FRAMES
    assert (p.batch_size, p.enable_hr, p.iteration) == (FRAMES, True, 0) and p.rng is p.states[1]["rng"]
    # 2. Same seed: the plain image starts from the video's frame-0 noise; the video's noise is as without it.
    assert torch.equal(plain.calls[0]["x"][0], video.calls[0]["x"][0])
    without = FakeTxt2Img(webui.sd_model, "Euler")
    process_images(without, enabled(keyframes=[{"frame": 3, "prompt": "a dog"}]))
    assert torch.equal(without.samplers[0][1].calls[0]["x"], video.calls[0]["x"])
    # 3. Its final latent is the keyframe at frame 0 (strength 1): pinned after CFG while the weight is 1.
    final = _final_latent(plain)
    assert keyframe_decay(0, 3) == 1.0 and torch.equal(video.calls[0]["after"][0], final[0])
    assert all(c["slots"] and c["cross_frame"] for c in video.calls)
    assert p.extra_generation_params["CCDM anchor first"] == "true"


def _final_latent(sampler: MiniSampler) -> torch.Tensor:
    """The latent the plain render returned, recomputed from its last step (x0 after CFG; last a_prev = 1)."""
    return sampler.calls[-1]["after"]


def test_anchor_first_is_skipped_with_a_keyframe_image_at_frame_0(webui, encoder, vae, capsys):
    p = FakeTxt2Img(webui.sd_model, "Euler")
    process_images(p, enabled(anchor_first=True, keyframes=[_image_keyframe(0)]))
    assert len(p.samplers) == 1 and "a keyframe image is already at frame 0" in capsys.readouterr().out


def test_anchor_first_is_skipped_in_img2img_and_restores_p_when_the_plain_render_fails(webui, encoder):
    from ccdm_core.webui import runtime

    run = runtime.VideoRun(CCDMSettings(enabled=True, frames=FRAMES, anchor_first=True), is_img2img=True)
    assert runtime._anchor_first(types.SimpleNamespace(), run, None, (), {}) is None

    class Failing(FakeTxt2Img):
        def sample(self, *args, **kwargs):
            if not self.samplers:
                self.samplers.append("plain")
                raise RuntimeError("boom in the plain render")
            return super().sample(*args, **kwargs)
    snap = snapshot(webui.sd_model)
    p = Failing(webui.sd_model)
    with pytest.raises(RuntimeError, match="boom in the plain render"):
        process_images(p, enabled(anchor_first=True))
    assert (p.batch_size, p.enable_hr, p.iteration, p.sampler) == (FRAMES, True, 0, None)
    assert_restored(webui.sd_model, snap) and current_sampling() is None


def test_anchor_first_setting_by_name_in_the_api_and_the_infotext():
    from ccdm_core.infotext import build_infotext, parse_infotext
    from ccdm_core.webui.settings import (KEY_ANCHOR_FIRST, CCDMSettingsError, Txt2VidRequest,
                                          settings_from_infotext)

    assert CCDMSettings().anchor_first is False and KEY_ANCHOR_FIRST not in CCDMSettings().infotext_params("mm")
    request = Txt2VidRequest.from_dict({"prompt": "a cat", "anchor_first": True})
    assert request.video.anchor_first is True and Txt2VidRequest.from_dict(request.to_dict()) == request
    with pytest.raises(CCDMSettingsError) as info:
        Txt2VidRequest.from_dict({"prompt": "a cat", "anchor_first": "yes"})
    assert info.value.detail == "anchor_first: must be true or false, got 'yes'"
    on = CCDMSettings(enabled=True, motion_module="mm [0123456789]", anchor_first=True, camera="none")
    text = build_infotext("a cat", "", {"Steps": 20, **on.infotext_params(on.motion_module)})
    assert "CCDM anchor first: true" in text
    assert settings_from_infotext(parse_infotext(text)[2]) == on
    off = settings_from_infotext({"CCDM frames": "16"}, CCDMSettings(anchor_first=True))
    assert off.anchor_first is False  # written only when on: a clip without the key was made without it
    with pytest.raises(CCDMSettingsError, match="^anchor_first: "):
        settings_from_infotext({"CCDM frames": "16", KEY_ANCHOR_FIRST: "maybe"})


def test_img2img_eps_guidance_sees_the_masked_x0_as_k_diffusion_does(webui):
    """Timestep samplers mask their input (mask_before_denoising), k-diffusion ones their output: the guidance of
    an eps sampler sees x0 with the masked part (img2img: frame 0) set to the init latent."""
    from modules.sd_samplers_timesteps import CFGDenoiserTimesteps

    from ccdm_core.webui.runtime import sampler_prediction

    g = _guidance(keys=False)
    x, eps, t = _randn(F, 4, 8, 8) * 2, _randn(F, 4, 8, 8, seed=2), torch.full((F,), 701.0)
    init = _randn(F, 4, 8, 8, seed=3)
    mask = torch.zeros(F, 4, 8, 8)
    mask[0] = 1.0
    cfg = CFGDenoiserTimesteps()
    cfg.mask, cfg.init_latent = mask, init
    sampler = types.SimpleNamespace(model_wrap_cfg=cfg, config=types.SimpleNamespace(name="DDIM"))
    prediction = sampler_prediction(types.SimpleNamespace(sampler=sampler))
    assert prediction.kind == EPS and prediction.mask is mask and prediction.init_latent is init
    out = guide_eps(eps, x, t, ALPHAS, 0, STEPS, g, prediction.mask, prediction.init_latent)
    x0 = _ddim_x0(x, eps, 701)
    expected = guide_denoised(init * mask + (1 - mask) * x0, 0, STEPS, g)
    assert torch.allclose(_ddim_x0(x, out, 701)[1:], expected[1:], rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    unmasked = guide_eps(eps, x, t, ALPHAS, 0, STEPS, g)
    assert not torch.allclose(out[1:], unmasked[1:])  # frame 0 is the anchor: its x0 matters to the others
