"""LCM multistep sampler: the skipping schedule, the update against a VP-form reference loop, the boundary
condition, per-seed determinism, and runs through the pipeline (FreeInit, video to video) and the CLI."""
from __future__ import annotations

import json
import math

import pytest
import torch
from einops import rearrange

from ccdm_core import CCDMError
from ccdm_core.cli import main
from ccdm_core.infotext import parse_infotext
from ccdm_core.lcm import RECOMMENDED, boundary_scalings, lcm_sigmas, lcm_timesteps, sample_lcm
from ccdm_core.pipeline import VideoSettings, build_video_infotext, sample_latents
from ccdm_core.sampling import DiscreteSchedule, get_sampler, video_generators, video_noise_sampler
from ccdm_core.schedules import make_alphas_cumprod
from ccdm_core.sd.loader import build_default_model
from ccdm_core.video import read_infotext
from conftest import randomize_

AC = make_alphas_cumprod("scaled_linear", 0.00085, 0.012, 1000)
SCHEDULE = DiscreteSchedule(AC)


def paper_timesteps(steps: int, num_timesteps: int = 1000, original_steps: int = 50) -> list:
    """LCM's skipping schedule written out: the k-th step takes the grid point (50 - 1 - k * (50 // steps))."""
    grid = [(i + 1) * (num_timesteps // original_steps) - 1 for i in range(original_steps)]
    return [grid[original_steps - 1 - k * (original_steps // steps)] for k in range(steps)]


# --- schedule ----------------------------------------------------------------------------------------------------


def test_four_steps_are_the_papers_timesteps():
    assert lcm_timesteps(1000, 4) == [999, 759, 519, 279]


@pytest.mark.parametrize("steps", [1, 6, 8, 50])
def test_other_step_counts_follow_the_skipping_rule(steps):
    assert lcm_timesteps(1000, steps) == paper_timesteps(steps)


@pytest.mark.parametrize("steps", [0, 51, 2.5, True])
def test_bad_steps_are_named(steps):
    with pytest.raises(CCDMError, match="steps"):
        lcm_timesteps(1000, steps)
    with pytest.raises(CCDMError, match="steps"):
        lcm_sigmas(AC, steps)


def test_sigmas_are_the_timesteps_sigmas_then_zero():
    sigmas = lcm_sigmas(AC, 4)
    expected = torch.cat([SCHEDULE.sigmas[[999, 759, 519, 279]], torch.zeros(1, dtype=torch.float64)]).float()
    assert sigmas.dtype == torch.float32 and torch.equal(sigmas, expected)


def test_boundary_condition():
    assert boundary_scalings(0) == (1.0, 0.0)
    c_skip, c_out = boundary_scalings(999)
    assert c_skip < 1e-6 and c_out == pytest.approx(1.0, abs=1e-6)


# --- the update ----------------------------------------------------------------------------------------------------


def toy_denoiser(x, sigma):
    """A fixed linear map of x whose coefficients depend on sigma (shape (b,)), so both matter."""
    s = rearrange(sigma.to(x.dtype), "b -> b 1 1 1 1")
    return 0.6 * x / (1 + s**2).sqrt() + 0.2 * torch.tanh(s) * x.flip(-1) + 0.1


def reference_lcm(x_sigma, sigmas, seeds, sigma_to_t):
    """LCM alg. 3 in the VP form x_t = sqrt(a) x0 + sqrt(1 - a) eps, with the same noise draws as the sampler."""
    noise = video_noise_sampler(x_sigma, video_generators(seeds))
    values = sigmas.double().tolist()
    alpha = [1 / (1 + s**2) for s in values]  # sigma^2 = (1 - a) / a
    x_t = x_sigma * math.sqrt(alpha[0])
    for i in range(len(values) - 1):
        sigma_in = torch.full((x_t.shape[0],), values[i], dtype=torch.float32)
        x0 = toy_denoiser(x_t / math.sqrt(alpha[i]), sigma_in)
        t = float(sigma_to_t(sigma_in)[0])
        scaled = 10 * t
        c_skip, c_out = 0.25 / (scaled**2 + 0.25), scaled / math.sqrt(scaled**2 + 0.25)
        f = c_skip * x_t + c_out * x0
        if values[i + 1] == 0:
            return f
        x_t = math.sqrt(alpha[i + 1]) * f + math.sqrt(1 - alpha[i + 1]) * noise(values[i], values[i + 1])
    raise AssertionError("sigmas must end in 0")


def _sample(x, sigmas, seeds, sigma_to_t=SCHEDULE.sigma_to_t, **kw):
    noise = video_noise_sampler(x, video_generators(seeds))
    return sample_lcm(toy_denoiser, x, sigmas, noise_sampler=noise, sigma_to_t=sigma_to_t, **kw)


@pytest.mark.parametrize("steps", [1, 4, 8])
@pytest.mark.parametrize("t_scale", [1.0, 1e-4])  # 1e-4: small timesteps, where c_skip x_t carries weight
def test_sampler_matches_the_vp_form_reference(steps, t_scale):
    def sigma_to_t(sigma):
        return SCHEDULE.sigma_to_t(sigma) * t_scale

    sigmas = lcm_sigmas(AC, steps)
    x = torch.randn(2, 4, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    ours = _sample(x, sigmas, [3, 4], sigma_to_t)
    ref = reference_lcm(x, sigmas, [3, 4], sigma_to_t)
    assert torch.allclose(ours, ref.float(), rtol=1e-4, atol=1e-5)
    if t_scale < 1:  # the skip term does matter there: c_out x0 alone is far off
        assert not torch.allclose(ours, toy_denoiser(x, torch.full((2,), float(sigmas[0]))), atol=1e-2)


def test_same_seeds_same_result_other_seed_differs():
    sigmas = lcm_sigmas(AC, 4)
    x = torch.randn(2, 4, 3, 6, 6, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    a, b, other = _sample(x, sigmas, [5, 6]), _sample(x, sigmas, [5, 6]), _sample(x, sigmas, [7, 6])
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], other[0]) and torch.equal(a[1], other[1])  # video 1 keeps its own generator


def test_callback_and_required_arguments():
    sigmas, seen = lcm_sigmas(AC, 4), []
    x = torch.randn(1, 4, 2, 4, 4) * sigmas[0]
    _sample(x, sigmas, [1], callback=seen.append)
    assert [info["i"] for info in seen] == [0, 1, 2, 3] and seen[0]["total"] == 4
    with pytest.raises(CCDMError, match="sigma_to_t"):
        sample_lcm(toy_denoiser, x, sigmas, noise_sampler=video_noise_sampler(x, video_generators([1])))
    with pytest.raises(CCDMError, match="noise_sampler"):
        sample_lcm(toy_denoiser, x, sigmas, sigma_to_t=SCHEDULE.sigma_to_t)
    one_step = sample_lcm(toy_denoiser, x, lcm_sigmas(AC, 1), sigma_to_t=SCHEDULE.sigma_to_t)  # draws no noise
    assert torch.isfinite(one_step).all()
    assert get_sampler("lcm") is sample_lcm and RECOMMENDED == {"steps": (4, 8), "cfg_scale": (1.0, 2.0)}


# --- pipeline and CLI -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    m = build_default_model(seed=0)
    randomize_(m.unet.out, seed=3, scale=0.05)  # the zero-initialised output layer would make every sampler equal
    return m


def settings(**kw):
    base = dict(prompt="a cat", frames=4, width=64, height=64, steps=4, seed=7, sampler="lcm", cfg_scale=1.5,
                camera="none")
    return VideoSettings(**{**base, **kw})


def test_pipeline_runs_lcm_and_differs_from_euler(model):
    steps = []
    lcm = sample_latents(model, None, settings(), seed=7, callback=steps.append)
    euler = sample_latents(model, None, settings(sampler="euler"), seed=7)
    assert lcm.shape == (1, 4, 4, 8, 8) and torch.isfinite(lcm).all()
    assert len(steps) == 4 and not torch.allclose(lcm, euler, atol=1e-3)
    assert torch.equal(sample_latents(model, None, settings(), seed=7), lcm)


def test_pipeline_lcm_with_freeinit_and_video_to_video(model):
    steps = []
    freeinit = sample_latents(model, None, settings(freeinit_iterations=2), seed=7, callback=steps.append)
    assert torch.isfinite(freeinit).all() and len(steps) == 8
    init = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    steps.clear()
    v2v = sample_latents(model, None, settings(denoising_strength=0.5), seed=7, init_latents=init,
                         callback=steps.append)
    assert torch.isfinite(v2v).all() and 0 < len(steps) < 4 and not torch.allclose(v2v, init)


def test_settings_refuse_more_than_50_lcm_steps_and_label_round_trips(model):
    with pytest.raises(CCDMError, match="steps with the LCM sampler must be an integer in 1..50"):
        settings(steps=51)
    assert VideoSettings("a cat", steps=51, sampler="euler").steps == 51
    _, _, params = parse_infotext(build_video_infotext(settings(), 7, model, None))
    assert params["Sampler"] == "LCM" and params["Steps"] == "4" and params["CFG scale"] == "1.5"


FAST = ["--prompt", "a cat", "--frames", "3", "--seed", "11", "--quiet", "--no-report", "--sampler", "lcm"]


def test_cli_generates_with_lcm_and_advises_outside_the_recommended_range(tmp_path, capsys):
    out_path = tmp_path / "clip.gif"
    code = main(["generate", *FAST, "--steps", "4", "--cfg", "1.5", "--out", str(out_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["frames"] == 3 and "note" not in err
    assert "Sampler: LCM" in read_infotext(out_path)
    code = main(["generate", *FAST, "--steps", "2", "--out", str(tmp_path / "b.gif")])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["frames"] == 3
    assert err.count("\n") == 1 and "--steps 4-8 and --cfg 1-2" in err and "running anyway" in err
    code = main(["generate", *FAST, "--steps", "60", "--out", str(tmp_path / "c.gif")])
    assert code == 2 and "steps" in capsys.readouterr().err and not (tmp_path / "c.gif").exists()


def test_bench_lcm_runs_every_arm_and_prints_the_table(model):
    import numpy as np

    from ccdm_core.assets import MINI_CLASSIFIER
    from ccdm_core.bench_lcm import ARMS, bench_lcm, markdown_table, sharpness

    assert sharpness(np.zeros((2, 8, 8, 3), np.uint8)) == 0.0
    stripes = np.zeros((1, 8, 8, 3), np.uint8)
    stripes[:, :, ::2] = 255
    assert sharpness(stripes) == pytest.approx(255 / 2, rel=1e-3)  # every x step changes by 255, no y step does
    if not MINI_CLASSIFIER.is_file():
        pytest.skip("the shipped subject classifier is not in this checkout")
    result = bench_lcm(model, None, MINI_CLASSIFIER, prompts=1, seeds=(0,), frames=2, arms=ARMS[:2])
    assert list(result["arms"]) == [a.name for a in ARMS[:2]] and result["arms"][ARMS[0].name]["time_ratio"] == 1.0
    table = markdown_table(result)
    assert all(f"| {a.name} | " in table for a in ARMS[:2]) and "1 prompts x 1 seeds, 2 frames" in table
